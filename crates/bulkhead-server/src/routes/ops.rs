//! Operations routes: `/health`, `/units`, `/metrics`, `/openapi.json`, and the JSON 404.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::common::OpenApiDocument;
use crate::api::ops::{Health, HealthStatus, ModelLifecycle, Units};
use crate::error::ApiError;
use crate::state::AppState;

/// 200 only when every model has a unit that answered a real forward pass recently (or can answer now); 503
/// otherwise. The HTTP process being up is not enough.
#[utoipa::path(
    get,
    path = "/health",
    tag = "Operations",
    security(()),
    responses(
        (status = 200, description = "Every model has a unit that answered a real forward pass recently", body = Health),
        (status = 503, description = "A model has no unit that answers", body = Health)
    )
)]
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    let window = state.config.health_window;
    let models: std::collections::BTreeMap<String, bool> =
        state.models.loaded().iter().map(|m| (m.name.clone(), m.backend.healthy(window))).collect();
    // Models not loaded (on demand) count as healthy: they load when asked for.
    let ok = !state.models.is_empty() && models.values().all(|&v| v);
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = Health { status: if ok { HealthStatus::Ok } else { HealthStatus::Unhealthy }, models };
    (status, Json(body)).into_response()
}

/// Per model: the chain and each unit's state, crashes, last exit, stderr tail, predictions, memory, recycles.
#[utoipa::path(get, path = "/units", tag = "Operations", responses((status = 200, description = "The supervisor's view of every model", body = Units)))]
pub async fn units(State(state): State<Arc<AppState>>) -> Json<Units> {
    let models = state.models.loaded().iter().map(|m| (m.name.clone(), m.backend.units())).collect();
    let lifecycle = state
        .models
        .list()
        .into_iter()
        .map(|m| {
            let view = ModelLifecycle {
                state: m.state,
                pinned: m.pinned,
                loads: m.stats.loads,
                load_failures: m.stats.load_failures,
                unloads: m.stats.unloads,
                evictions: m.stats.evictions,
                load_ms: m.stats.last_load.map(|d| d.as_secs_f64() * 1e3),
                resident_bytes: m.stats.resident_bytes,
                error: m.error,
            };
            (m.name, view)
        })
        .collect();
    Json(Units { models, lifecycle })
}

/// Prometheus metrics (text format).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "Operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let loaded = state.models.loaded();
    let units: Vec<_> = loaded.iter().map(|m| m.backend.units()).collect();
    for m in &loaded {
        state.metrics.queue_depth(&m.name, m.batcher.depth());
    }
    let mut body = state.metrics.render(&units);
    body.push_str(&crate::registry::render_metrics(&state.models.list()));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "Operations",
    responses((status = 200, description = "The OpenAPI 3.1 description of this server", body = Object))
)]
pub async fn openapi(Extension(document): Extension<OpenApiDocument>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document.0).into_response()
}

/// Any other path: a JSON 404.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    ApiError::NoRoute(uri.path().to_string()).into_response()
}
