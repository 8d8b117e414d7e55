//! KServe v2 / Open Inference Protocol: health, model metadata, model readiness and JSON-tensor inference.
//!
//! A served embedding model takes either a BYTES tensor of texts (`[n]`) or an INT64 `input_ids` tensor
//! (`[n, seq]`, with an optional `attention_mask` of the same shape to mark padding) and returns an FP32
//! `embedding` tensor `[n, dimensions]`.
//!
//! Any other ONNX model (served as an `.onnx` file without a tokenizer beside it) takes its own graph inputs and
//! returns its graph outputs, with the names, datatypes and shapes its metadata lists (`-1`: any size). Requests
//! are checked against them before they reach a worker; the optional `outputs` list selects outputs by name.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use std::time::Instant;

use bulkhead_core::{DataType, NamedTensor, TensorData, TensorSpec};

use super::{
    backend_error, embed, inference_headers, labelled, record_stages, with_inference_headers, Inputs, JsonBody,
};
use crate::error::ApiError;
use crate::state::{AppState, ModelEntry, ModelKind};

pub async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let ready = !state.models.is_empty() && state.models.values().all(|m| m.backend.ready());
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "ready": ready }))).into_response()
}

fn spec_json(s: &TensorSpec) -> Value {
    json!({ "name": s.name, "datatype": s.datatype.map_or("UNSUPPORTED", DataType::kserve_name), "shape": s.shape })
}

pub async fn metadata(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    let m = match state.model(Some(&name)) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let (inputs, outputs) = match &m.kind {
        ModelKind::Embedding { dimensions, .. } => (
            json!([
                { "name": "text", "datatype": "BYTES", "shape": [-1] },
                { "name": "input_ids", "datatype": "INT64", "shape": [-1, -1] },
                { "name": "attention_mask", "datatype": "INT64", "shape": [-1, -1] }
            ]),
            json!([ { "name": "embedding", "datatype": "FP32", "shape": [-1, dimensions] } ]),
        ),
        ModelKind::Tensor { inputs, outputs } => (
            Value::Array(inputs.iter().map(spec_json).collect()),
            Value::Array(outputs.iter().map(spec_json).collect()),
        ),
    };
    Json(json!({
        "name": m.name,
        "versions": ["1"],
        "platform": if matches!(m.kind, ModelKind::Tensor { .. }) { "onnxruntime_onnx" } else { "bulkhead" },
        "inputs": inputs,
        "outputs": outputs
    }))
    .into_response()
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
    outputs: Option<Vec<RequestedOutput>>,
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

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
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
        if let ModelKind::Tensor { inputs, outputs } = &model.kind {
            return infer_tensors(model, &state, inputs, outputs, req).await;
        }
        let (_, dimensions) = model.embedding()?;
        let inputs = parse_inputs(&req)?;
        let e = embed(model, &state, inputs, true).await?;
        let n = e.output.vectors.len();
        let data: Vec<f32> = e.output.vectors.iter().flatten().copied().collect();
        let mut body = json!({
            "model_name": model.name,
            "model_version": "1",
            "outputs": [ { "name": "embedding", "datatype": "FP32", "shape": [n, dimensions], "data": data } ]
        });
        if let Some(id) = &req.id {
            body["id"] = json!(id);
        }
        Ok::<_, ApiError>(with_inference_headers(Json(body), &model.name, &e))
    }
    .await;
    result.unwrap_or_else(|e| labelled(e, &name))
}

