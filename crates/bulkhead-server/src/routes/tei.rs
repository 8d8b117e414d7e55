//! text-embeddings-inference compatible `/embed`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use bulkhead_embed::Truncation;

use super::common::{inference_headers, labelled, JsonBody};
use super::embed::{embed, EmbedJob, Inputs, Normalize};
use super::images;
use crate::api::tei::{EmbedRequest, EmbedResponse, TeiInput, TeiItem, TruncationDirection};
use crate::error::{ApiError, ErrorKind};
use crate::state::AppState;

/// The errors `/embed` answers with.
pub const EMBED_ERRORS: &[ErrorKind] = super::openai::EMBEDDINGS_ERRORS;

/// Embeds texts (text-embeddings-inference compatible). A text longer than the model's maximum is refused unless
/// `truncate` is true.
#[utoipa::path(
    post,
    path = "/embed",
    tag = "text-embeddings-inference",
    request_body = EmbedRequest,
    responses((status = 200, description = "One vector per text", body = EmbedResponse))
)]
pub async fn embed_route(State(state): State<Arc<AppState>>, JsonBody(req): JsonBody<EmbedRequest>) -> Response {
    let name = req.model.as_ref().map_or_else(|| state.default_model.clone(), |m| m.0.clone());
    match run(&state, req).await {
        Ok(r) => r,
        Err(e) => labelled(e, &name),
    }
}

async fn run(state: &AppState, req: EmbedRequest) -> Result<Response, ApiError> {
    let model = state.model_kept(req.model.as_ref().map(|m| m.0.as_str()), req.keep_alive.as_ref()).await?;
    let model = &model;
    let (texts, items) = match req.inputs {
        TeiInput::Text(t) => (vec![t], None),
        TeiInput::Texts(t) => (t.0, None),
        TeiInput::Image(image) => (vec![], Some(vec![TeiItem::Image(image)])),
        TeiInput::Items(items) => (vec![], Some(items.0)),
    };
    let side = match req.truncation_direction.unwrap_or_default() {
        TruncationDirection::Right => Truncation::Right,
        TruncationDirection::Left => Truncation::Left,
    };
    let job = EmbedJob {
        inputs: Inputs::Texts(texts),
        truncate: req.truncate.unwrap_or(false).then_some(side),
        prompt: req.prompt,
        prompt_name: req.prompt_name.map(|p| p.0),
        dimensions: req.dimensions.map(|d| d.0),
        // Idempotent for models that normalise already; makes the others match text-embeddings-inference.
        normalize: if req.normalize { Normalize::Always } else { Normalize::Never },
    };
    if let Some(items) = items {
        let e = images::embed_items(model, state, images::tei_items(items), job).await?;
        return Ok(images::image_headers(Json(EmbedResponse(e.vectors)), model, &e.provenance, e.timing));
    }
    let e = embed(model, state, job).await?;
    Ok(inference_headers(Json(EmbedResponse(e.vectors)), model, &e.provenance))
}
