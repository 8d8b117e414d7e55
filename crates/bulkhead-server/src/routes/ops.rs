//! Operations routes: `/health`, `/units`, `/metrics`, `/openapi.json`, and the JSON 404.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// 200 only when every model has a unit that answered a real forward pass recently (or can answer now); 503
/// otherwise. The HTTP process being up is not enough.
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    let models: serde_json::Map<String, Value> =
        state.models.values().map(|m| (m.name.clone(), json!(m.backend.healthy(state.config.health_window)))).collect();
    let ok = !models.is_empty() && models.values().all(|v| v == &json!(true));
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "status": if ok { "ok" } else { "unhealthy" }, "models": models }))).into_response()
}

pub async fn units(State(state): State<Arc<AppState>>) -> Json<Value> {
    let models: serde_json::Map<String, Value> =
        state.models.values().map(|m| (m.name.clone(), m.backend.units())).collect();
    Json(json!({ "models": models }))
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let units: Vec<(String, Value)> = state.models.values().map(|m| (m.name.clone(), m.backend.units())).collect();
    for m in state.models.values() {
        state.metrics.queue_depth(&m.name, m.batcher.depth());
    }
    let body = state.metrics.render(&units);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

pub async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

pub async fn not_found(uri: axum::http::Uri) -> Response {
    let mut resp =
        ApiError::Invalid(format!("no route {}; GET /openapi.json lists the routes", uri.path())).into_response();
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp
}
