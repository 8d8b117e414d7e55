//! The router, assembled in one place: every route of the interface, the API key check, the per-request deadline,
//! request metrics, and the OpenAPI document rendered from the same handlers (`/openapi.json`).

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};

use crate::error::ApiError;
use crate::routes::common::{is_probe, ModelLabel, OpenApiDocument};
use crate::routes::{audio, images, info, kserve, models, ollama, openai, ops, rerank, segment, sparse, tei, tokens};
use crate::state::AppState;
use crate::trace::{AnswerFacts, RequestRecord, TraceParent};

/// The application: every route of the interface, with the body limit, the API key check, the per-request
/// deadline, request metrics and this server's OpenAPI document (rendered here, once, from the same handlers).
pub fn app(state: Arc<AppState>) -> Router {
    let document = OpenApiDocument(crate::openapi::render(&state));
    let audio_limit = axum::extract::DefaultBodyLimit::max(audio::body_limit(state.config.max_body_bytes));
    Router::new()
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{name}/load", post(models::load))
        .route("/v1/models/{name}/unload", post(models::unload))
        .route("/embeddings_image", post(images::embeddings_image))
        .route("/embed", post(tei::embed_route))
        .route("/embed_sparse", post(sparse::embed_sparse))
        .route("/rerank", post(rerank::rerank))
        .route("/predict", post(rerank::predict))
        .route("/v1/rerank", post(rerank::cohere_rerank))
        .route("/tokenize", post(tokens::tokenize))
        .route("/decode", post(tokens::decode))
        .route("/info", get(info::info))
        .route("/similarity", post(info::similarity))
        .route("/api/embed", post(ollama::embed_route))
        .route("/api/embeddings", post(ollama::embeddings))
        .route("/api/tags", get(ollama::tags))
        .route("/api/show", post(ollama::show))
        .route("/api/ps", get(ollama::ps))
        .route("/api/version", get(ollama::version))
        .route("/v1/segment", post(segment::segment))
        .route("/v1/audio/transcriptions", post(audio::transcriptions).layer(audio_limit))
        .route("/v1/audio/translations", post(audio::translations).layer(audio_limit))
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
        .layer(middleware::from_fn_with_state(state.clone(), trace))
        .layer(axum::extract::DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(Extension(document))
        .with_state(state)
}

async fn record(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "other".into());
    let resp = next.run(req).await;
    let model = resp.extensions().get::<ModelLabel>().map(|m| m.0.clone()).unwrap_or_default();
    let unit = resp.headers().get("x-bulkhead-unit").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    state.metrics.request(&route, &model, &unit, resp.status().as_u16());
    resp
}

/// Records the request's spans when traces are on (`--otlp-endpoint`): the server span, joined to the client's
/// trace when it sent a `traceparent`, and the stages of an inference response.
async fn trace(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(tracer) = &state.tracer else { return next.run(req).await };
    let parent = req.headers().get("traceparent").and_then(|v| v.to_str().ok()).and_then(TraceParent::parse);
    let route =
        req.extensions().get::<MatchedPath>().map_or_else(|| req.uri().path().to_string(), |p| p.as_str().into());
    let method = req.method().to_string();
    let started = (std::time::SystemTime::now(), std::time::Instant::now());
    let resp = next.run(req).await;
    let record = RequestRecord {
        parent,
        method,
        route,
        status: resp.status().as_u16(),
        model: resp.extensions().get::<ModelLabel>().map(|m| m.0.clone()).unwrap_or_default(),
        started,
        ended: std::time::Instant::now(),
        facts: resp.extensions().get::<AnswerFacts>().copied(),
    };
    tracer.record(&record);
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
