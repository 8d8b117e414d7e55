//! The router: routes, the typed JSON body extractor, authentication, the per-request deadline, request metrics,
//! and the two adapters through which every handler reaches a model's compute side ([`submit_embedding`],
//! [`submit_tensors`]).

pub(crate) mod embed;
pub(crate) mod kserve;
pub(crate) mod openai;
pub(crate) mod ops;
pub(crate) mod rerank;
pub(crate) mod score;
pub(crate) mod tei;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use bulkhead_core::{NamedTensor, Unit};
use bulkhead_embed::StageTiming;

use crate::batcher::SubmitError;
use crate::error::ApiError;
use crate::state::{AppState, ModelEntry};

/// The application: every route of the interface, with the body limit, the API key check, the per-request
/// deadline and request metrics.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::models))
        .route("/embed", post(tei::embed_route))
        .route("/rerank", post(rerank::rerank))
        .route("/predict", post(rerank::predict))
        .route("/v1/rerank", post(rerank::cohere_rerank))
        .route("/v2/health/live", get(kserve::live))
        .route("/v2/health/ready", get(kserve::ready))
        .route("/v2/models/{name}", get(kserve::metadata))
        .route("/v2/models/{name}/ready", get(kserve::model_ready))
        .route("/v2/models/{name}/infer", post(kserve::infer))
        .route("/health", get(ops::health))
        .route("/units", get(ops::units))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(ops::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), deadline))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .layer(axum::extract::DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state)
}

/// Routes that answer without the API key: the liveness and readiness probes.
pub(crate) fn is_probe(path: &str) -> bool {
    path == "/health" || path.starts_with("/v2/health/")
}

/// The model a response was for, for the request metrics.
#[derive(Clone)]
struct ModelLabel(String);

async fn record(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "other".into());
    let resp = next.run(req).await;
    let model = resp.extensions().get::<ModelLabel>().map(|m| m.0.clone()).unwrap_or_default();
    let unit = resp.headers().get("x-bulkhead-unit").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    state.metrics.request(&route, &model, &unit, resp.status().as_u16());
    resp
}

/// Answers 504 when a request is not answered within `--request-timeout-s` (its work is abandoned).
async fn deadline(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match state.config.request_timeout {
        None => next.run(req).await,
        Some(limit) => match tokio::time::timeout(limit, next.run(req)).await {
            Ok(resp) => resp,
            Err(_) => ApiError::Timeout(limit).into_response(),
        },
    }
}

async fn authenticate(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(key) = &state.config.api_key else { return next.run(req).await };
    if is_probe(req.uri().path()) {
        return next.run(req).await;
    }
    let given =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    // Compare without an early exit on the first differing byte.
    let ok = given.is_some_and(|g| {
        g.len() == key.len() && g.bytes().zip(key.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    if ok {
        next.run(req).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

/// A JSON body parsed straight into its type: malformed JSON is 400, JSON of the wrong shape or types 422, a body
/// over `--max-body-bytes` 413.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(state.config.max_body_bytes)
            } else {
                ApiError::MalformedJson(e.body_text())
            }
        })?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| match e.classify() {
            Category::Syntax | Category::Eof => ApiError::MalformedJson(e.to_string()),
            Category::Data | Category::Io => ApiError::Invalid(format!("invalid request: {e}")),
        })
    }
}

/// What a model computed, with the unit that computed it and the stage timing.
pub struct Computed<T> {
    /// The answer.
    pub value: T,
    /// The unit that computed it.
    pub unit: Unit,
    /// queue / infer / post milliseconds.
    pub timing: StageTiming,
}

/// Embeds token rows through the model's batcher. `prompt_tokens` leading tokens of every row are a prompt.
pub async fn submit_embedding(
    model: &ModelEntry,
    state: &AppState,
    rows: Vec<Vec<i64>>,
    texts: Vec<String>,
    prompt_tokens: usize,
) -> Result<Computed<Vec<Vec<f32>>>, ApiError> {
    let out = model.batcher.submit_prompted(rows, texts, prompt_tokens).await.map_err(|e| match e {
        SubmitError::Overloaded => ApiError::Overloaded(model.name.clone()),
        SubmitError::Backend(e) => ApiError::from(e),
    })?;
    record_stages(state, &model.name, &out.timing);
    Ok(Computed { value: out.vectors, unit: out.unit, timing: out.timing })
}

/// Runs a tensor model on named inputs (one supervised request, never batched).
pub async fn submit_tensors(
    model: &ModelEntry,
    state: &AppState,
    inputs: Vec<NamedTensor>,
) -> Result<Computed<Vec<NamedTensor>>, ApiError> {
    let answer = model.backend.infer(inputs).await?;
    record_stages(state, &model.name, &answer.timing);
    let (unit, timing) = (answer.unit, answer.timing);
    let value =
        answer.answer.into_tensors().ok_or_else(|| ApiError::Internal("the model answered no tensors".into()))?;
    Ok(Computed { value, unit, timing })
}

/// Stage-duration metrics of an answered request (the preparation stage is recorded where it happens).
fn record_stages(state: &AppState, model: &str, t: &StageTiming) {
    for (stage, ms) in [("queue", t.queue_ms), ("infer", t.infer_ms), ("post", t.post_ms)] {
        state.metrics.stage_ms(model, stage, ms);
    }
}

/// The weight precision the unit that answered loaded (`fp32`, `fp16`, `int8`), from the model's `/units` view.
fn precision_of(model: &ModelEntry, unit: Unit) -> Option<&'static str> {
    let name = unit.to_string();
    let view = model.backend.units();
    let p = view.units.iter().find(|u| u.unit == name)?.precision?;
    Some(match p {
        bulkhead_core::Precision::Fp32 => "fp32",
        bulkhead_core::Precision::Fp16 => "fp16",
        bulkhead_core::Precision::Bf16 => "bf16",
        bulkhead_core::Precision::Int8 => "int8",
        bulkhead_core::Precision::Unknown => return None,
    })
}

/// Adds `x-bulkhead-unit`, `x-bulkhead-precision` (the weight precision that ran), `Server-Timing` (`tokenize` is
/// the server-side preparation) and the model label to an inference response.
pub fn inference_headers(body: impl IntoResponse, entry: &ModelEntry, unit: Unit, t: &StageTiming) -> Response {
    let model = entry.name.as_str();
    let mut resp = body.into_response();
    let h: &mut HeaderMap = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&unit.to_string()) {
        h.insert("x-bulkhead-unit", v);
    }
    if let Some(p) = precision_of(entry, unit) {
        h.insert("x-bulkhead-precision", HeaderValue::from_static(p));
    }
    let timing = format!(
        "tokenize;dur={:.3}, queue;dur={:.3}, infer;dur={:.3}, post;dur={:.3}",
        t.tokenize_ms, t.queue_ms, t.infer_ms, t.post_ms
    );
    if let Ok(v) = HeaderValue::from_str(&timing) {
        h.insert("server-timing", v);
    }
    resp.extensions_mut().insert(ModelLabel(model.to_string()));
    resp
}

/// An error response with the model label (for metrics).
pub fn labelled(err: ApiError, model: &str) -> Response {
    let mut resp = err.into_response();
    resp.extensions_mut().insert(ModelLabel(model.to_string()));
    resp
}
