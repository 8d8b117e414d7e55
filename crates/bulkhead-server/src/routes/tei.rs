//! text-embeddings-inference compatible `/embed`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::{labelled, with_inference_headers, Inputs, JsonBody};
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    inputs: Value,
    #[serde(default = "yes")]
    normalize: bool,
    #[serde(default)]
    truncate: bool,
    #[serde(default)]
    #[allow(dead_code)]
    truncation_direction: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    prompt_name: Option<String>,
}

fn yes() -> bool {
    true
}

pub async fn embed_route(state: &AppState, req: EmbedRequest) -> Result<Response, ApiError> {
    let model = state.model(None)?;
    let texts = match &req.inputs {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::Invalid("`inputs` must be a string or an array of strings".into()))?,
        _ => return Err(ApiError::Invalid("`inputs` must be a string or an array of strings".into())),
    };
    let mut e = super::embed(model, state, Inputs::Texts(texts), req.truncate).await?;
    if req.normalize {
        // Idempotent for models that normalise already; makes the others match TEI's default.
        e.output.vectors.iter_mut().for_each(|v| bulkhead_embed::l2_normalize(v));
    }
    let body = Json(std::mem::take(&mut e.output.vectors));
    Ok(with_inference_headers(body, &model.name, &e))
}

pub async fn embed(State(state): State<Arc<AppState>>, JsonBody(req): JsonBody<EmbedRequest>) -> Response {
    let name = state.default_model.clone();
    match embed_route(&state, req).await {
        Ok(r) => r,
        Err(e) => labelled(e, &name),
    }
}
