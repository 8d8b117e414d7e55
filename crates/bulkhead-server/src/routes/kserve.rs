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
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulkhead_core::{DataType, NamedTensor, TensorData, TensorSpec};
use bulkhead_embed::Truncation;
use serde_json::Value;

use super::common::{inference_headers, labelled, submit_tensors, JsonBody};
use super::embed::{embed, EmbedJob, Inputs, Normalize};
use super::score::{score, ScoreJob};
use crate::api::kserve::{
    Datatype, InferInput, InferRequest, InferResponse, Live, ModelMetadata, ModelReady, OutputTensor, Ready,
    TensorMetadata, TensorValues,
};
use crate::api::ModelName;
use crate::error::{ApiError, ErrorKind};
use crate::state::{AppState, ModelEntry, ModelKind};

/// The errors `/v2/models/{name}/infer` answers with.
pub const INFER_ERRORS: &[ErrorKind] = &[
    ErrorKind::MalformedJson,
    ErrorKind::UnknownModel,
    ErrorKind::TooLarge,
    ErrorKind::Invalid,
    ErrorKind::Poison,
    ErrorKind::Overloaded,
    ErrorKind::Internal,
    ErrorKind::Unavailable,
];

/// The errors of the model metadata and readiness routes.
pub const MODEL_ERRORS: &[ErrorKind] = &[ErrorKind::UnknownModel, ErrorKind::Unavailable];

/// The errors `GET /v2/models/{name}/ready` answers with (not ready is its own 503, never a load).
pub const READY_ERRORS: &[ErrorKind] = &[ErrorKind::UnknownModel];

/// Liveness: the process answers.
#[utoipa::path(get, path = "/v2/health/live", tag = "KServe v2", security(()), responses((status = 200, description = "The server process answers", body = Live)))]
pub async fn live() -> Json<Live> {
    Json(Live { live: true })
}

/// Readiness: every model has a warmed-up serving unit.
#[utoipa::path(
    get,
    path = "/v2/health/ready",
    tag = "KServe v2",
    security(()),
    responses(
        (status = 200, description = "Every model has a warmed-up serving unit", body = Ready),
        (status = 503, description = "A model has no serving unit yet", body = Ready)
    )
)]
pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    // Models loaded on demand are ready to be loaded; the loaded ones must have a serving unit.
    let ready = !state.models.is_empty() && state.models.loaded().iter().all(|m| m.backend.ready());
    (if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(Ready { ready })).into_response()
}

fn spec_metadata(s: &TensorSpec) -> TensorMetadata {
    TensorMetadata {
        name: s.name.clone(),
        datatype: s.datatype.map_or("UNSUPPORTED", DataType::kserve_name).to_string(),
        shape: s.shape.clone(),
    }
}

/// A model's inputs and outputs.
#[utoipa::path(
    get,
    path = "/v2/models/{name}",
    tag = "KServe v2",
    params(("name" = ModelName, Path, description = "A served model")),
    responses((status = 200, description = "The model's inputs and outputs", body = ModelMetadata))
)]
pub async fn metadata(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    let m = match state.model(Some(&name)).await {
        Ok(m) => m,
        Err(e) => return labelled(e, &name),
    };
    let meta = |n: &str, d: &str, shape: Vec<i64>| TensorMetadata { name: n.into(), datatype: d.into(), shape };
    let (platform, inputs, outputs) = match &m.kind {
        ModelKind::Embedding { dimensions, .. } | ModelKind::ImageText { dimensions, .. } => (
            "bulkhead",
            vec![
                meta("text", "BYTES", vec![-1]),
                meta("input_ids", "INT64", vec![-1, -1]),
                meta("attention_mask", "INT64", vec![-1, -1]),
            ],
            vec![meta("embedding", "FP32", vec![-1, *dimensions as i64])],
        ),
        ModelKind::CrossEncoder { task, .. } => (
            "bulkhead",
            vec![meta("text", "BYTES", vec![-1]), meta("text_pair", "BYTES", vec![-1])],
            vec![meta("scores", "FP32", vec![-1, task.outputs() as i64])],
        ),
        // Audio goes through POST /v1/audio/transcriptions, not KServe infer: no tensors to describe.
        ModelKind::Speech(_) => ("bulkhead", vec![], vec![]),
        ModelKind::Tensor { inputs, outputs } => (
            "onnxruntime_onnx",
            inputs.iter().map(spec_metadata).collect(),
            outputs.iter().map(spec_metadata).collect(),
        ),
        // Served by POST /v1/segment; infer refuses it, naming that route.
        ModelKind::Segmentation(_) => ("bulkhead", vec![meta("image", "BYTES", vec![1])], vec![]),
    };
    let body =
        ModelMetadata { name: m.name.clone(), versions: vec!["1".into()], platform: platform.into(), inputs, outputs };
    Json(body).into_response()
}

