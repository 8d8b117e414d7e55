//! OpenAI-compatible `/v1/embeddings` and `/v1/models`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{embed, labelled, with_inference_headers, Inputs, JsonBody};
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    input: Value,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

/// `input`: a string, an array of strings, an array of token ids, or an array of token-id arrays.
fn parse_input(v: &Value) -> Result<Inputs, ApiError> {
    let bad = || {
        ApiError::Invalid(
            "`input` must be a string, an array of strings, an array of token ids or an array of token-id arrays"
                .into(),
        )
    };
    let as_ids = |a: &Vec<Value>| a.iter().map(|t| t.as_i64().ok_or_else(bad)).collect::<Result<Vec<i64>, _>>();
    match v {
        Value::String(s) => Ok(Inputs::Texts(vec![s.clone()])),
        Value::Array(items) if items.is_empty() => Err(ApiError::Invalid("`input` is an empty array".into())),
        Value::Array(items) => match &items[0] {
            Value::String(_) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string).ok_or_else(bad))
                .collect::<Result<_, _>>()
                .map(Inputs::Texts),
            Value::Number(_) => Ok(Inputs::Tokens(vec![as_ids(items)?])),
            Value::Array(_) => items
                .iter()
                .map(|i| i.as_array().ok_or_else(bad).and_then(as_ids))
                .collect::<Result<_, _>>()
                .map(Inputs::Tokens),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

pub async fn embeddings(State(state): State<Arc<AppState>>, JsonBody(req): JsonBody<EmbeddingsRequest>) -> Response {
    let name = req.model.clone().unwrap_or_else(|| state.default_model.clone());
    match run(&state, req).await {
        Ok(resp) => resp,
        Err(e) => labelled(e, &name),
    }
}

async fn run(state: &AppState, req: EmbeddingsRequest) -> Result<Response, ApiError> {
    let model = state.model(req.model.as_deref())?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::Invalid(format!("`encoding_format` must be \"float\" or \"base64\", not {other:?}")))
        }
    };
    let (_, dimensions) = model.embedding()?;
    if let Some(d) = req.dimensions {
        if d != dimensions {
            return Err(ApiError::Invalid(format!(
                "model `{}` produces {} dimensions; `dimensions` = {d} is not supported",
                model.name, dimensions
            )));
        }
    }
    let inputs = parse_input(&req.input)?;
    let e = embed(model, state, inputs, true).await?;
    let data: Vec<Value> = e
        .output
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": model.name,
        "usage": { "prompt_tokens": e.tokens, "total_tokens": e.tokens },
    });
    Ok(with_inference_headers(Json(body), &model.name, &e))
}

pub async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    let data: Vec<Value> = state
        .models
        .values()
        .map(|m| json!({ "id": m.name, "object": "model", "created": m.created, "owned_by": "bulkhead" }))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}
