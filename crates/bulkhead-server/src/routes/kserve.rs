//! KServe v2 / Open Inference Protocol: health, model metadata, model readiness and JSON-tensor inference.
//!
//! A served embedding model takes either a BYTES tensor of texts (`[n]`) or an INT64 `input_ids` tensor
//! (`[n, seq]`, with an optional `attention_mask` of the same shape to mark padding) and returns an FP32
//! `embedding` tensor `[n, dimensions]`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{embed, labelled, with_inference_headers, Inputs, JsonBody};
use crate::error::ApiError;
use crate::state::AppState;

pub async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let ready = !state.models.is_empty() && state.models.values().all(|m| m.backend.ready());
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "ready": ready }))).into_response()
}

pub async fn metadata(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    match state.model(Some(&name)) {
        Ok(m) => Json(json!({
            "name": m.name,
            "versions": ["1"],
            "platform": "bulkhead",
            "inputs": [
                { "name": "text", "datatype": "BYTES", "shape": [-1] },
                { "name": "input_ids", "datatype": "INT64", "shape": [-1, -1] },
                { "name": "attention_mask", "datatype": "INT64", "shape": [-1, -1] }
            ],
            "outputs": [ { "name": "embedding", "datatype": "FP32", "shape": [-1, m.dimensions] } ]
        }))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn model_ready(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    match state.model(Some(&name)) {
        Ok(m) => {
            let ready = m.backend.ready();
            let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            (status, Json(json!({ "name": m.name, "ready": ready }))).into_response()
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
pub struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InferTensor>,
    #[serde(default)]
    #[allow(dead_code)]
    outputs: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<Value>,
}

#[derive(Deserialize)]
struct InferTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Value,
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<Value>,
}

/// Flattens nested JSON arrays (the protocol allows both flat and nested `data`).
fn flatten(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other.clone()),
    }
}

fn int_tensor(t: &InferTensor) -> Result<(usize, usize, Vec<i64>), ApiError> {
    if t.shape.len() != 2 || t.shape.iter().any(|&d| d <= 0) {
        return Err(ApiError::Invalid(format!("tensor `{}` must have shape [n, seq], got {:?}", t.name, t.shape)));
    }
    let mut flat = vec![];
    flatten(&t.data, &mut flat);
    let (n, seq) = (t.shape[0] as usize, t.shape[1] as usize);
    if flat.len() != n * seq {
        return Err(ApiError::Invalid(format!(
            "tensor `{}` has shape {:?} ({} elements) but {} data values",
            t.name,
            t.shape,
            n * seq,
            flat.len()
        )));
    }
    let ids = flat
        .iter()
        .map(|x| x.as_i64().ok_or_else(|| ApiError::Invalid(format!("tensor `{}` must hold integers", t.name))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((n, seq, ids))
}

fn parse_inputs(req: &InferRequest) -> Result<Inputs, ApiError> {
    if let Some(t) = req.inputs.iter().find(|t| t.datatype == "BYTES") {
        if t.shape.len() != 1 {
            return Err(ApiError::Invalid(format!("BYTES tensor `{}` must have shape [n], got {:?}", t.name, t.shape)));
        }
        let mut flat = vec![];
        flatten(&t.data, &mut flat);
        if flat.len() as i64 != t.shape[0] {
            return Err(ApiError::Invalid(format!(
                "tensor `{}` has shape {:?} but {} data values",
                t.name,
                t.shape,
                flat.len()
            )));
        }
        let texts = flat
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::Invalid(format!("BYTES tensor `{}` must hold strings", t.name)))?;
        return Ok(Inputs::Texts(texts));
    }
    let ids = req.inputs.iter().find(|t| t.name == "input_ids").ok_or_else(|| {
        ApiError::Invalid("send a BYTES tensor of texts or an INT64 `input_ids` tensor of shape [n, seq]".into())
    })?;
    if !ids.datatype.starts_with("INT") {
        return Err(ApiError::Invalid(format!("`input_ids` must be an integer tensor, not {}", ids.datatype)));
    }
    let (n, seq, flat) = int_tensor(ids)?;
    let mask = match req.inputs.iter().find(|t| t.name == "attention_mask") {
        Some(m) => {
            let (mn, ms, mask) = int_tensor(m)?;
            if (mn, ms) != (n, seq) {
                return Err(ApiError::Invalid("`attention_mask` must have the shape of `input_ids`".into()));
            }
            mask
        }
        None => vec![1; n * seq],
    };
    let rows =
        (0..n).map(|r| (0..seq).filter(|&c| mask[r * seq + c] != 0).map(|c| flat[r * seq + c]).collect()).collect();
    Ok(Inputs::Tokens(rows))
}

pub async fn infer(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<InferRequest>,
) -> Response {
    let result = async {
        let model = state.model(Some(&name))?;
        let inputs = parse_inputs(&req)?;
        let e = embed(model, &state, inputs, true).await?;
        let n = e.output.vectors.len();
        let data: Vec<f32> = e.output.vectors.iter().flatten().copied().collect();
        let mut body = json!({
            "model_name": model.name,
            "model_version": "1",
            "outputs": [ { "name": "embedding", "datatype": "FP32", "shape": [n, model.dimensions], "data": data } ]
        });
        if let Some(id) = &req.id {
            body["id"] = json!(id);
        }
        Ok::<_, ApiError>(with_inference_headers(Json(body), &model.name, &e))
    }
    .await;
    result.unwrap_or_else(|e| labelled(e, &name))
}