/// Whether a model has a warmed-up serving unit.
#[utoipa::path(
    get,
    path = "/v2/models/{name}/ready",
    tag = "KServe v2",
    params(("name" = ModelName, Path, description = "A served model")),
    responses(
        (status = 200, description = "The model is ready", body = ModelReady),
        (status = 503, description = "The model has no serving unit now", body = ModelReady)
    )
)]
pub async fn model_ready(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    // A readiness probe never loads a model: one not loaded now is not ready.
    if !state.models.names().contains(&name) {
        let served = state.models.names().iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        return labelled(ApiError::UnknownModel(name.clone(), served), &name);
    }
    let ready = state.models.loaded().iter().any(|m| m.name == name && m.backend.ready());
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(ModelReady { name, ready })).into_response()
}

/// Inference with JSON tensors. Embedding models: a BYTES tensor of texts, or INT64 `input_ids` `[n, seq]` (with an
/// optional `attention_mask`); texts longer than the model's maximum are truncated. Any other ONNX model: its graph
/// inputs by name, as `GET /v2/models/{name}` lists them; it returns its outputs (or those named in `outputs`).
#[utoipa::path(
    post,
    path = "/v2/models/{name}/infer",
    tag = "KServe v2",
    params(("name" = ModelName, Path, description = "A served model")),
    request_body = InferRequest,
    responses((status = 200, description = "The output tensors", body = InferResponse))
)]
pub async fn infer(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<InferRequest>,
) -> Response {
    let result = async {
        let model = state.model(Some(&name)).await?;
        let model = &model;
        match &model.kind {
            ModelKind::Tensor { inputs, outputs } => return infer_tensors(model, &state, inputs, outputs, req).await,
            ModelKind::CrossEncoder { tokenizer, task } => {
                return infer_pairs(model, &state, tokenizer, task, req).await
            }
            // A speech model is refused by `embedding()`, naming its routes.
            ModelKind::Embedding { .. }
            | ModelKind::Segmentation(_)
            | ModelKind::ImageText { .. }
            | ModelKind::Speech(_) => {}
        }
        let (_, dimensions) = model.embedding()?;
        let job = EmbedJob {
            inputs: embedding_inputs(&req)?,
            truncate: Some(Truncation::Right),
            prompt: None,
            prompt_name: None,
            dimensions: None,
            normalize: Normalize::AsModel,
        };
        let e = embed(model, &state, job).await?;
        let n = e.vectors.len();
        let output = OutputTensor {
            name: "embedding".into(),
            datatype: Datatype::Fp32,
            shape: vec![n, dimensions],
            data: TensorValues(TensorData::F32(e.vectors.into_iter().flatten().collect())),
        };
        let body = InferResponse {
            model_name: model.name.clone(),
            model_version: "1".into(),
            id: req.id,
            outputs: vec![output],
        };
        Ok::<_, ApiError>(inference_headers(Json(body), model, &e.provenance))
    }
    .await;
    result.unwrap_or_else(|e| labelled(e, &name))
}

