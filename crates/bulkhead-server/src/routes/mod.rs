//! The router: routes, the JSON body extractor, authentication, per-request metrics, and the inference path shared
//! by the OpenAI, TEI and KServe handlers.

mod kserve;
mod openai;
mod ops;
mod tei;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;

use bulkhead_core::Unit;
use bulkhead_embed::StageTiming;

use crate::batcher::{JobOutput, SubmitError};
use crate::error::ApiError;
use crate::state::{AppState, ModelEntry};
use crate::BackendError;

/// The application: every route of the interface, with the body limit, the API key check and request metrics.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::models))
        .route("/embed", post(tei::embed))
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
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .layer(axum::extract::DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state)
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

async fn authenticate(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(key) = &state.config.api_key else { return next.run(req).await };
    let path = req.uri().path();
    if path == "/health" || path.starts_with("/v2/health/") {
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

/// A JSON body: malformed JSON is 400, JSON of the wrong shape is 422, too large is 413.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(state.config.max_body_bytes)
            } else {
                ApiError::MalformedJson(e.body_text())
            }
        })?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        serde_json::from_value(value).map(JsonBody).map_err(|e| ApiError::Invalid(format!("invalid request: {e}")))
    }
}

/// What a handler asks to embed.
pub enum Inputs {
    /// Texts, tokenized here.
    Texts(Vec<String>),
    /// Token ids given by the client.
    Tokens(Vec<Vec<i64>>),
}

/// An answer with its timing, ready for the response headers.
pub struct Embedded {
    pub output: JobOutput,
    pub tokenize_ms: f64,
    pub tokens: usize,
}

/// Tokenizes (or checks token ids), queues, waits. `truncate = false` makes an over-long text a 422.
pub async fn embed(model: &ModelEntry, state: &AppState, inputs: Inputs, truncate: bool) -> Result<Embedded, ApiError> {
    let (tokenizer, _) = model.embedding()?;
    let t0 = Instant::now();
    let max = tokenizer.max_len();
    let (rows, texts) = match inputs {
        Inputs::Texts(texts) => {
            check_count(texts.len(), state)?;
            let encoded = tokenizer.encode_checked(&texts).map_err(|e| ApiError::Invalid(e.to_string()))?;
            if !truncate {
                if let Some(i) = encoded.iter().position(|(_, truncated)| *truncated) {
                    return Err(ApiError::Invalid(format!(
                        "input {i} is longer than the model's maximum of {max} tokens; shorten it or set \"truncate\": true"
                    )));
                }
            }
            (encoded.into_iter().map(|(ids, _)| ids).collect::<Vec<_>>(), texts)
        }
        Inputs::Tokens(rows) => {
            check_count(rows.len(), state)?;
            let vocab = tokenizer.vocab_size() as i64;
            for (i, row) in rows.iter().enumerate() {
                if row.is_empty() {
                    return Err(ApiError::Invalid(format!("input {i} is an empty token array")));
                }
                if row.len() > max {
                    return Err(ApiError::Invalid(format!(
                        "input {i} has {} tokens; the model's maximum is {max}",
                        row.len()
                    )));
                }
                if let Some(bad) = row.iter().find(|&&t| t < 0 || t >= vocab) {
                    return Err(ApiError::Invalid(format!(
                        "input {i} holds token id {bad}, outside the model's vocabulary of {vocab}"
                    )));
                }
            }
            (rows, vec![])
        }
    };
    let tokens = rows.iter().map(Vec::len).sum();
    let tokenize_ms = t0.elapsed().as_secs_f64() * 1e3;
    state.metrics.stage_ms(&model.name, "tokenize", tokenize_ms);
    let output = model.batcher.submit(rows, texts).await.map_err(|e| match e {
        SubmitError::Overloaded => ApiError::Overloaded(model.name.clone()),
        SubmitError::Backend(e) => backend_error(e),
    })?;
    record_stages(state, &model.name, &output.timing);
    Ok(Embedded { output, tokenize_ms, tokens })
}

/// The API error of a request the backend did not answer.
pub fn backend_error(e: BackendError) -> ApiError {
    match e {
        BackendError::Poison(m) => ApiError::Poison(m),
        BackendError::Unavailable(m) => ApiError::Unavailable(m),
        e @ BackendError::ShuttingDown => ApiError::Unavailable(e.to_string()),
        BackendError::Failed(m) => ApiError::Internal(m),
        BackendError::Unsupported(m) => ApiError::WrongKind(m),
    }
}

/// Stage-duration metrics of an answered request (tokenization is recorded where it happens).
pub fn record_stages(state: &AppState, model: &str, t: &StageTiming) {
    for (stage, ms) in [("queue", t.queue_ms), ("infer", t.infer_ms), ("post", t.post_ms)] {
        state.metrics.stage_ms(model, stage, ms);
    }
}

fn check_count(n: usize, state: &AppState) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::Invalid("the input is empty; send at least one text".into()));
    }
    if n > state.config.max_inputs {
        return Err(ApiError::Invalid(format!(
            "{n} inputs in one request; the limit is {} (--max-inputs)",
            state.config.max_inputs
        )));
    }
    Ok(())
}

/// Adds `x-bulkhead-unit`, `Server-Timing` and the model label to an inference response.
pub fn with_inference_headers(body: impl IntoResponse, model: &str, e: &Embedded) -> Response {
    inference_headers(body, model, e.output.unit, e.tokenize_ms, &e.output.timing)
}

/// [`with_inference_headers`] from the parts: the unit that answered, the server-side preparation time (the
/// `tokenize` stage) and the backend's stage timing.
pub fn inference_headers(
    body: impl IntoResponse,
    model: &str,
    unit: Unit,
    prepare_ms: f64,
    t: &StageTiming,
) -> Response {
    let mut resp = body.into_response();
    let h: &mut HeaderMap = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&unit.to_string()) {
        h.insert("x-bulkhead-unit", v);
    }
    let timing = format!(
        "tokenize;dur={:.3}, queue;dur={:.3}, infer;dur={:.3}, post;dur={:.3}",
        prepare_ms, t.queue_ms, t.infer_ms, t.post_ms
    );
    if let Ok(v) = HeaderValue::from_str(&timing) {
        h.insert("server-timing", v);
    }
    resp.extensions_mut().insert(ModelLabel(model.to_string()));
    resp
}

/// Wraps an error response with the model label (for metrics).
pub fn labelled(err: ApiError, model: &str) -> Response {
    let mut resp = err.into_response();
    resp.extensions_mut().insert(ModelLabel(model.to_string()));
    resp
}