/// A JSON tensor of a tensor model's request, checked against the graph input it names.
fn tensor_input(t: &InferTensor, spec: &TensorSpec) -> Result<NamedTensor, ApiError> {
    let invalid = |m: String| ApiError::Invalid(format!("input `{}`: {m}", t.name));
    let want = spec.datatype.ok_or_else(|| invalid(format!("the model's type {} is not supported", spec.type_name)))?;
    if t.datatype != want.kserve_name() {
        return Err(invalid(format!(
            "datatype must be {} (the model's {}), not {}",
            want.kserve_name(),
            spec.type_name,
            t.datatype
        )));
    }
    if let Some(d) = t.shape.iter().find(|&&d| d < 0) {
        return Err(invalid(format!("shape {:?} has a negative dimension {d}", t.shape)));
    }
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let mut flat = vec![];
    flatten(&t.data, &mut flat);
    let expected = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| invalid(format!("shape {:?} is too large", t.shape)))?;
    if flat.len() != expected {
        return Err(invalid(format!("shape {:?} needs {expected} values, got {}", t.shape, flat.len())));
    }
    let bad = |i: usize| invalid(format!("value {i} ({}) is not a valid {}", flat[i], want.kserve_name()));
    fn ints<T: TryFrom<i64>>(flat: &[Value], bad: impl Fn(usize) -> ApiError) -> Result<Vec<T>, ApiError> {
        flat.iter()
            .enumerate()
            .map(|(i, v)| v.as_i64().and_then(|x| T::try_from(x).ok()).ok_or_else(|| bad(i)))
            .collect()
    }
    let floats =
        || flat.iter().enumerate().map(|(i, v)| v.as_f64().ok_or_else(|| bad(i))).collect::<Result<Vec<_>, _>>();
    let data = match want {
        DataType::Fp32 => TensorData::F32(floats()?.into_iter().map(|x| x as f32).collect()),
        DataType::Fp64 => TensorData::F64(floats()?),
        DataType::Int64 => TensorData::I64(ints(&flat, bad)?),
        DataType::Int32 => TensorData::I32(ints(&flat, bad)?),
        DataType::Int8 => TensorData::I8(ints(&flat, bad)?),
        DataType::Uint8 => TensorData::U8(ints(&flat, bad)?),
        DataType::Bool => TensorData::Bool(
            flat.iter().enumerate().map(|(i, v)| v.as_bool().ok_or_else(|| bad(i))).collect::<Result<_, _>>()?,
        ),
    };
    let tensor = NamedTensor::new(t.name.clone(), shape, data).map_err(ApiError::Invalid)?;
    spec.check(&tensor).map_err(ApiError::Invalid)?;
    Ok(tensor)
}

fn output_json(t: &NamedTensor) -> Value {
    let data = match &t.data {
        TensorData::F32(v) => json!(v),
        TensorData::F64(v) => json!(v),
        TensorData::I64(v) => json!(v),
        TensorData::I32(v) => json!(v),
        TensorData::I8(v) => json!(v),
        TensorData::U8(v) => json!(v),
        TensorData::Bool(v) => json!(v),
    };
    json!({ "name": t.name, "datatype": t.data.datatype().kserve_name(), "shape": t.shape, "data": data })
}

/// Inference on a tensor model: every graph input checked here (a clear 422 instead of an engine error), one
/// supervised request, the outputs asked for (all by default).
async fn infer_tensors(
    model: &ModelEntry,
    state: &AppState,
    specs: &[TensorSpec],
    outputs: &[TensorSpec],
    req: InferRequest,
) -> Result<Response, ApiError> {
    let t0 = Instant::now();
    let names = |v: &[TensorSpec]| v.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
    if let Some(extra) = req.inputs.iter().find(|t| !specs.iter().any(|s| s.name == t.name)) {
        return Err(ApiError::Invalid(format!(
            "model `{}` has no input `{}`; its inputs: {}",
            model.name,
            extra.name,
            names(specs)
        )));
    }
    let mut inputs = Vec::with_capacity(specs.len());
    for spec in specs {
        let mut given = req.inputs.iter().filter(|t| t.name == spec.name);
        let t = given.next().ok_or_else(|| {
            ApiError::Invalid(format!(
                "missing input `{}` ({} {:?}); model `{}` needs: {}",
                spec.name,
                spec.datatype.map_or("?", DataType::kserve_name),
                spec.shape,
                model.name,
                names(specs)
            ))
        })?;
        if given.next().is_some() {
            return Err(ApiError::Invalid(format!("input `{}` is given twice", spec.name)));
        }
        inputs.push(tensor_input(t, spec)?);
    }
    let wanted: Option<Vec<String>> = req.outputs.as_ref().map(|o| o.iter().map(|o| o.name.clone()).collect());
    if let Some(w) = &wanted {
        if let Some(bad) = w.iter().find(|n| !outputs.iter().any(|s| &s.name == *n)) {
            return Err(ApiError::Invalid(format!(
                "model `{}` has no output `{bad}`; its outputs: {}",
                model.name,
                names(outputs)
            )));
        }
    }
    let prepare_ms = t0.elapsed().as_secs_f64() * 1e3;
    state.metrics.stage_ms(&model.name, "tokenize", prepare_ms);
    let answer = model.backend.infer(inputs).await.map_err(backend_error)?;
    record_stages(state, &model.name, &answer.timing);
    let (unit, timing) = (answer.unit, answer.timing);
    let outputs =
        answer.answer.into_tensors().ok_or_else(|| ApiError::Internal("the model answered no tensors".into()))?;
    let outs: Vec<Value> =
        outputs.iter().filter(|t| wanted.as_ref().is_none_or(|w| w.contains(&t.name))).map(output_json).collect();
    let mut body = json!({ "model_name": model.name, "model_version": "1", "outputs": outs });
    if let Some(id) = &req.id {
        body["id"] = json!(id);
    }
    Ok(inference_headers(Json(body), &model.name, unit, prepare_ms, &timing))
}