/// Inference on a cross-encoder: a BYTES tensor `text` `[n]` and, for pairs, a BYTES tensor `text_pair` `[n]` (for
/// a reranker: the query repeated and the documents); the output `scores` `[n, labels]` holds the scores the
/// model's routes return by default (truncated at the model's maximum, the longer text first).
async fn infer_pairs(
    model: &ModelEntry,
    state: &AppState,
    tokenizer: &bulkhead_embed::Tokenizer,
    task: &bulkhead_core::ModelTask,
    req: InferRequest,
) -> Result<Response, ApiError> {
    let texts = |name: &str| -> Result<Option<Vec<String>>, ApiError> {
        let Some(t) = req.inputs.iter().find(|t| t.name == name) else { return Ok(None) };
        if t.datatype != Datatype::Bytes || t.shape.len() != 1 {
            return Err(ApiError::Invalid(format!("`{name}` must be a BYTES tensor of shape [n], got {:?}", t.shape)));
        }
        let v = values(t)?.iter().map(|x| x.as_str().map(str::to_string)).collect::<Option<Vec<_>>>();
        v.map(Some).ok_or_else(|| ApiError::Invalid(format!("BYTES tensor `{name}` must hold strings")))
    };
    if let Some(other) = req.inputs.iter().find(|t| t.name != "text" && t.name != "text_pair") {
        return Err(ApiError::Invalid(format!(
            "model `{}` takes the BYTES tensors `text` and `text_pair`, not `{}`",
            model.name, other.name
        )));
    }
    let first = texts("text")?.ok_or_else(|| ApiError::Invalid("missing the BYTES tensor `text`".into()))?;
    let pairs: Vec<(String, Option<String>)> = match texts("text_pair")? {
        Some(second) if second.len() != first.len() => {
            return Err(ApiError::Invalid(format!(
                "`text` has {} values and `text_pair` {}; give one pair per row",
                first.len(),
                second.len()
            )))
        }
        Some(second) => first.into_iter().zip(second.into_iter().map(Some)).collect(),
        None if matches!(task, bulkhead_core::ModelTask::Rerank { .. }) => {
            return Err(ApiError::Invalid(format!(
                "model `{}` is a reranker: send the query in `text` and the documents in `text_pair`",
                model.name
            )))
        }
        None => first.into_iter().map(|t| (t, None)).collect(),
    };
    let job = ScoreJob { pairs, truncate: Some(Truncation::Right), noun: "row" };
    let s = score(model, state, tokenizer, job).await?;
    let (n, labels) = (s.logits.len(), task.outputs());
    let data = s.logits.iter().flat_map(|l| task.scores(l)).collect();
    let output = OutputTensor {
        name: "scores".into(),
        datatype: Datatype::Fp32,
        shape: vec![n, labels],
        data: TensorValues(TensorData::F32(data)),
    };
    let body =
        InferResponse { model_name: model.name.clone(), model_version: "1".into(), id: req.id, outputs: vec![output] };
    Ok(inference_headers(Json(body), model, &s.provenance))
}

/// Flattens nested JSON arrays (the protocol allows both flat and nested `data`).
fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

/// The number of values `shape` holds (`None` when it overflows).
fn element_count(shape: &[u64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
}

/// The values of `t`, checked against its shape.
fn values(t: &InferInput) -> Result<Vec<&Value>, ApiError> {
    let invalid = |m: String| ApiError::Invalid(format!("input `{}`: {m}", t.name));
    let expected = element_count(&t.shape).ok_or_else(|| invalid(format!("shape {:?} is too large", t.shape)))?;
    let mut flat = vec![];
    t.data.iter().for_each(|v| flatten(v, &mut flat));
    if flat.len() != expected {
        return Err(invalid(format!("shape {:?} needs {expected} values, got {}", t.shape, flat.len())));
    }
    Ok(flat)
}

/// An integer value, `7.0` included (JSON numbers do not tell the two apart).
fn whole_i64(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15).map(|f| f as i64))
}

