//! OpenAI-compatible `/v1/embeddings` and `/v1/models`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use bulkhead_embed::Truncation;

use super::common::{inference_headers, labelled, JsonBody};
use super::embed::{embed, EmbedJob, Inputs, Normalize};
use super::encodings::{check_calibration, response};
use super::images;
use crate::api::openai::{EmbeddingInput, EmbeddingsRequest, ListTag, ModelCard, ModelList, ModelTag};
use crate::error::{ApiError, ErrorKind};
use crate::state::AppState;

/// The errors `/v1/embeddings` answers with.
pub const EMBEDDINGS_ERRORS: &[ErrorKind] = &[
    ErrorKind::MalformedJson,
    ErrorKind::WrongKind,
    ErrorKind::UnknownModel,
    ErrorKind::TooLarge,
    ErrorKind::Invalid,
    ErrorKind::Poison,
    ErrorKind::Overloaded,
    ErrorKind::Internal,
    ErrorKind::Unavailable,
];

/// Embeds texts or token ids (OpenAI-compatible). Texts longer than the model's maximum are truncated.
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "OpenAI",
    request_body = EmbeddingsRequest,
    responses((status = 200, description = "One embedding per input", body = crate::api::sparse::EmbeddingsAnswer))
)]
pub async fn embeddings(State(state): State<Arc<AppState>>, JsonBody(req): JsonBody<EmbeddingsRequest>) -> Response {
    let name = req.model.as_ref().map_or_else(|| state.default_model.clone(), |m| m.0.clone());
    match run(&state, req).await {
        Ok(resp) => resp,
        Err(e) => labelled(e, &name),
    }
}

async fn run(state: &AppState, req: EmbeddingsRequest) -> Result<Response, ApiError> {
    if req.sparse {
        return super::sparse::openai(state, req).await;
    }
    let model = state.model_kept(req.model.as_ref().map(|m| m.0.as_str()), req.keep_alive.as_ref()).await?;
    let model = &model;
    let encoding = req.encoding_format.unwrap_or_default();
    let mut job = EmbedJob {
        inputs: Inputs::Texts(vec![]),
        truncate: Some(Truncation::Right),
        prompt: req.prompt,
        prompt_name: req.prompt_name.map(|p| p.0),
        dimensions: req.dimensions.map(|d| d.0),
        normalize: Normalize::AsModel,
    };
    job.inputs = match req.input {
        EmbeddingInput::Text(t) => Inputs::Texts(vec![t]),
        EmbeddingInput::Texts(t) => Inputs::Texts(t.0),
        EmbeddingInput::Tokens(row) => Inputs::Tokens(vec![row.to_ids()]),
        EmbeddingInput::TokenRows(rows) => Inputs::Tokens(rows.0.iter().map(|r| r.to_ids()).collect()),
        // Texts and images: each item to its own tower.
        EmbeddingInput::Items(items) => {
            check_calibration(encoding, req.quantization_ranges.is_some(), items.0.len())?;
            return images::openai_items(model, state, items.0, job, encoding, req.quantization_ranges).await;
        }
        EmbeddingInput::Part(part) => {
            check_calibration(encoding, req.quantization_ranges.is_some(), 1)?;
            return images::openai_items(model, state, vec![part], job, encoding, req.quantization_ranges).await;
        }
    };
    let count = match &job.inputs {
        Inputs::Texts(t) => t.len(),
        Inputs::Tokens(t) => t.len(),
    };
    check_calibration(encoding, req.quantization_ranges.is_some(), count)?;
    let e = embed(model, state, job).await?;
    let body = response(model.name.clone(), e.vectors, e.tokens, encoding, req.quantization_ranges)?;
    Ok(inference_headers(Json(body), model, &e.provenance))
}

/// The served models (OpenAI-compatible).
#[utoipa::path(get, path = "/v1/models", tag = "OpenAI", responses((status = 200, description = "Every served model", body = ModelList)))]
pub async fn models(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    let data = state
        .models
        .list()
        .into_iter()
        .map(|m| {
            let inputs = match (&m.entry, &m.files) {
                (Some(e), _) => images::model_inputs(e),
                (None, Some(f)) if f.is_tensor_model() => vec!["tensor".into()],
                (None, Some(f)) if f.task.takes_images() => vec!["text".into(), "image".into()],
                _ => vec!["text".into()],
            };
            ModelCard {
                id: m.name,
                object: ModelTag::Model,
                created: m.entry.as_ref().map_or(m.stats.loaded_at.unwrap_or(0), |e| e.created),
                owned_by: "bulkhead".into(),
                inputs,
                state: m.state,
                pinned: m.pinned,
                error: m.error,
                resident_bytes: m.stats.resident_bytes,
                load_ms: m.stats.last_load.map(|d| d.as_secs_f64() * 1e3),
                loads: m.stats.loads,
                unloads: m.stats.unloads,
                evictions: m.stats.evictions,
                expires_at: m.expires_at,
            }
        })
        .collect();
    Json(ModelList { object: ListTag::List, data })
}
