//! Models on demand, asked for explicitly: `POST /v1/models/{name}/load` and `/unload` (behind `--api-key` when
//! one is set, as every route but the probes).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::common::labelled;
use crate::api::models::{ModelState, ModelStatus};
use crate::api::ModelName;
use crate::error::ErrorKind;
use crate::state::AppState;

/// The errors `/v1/models/{name}/load` and `/unload` answer with.
pub const LIFECYCLE_ERRORS: &[ErrorKind] = &[ErrorKind::UnknownModel, ErrorKind::Unavailable];

fn status(state: &AppState, name: &str, took: std::time::Duration) -> Response {
    let now = state.models.list().into_iter().find(|m| m.name == name).map_or(ModelState::Available, |m| m.state);
    Json(ModelStatus { id: name.to_string(), state: now, took_ms: took.as_secs_f64() * 1e3 }).into_response()
}

/// Loads a model now (as its first request would: the chain, warm-up and a first request), making room under
/// `--max-loaded-models` and `--memory-budget-mb` by unloading the least recently used models. A loaded model
/// answers at once.
#[utoipa::path(
    post,
    path = "/v1/models/{name}/load",
    tag = "Models",
    params(("name" = ModelName, Path, description = "A model of this server")),
    responses((status = 200, description = "The model is loaded", body = ModelStatus))
)]
pub async fn load(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    match state.models.load(&name).await {
        Ok(took) => status(&state, &name, took),
        Err(e) => labelled(e, &name),
    }
}

/// Unloads a model: its in-flight requests finish, then its workers stop; the next request naming it loads it
/// again. A model not loaded stays as it is.
#[utoipa::path(
    post,
    path = "/v1/models/{name}/unload",
    tag = "Models",
    params(("name" = ModelName, Path, description = "A model of this server")),
    responses((status = 200, description = "The model is unloaded", body = ModelStatus))
)]
pub async fn unload(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    match state.models.unload(&name).await {
        Ok(took) => status(&state, &name, took),
        Err(e) => labelled(e, &name),
    }
}