fn int_rows(t: &InferInput) -> Result<(usize, usize, Vec<i64>), ApiError> {
    if t.shape.len() != 2 {
        return Err(ApiError::Invalid(format!("tensor `{}` must have shape [n, seq], got {:?}", t.name, t.shape)));
    }
    let ids = values(t)?
        .iter()
        .map(|x| whole_i64(x).ok_or_else(|| ApiError::Invalid(format!("tensor `{}` must hold integers", t.name))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((t.shape[0] as usize, t.shape[1] as usize, ids))
}

/// The texts or token rows of a request to an embedding model.
fn embedding_inputs(req: &InferRequest) -> Result<Inputs, ApiError> {
    if let Some(t) = req.inputs.iter().find(|t| t.datatype == Datatype::Bytes) {
        if t.shape.len() != 1 {
            return Err(ApiError::Invalid(format!("BYTES tensor `{}` must have shape [n], got {:?}", t.name, t.shape)));
        }
        let texts = values(t)?
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::Invalid(format!("BYTES tensor `{}` must hold strings", t.name)))?;
        return Ok(Inputs::Texts(texts));
    }
    let ids = req.inputs.iter().find(|t| t.name == "input_ids").ok_or_else(|| {
        ApiError::Invalid("send a BYTES tensor of texts or an INT64 `input_ids` tensor of shape [n, seq]".into())
    })?;
    if !matches!(ids.datatype, Datatype::Int64 | Datatype::Int32) {
        return Err(ApiError::Invalid("`input_ids` must be an INT64 or INT32 tensor".into()));
    }
    let (n, seq, flat) = int_rows(ids)?;
    let mask = match req.inputs.iter().find(|t| t.name == "attention_mask") {
        Some(m) => {
            let (mn, ms, mask) = int_rows(m)?;
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

/// A JSON tensor of a tensor model's request, checked against the graph input it names.
fn tensor_input(t: &InferInput, spec: &TensorSpec) -> Result<NamedTensor, ApiError> {
    let invalid = |m: String| ApiError::Invalid(format!("input `{}`: {m}", t.name));
    let want = spec.datatype.ok_or_else(|| invalid(format!("the model's type {} is not supported", spec.type_name)))?;
    if t.datatype.tensor_type() != Some(want) {
        return Err(invalid(format!(
            "datatype must be {} (the model's {}), not {}",
            want.kserve_name(),
            spec.type_name,
            serde_json::to_value(t.datatype).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
        )));
    }
    let flat = values(t)?;
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let bad = |i: usize| invalid(format!("value {i} ({}) is not a valid {}", flat[i], want.kserve_name()));
    fn ints<T: TryFrom<i64>>(flat: &[&Value], bad: impl Fn(usize) -> ApiError) -> Result<Vec<T>, ApiError> {
        flat.iter()
            .enumerate()
            .map(|(i, v)| whole_i64(v).and_then(|x| T::try_from(x).ok()).ok_or_else(|| bad(i)))
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
    if let Some(bad) = wanted.iter().flatten().find(|n| !outputs.iter().any(|s| &s.name == *n)) {
        return Err(ApiError::Invalid(format!(
            "model `{}` has no output `{bad}`; its outputs: {}",
            model.name,
            names(outputs)
        )));
    }
    let prepare_ms = t0.elapsed().as_secs_f64() * 1e3;
    state.metrics.stage_ms(&model.name, "tokenize", prepare_ms);
    let computed = submit_tensors(model, state, inputs).await?;
    let outputs = computed
        .value
        .into_iter()
        .filter(|t| wanted.as_ref().is_none_or(|w| w.contains(&t.name)))
        .map(|t| OutputTensor {
            name: t.name,
            datatype: t.data.datatype().into(),
            shape: t.shape,
            data: TensorValues(t.data),
        })
        .collect();
    let body = InferResponse { model_name: model.name.clone(), model_version: "1".into(), id: req.id, outputs };
    let mut provenance = computed.provenance;
    provenance.timing.tokenize_ms = prepare_ms;
    Ok(inference_headers(Json(body), model, &provenance))
}
