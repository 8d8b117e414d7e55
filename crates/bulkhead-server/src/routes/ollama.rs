//! Ollama-compatible routes, for the embedding models: `/api/embed` and `/api/embeddings` through the embedding
//! path, and `/api/tags`, `/api/show`, `/api/ps`, `/api/version` to list and describe them.
//!
//! A model is named as Ollama clients name it: its served name, or that name with the tag `:latest`. As Ollama,
//! `/api/embed` L2-normalises its vectors and truncates by default, and `/api/embeddings` returns the model's own
//! vector. `keep_alive` says how long the model stays loaded once idle (models loaded on demand); `options` are
//! accepted and ignored.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulkhead_core::{Device, ModelFiles, ModelTask, Precision, Unit};
use bulkhead_embed::Truncation;

use super::common::{inference_headers, labelled, JsonBody};
use super::embed::{embed, EmbedJob, Inputs, Normalize};
use super::info::pooling_name;
use super::tokens::{check_inputs, with_label};
use super::weights::{facts, human_count, rfc3339, WeightsFacts};
use crate::api::ollama::{
    OllamaDetails, OllamaEmbedRequest, OllamaEmbedResponse, OllamaEmbeddingsRequest, OllamaEmbeddingsResponse,
    OllamaInput, OllamaModel, OllamaModelName, OllamaPs, OllamaRunning, OllamaShow, OllamaShowRequest, OllamaTags,
    OllamaVersion,
};
use crate::error::{ApiError, ErrorKind};
use crate::registry::ModelInfo;
use crate::state::{AppState, KeepAlive, ModelEntry, ModelKind};

/// The errors `/api/embed` and `/api/embeddings` answer with: those of the embedding routes.
pub const OLLAMA_EMBED_ERRORS: &[ErrorKind] = super::openai::EMBEDDINGS_ERRORS;

/// The errors `/api/show` answers with.
pub const OLLAMA_SHOW_ERRORS: &[ErrorKind] = &[
    ErrorKind::MalformedJson,
    ErrorKind::Invalid,
    ErrorKind::WrongKind,
    ErrorKind::UnknownModel,
    ErrorKind::Internal,
    ErrorKind::Unavailable,
];

/// The errors `/api/tags` and `/api/ps` answer with.
pub const OLLAMA_LIST_ERRORS: &[ErrorKind] = &[ErrorKind::Internal];

/// The served model an Ollama client names (the name itself, else the name without `:latest`), loaded first if it
/// is not, kept loaded as the request's `keep_alive` says.
async fn find(
    state: &AppState,
    name: &OllamaModelName,
    keep_alive: Option<&KeepAlive>,
) -> Result<Arc<ModelEntry>, ApiError> {
    let exact = state.models.names().contains(&name.0);
    state.model_kept(Some(if exact { &name.0 } else { name.served() }), keep_alive).await
}

/// Embeds a text or texts (Ollama compatible): L2-normalised vectors.
#[utoipa::path(
    post,
    path = "/api/embed",
    tag = "Ollama",
    request_body = OllamaEmbedRequest,
    responses((status = 200, description = "One vector per text", body = OllamaEmbedResponse))
)]
pub async fn embed_route(State(state): State<Arc<AppState>>, JsonBody(req): JsonBody<OllamaEmbedRequest>) -> Response {
    let name = req.model.served().to_string();
    match run_embed(&state, req).await {
        Ok(r) => r,
        Err(e) => labelled(e, &name),
    }
}

async fn run_embed(state: &AppState, req: OllamaEmbedRequest) -> Result<Response, ApiError> {
    let t0 = Instant::now();
    let loaded = state.models.is_loaded(&req.model.0) || state.models.is_loaded(req.model.served());
    let model = find(state, &req.model, req.keep_alive.as_ref()).await?;
    let model = &model;
    // As Ollama: the time spent loading the model for this request (none when it was loaded).
    let load_duration = if loaded { 0 } else { t0.elapsed().as_nanos() as u64 };
    model.embedding()?;
    let texts = match req.input {
        OllamaInput::Text(t) => vec![t],
        OllamaInput::Texts(t) => t.0,
    };
    let answer = |embeddings, prompt_eval_count| OllamaEmbedResponse {
        model: req.model.0.clone(),
        embeddings,
        total_duration: t0.elapsed().as_nanos() as u64,
        load_duration,
        prompt_eval_count,
    };
    // As Ollama: no texts, no embeddings (and nothing computed, so no unit to name).
    if texts.is_empty() {
        return Ok(with_label(Json(answer(vec![], 0)), model));
    }
    check_inputs("input", texts.len(), state.config.max_inputs)?;
    let job = EmbedJob {
        inputs: Inputs::Texts(texts),
        truncate: req.truncate.unwrap_or(true).then_some(Truncation::Right),
        prompt: None,
        prompt_name: None,
        dimensions: req.dimensions.map(|d| d.0),
        normalize: Normalize::Always,
    };
    let e = embed(model, state, job).await?;
    Ok(inference_headers(Json(answer(e.vectors, e.tokens)), model, &e.provenance))
}

/// Embeds one text (Ollama's older route): the model's own vector.
#[utoipa::path(
    post,
    path = "/api/embeddings",
    tag = "Ollama",
    request_body = OllamaEmbeddingsRequest,
    responses((status = 200, description = "The vector of the text", body = OllamaEmbeddingsResponse))
)]
pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    JsonBody(req): JsonBody<OllamaEmbeddingsRequest>,
) -> Response {
    let name = req.model.served().to_string();
    match run_embeddings(&state, req).await {
        Ok(r) => r,
        Err(e) => labelled(e, &name),
    }
}

async fn run_embeddings(state: &AppState, req: OllamaEmbeddingsRequest) -> Result<Response, ApiError> {
    let model = find(state, &req.model, req.keep_alive.as_ref()).await?;
    let model = &model;
    model.embedding()?;
    // As Ollama: an empty prompt has an empty embedding.
    if req.prompt.is_empty() {
        return Ok(with_label(Json(OllamaEmbeddingsResponse { embedding: vec![] }), model));
    }
    let job = EmbedJob {
        inputs: Inputs::Texts(vec![req.prompt]),
        truncate: Some(Truncation::Right),
        prompt: None,
        prompt_name: None,
        dimensions: None,
        normalize: Normalize::AsModel,
    };
    let e = embed(model, state, job).await?;
    let embedding = e.vectors.into_iter().next().unwrap_or_default();
    Ok(inference_headers(Json(OllamaEmbeddingsResponse { embedding }), model, &e.provenance))
}

/// What Ollama clients read about a served embedding model, gathered once per listing.
struct Described {
    name: String,
    files: ModelFiles,
    /// Unix seconds at which it is unloaded if idle (loaded on demand).
    expires_at: Option<f64>,
    loaded: bool,
    facts: WeightsFacts,
    unit: Option<String>,
    precision: Option<Precision>,
    resident: u64,
}

impl Described {
    fn details(&self) -> OllamaDetails {
        let family = self.files.model_type.clone().unwrap_or_default();
        let quantization_level = match self.precision {
            Some(Precision::Fp32) => "F32",
            Some(Precision::Fp16) => "F16",
            Some(Precision::Bf16) => "BF16",
            Some(Precision::Int8) => "Q8_0",
            Some(Precision::Unknown) | None => "",
        };
        OllamaDetails {
            parent_model: String::new(),
            format: self.facts.format.into(),
            families: if family.is_empty() { vec![] } else { vec![family.clone()] },
            family,
            parameter_size: self.facts.parameters.map(human_count).unwrap_or_default(),
            quantization_level: quantization_level.into(),
        }
    }

    fn tagged(&self) -> String {
        format!("{}:latest", self.name)
    }
}

/// The embedding models (all of them, loaded or not, or the one named), described: their files read on the
/// blocking pool.
async fn describe(state: &AppState, only: Option<&str>) -> Result<Vec<Described>, ApiError> {
    let models: Vec<(ModelInfo, ModelFiles)> = state
        .models
        .list()
        .into_iter()
        .filter(|m| only.is_none_or(|n| n == m.name))
        .filter_map(|m| {
            let embeds = match &m.entry {
                Some(e) => matches!(e.kind, ModelKind::Embedding { .. }),
                None => m.files.as_ref().is_some_and(|f| !f.is_tensor_model() && f.task == ModelTask::Embedding),
            };
            let files = m.files.clone()?;
            embeds.then_some((m, files))
        })
        .collect();
    let read: Vec<ModelFiles> = models.iter().map(|(_, f)| f.clone()).collect();
    let all_facts = tokio::task::spawn_blocking(move || read.iter().map(facts).collect::<Vec<_>>())
        .await
        .map_err(|e| ApiError::Internal(format!("reading the weights files stopped: {e}")))?;
    Ok(models
        .into_iter()
        .zip(all_facts)
        .map(|((info, files), facts)| {
            let units = info.entry.as_ref().map(|e| e.backend.units());
            let serving = units.as_ref().and_then(|u| u.serving.clone());
            let view = units.as_ref().and_then(|u| u.units.iter().find(|v| Some(&v.unit) == serving.as_ref()));
            let precision = view.and_then(|u| u.precision);
            let resident = info.stats.resident_bytes.filter(|_| info.entry.is_some()).unwrap_or(0);
            Described {
                name: info.name,
                files,
                expires_at: info.expires_at,
                loaded: info.entry.is_some(),
                facts,
                unit: serving,
                precision,
                resident,
            }
        })
        .collect())
}

/// The served embedding models (Ollama compatible: `ollama list`).
#[utoipa::path(get, path = "/api/tags", tag = "Ollama", responses((status = 200, description = "The served embedding models", body = OllamaTags)))]
pub async fn tags(State(state): State<Arc<AppState>>) -> Response {
    match describe(&state, None).await {
        Ok(all) => {
            let models = all
                .iter()
                .map(|d| OllamaModel {
                    name: d.tagged(),
                    model: d.tagged(),
                    modified_at: d.facts.modified_at.clone(),
                    size: d.facts.size,
                    digest: d.facts.digest.clone(),
                    details: d.details(),
                })
                .collect();
            Json(OllamaTags { models }).into_response()
        }
        Err(e) => labelled(e, ""),
    }
}

/// The embedding models in memory (Ollama compatible: `ollama ps`): all of them, with their measured memory.
#[utoipa::path(get, path = "/api/ps", tag = "Ollama", responses((status = 200, description = "The embedding models in memory", body = OllamaPs)))]
pub async fn ps(State(state): State<Arc<AppState>>) -> Response {
    match describe(&state, None).await {
        Ok(all) => {
            let models = all
                .iter()
                .filter(|d| d.loaded)
                .map(|d| {
                    let on_gpu =
                        d.unit.as_deref().and_then(|u| u.parse::<Unit>().ok()).is_some_and(|u| on_gpu(u.device));
                    OllamaRunning {
                        name: d.tagged(),
                        model: d.tagged(),
                        size: d.resident,
                        digest: d.facts.digest.clone(),
                        details: d.details(),
                        expires_at: expiry(d.expires_at),
                        size_vram: if on_gpu { d.resident } else { 0 },
                        context_length: d.files.max_seq_length,
                        unit: d.unit.clone(),
                    }
                })
                .collect();
            Json(OllamaPs { models }).into_response()
        }
        Err(e) => labelled(e, ""),
    }
}

/// An RFC 3339 time from Unix seconds; far ahead for a model never unloaded for idleness.
fn expiry(at: Option<f64>) -> String {
    match at {
        Some(at) => rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(at.max(0.0))),
        None => "9999-12-31T23:59:59Z".into(),
    }
}

fn on_gpu(d: Device) -> bool {
    !matches!(d, Device::Cpu | Device::OpenVino)
}

/// A model's details (Ollama compatible: `ollama show`).
#[utoipa::path(
    post,
    path = "/api/show",
    tag = "Ollama",
    request_body = OllamaShowRequest,
    responses((status = 200, description = "The model's details", body = OllamaShow))
)]
pub async fn show(State(state): State<Arc<AppState>>, JsonBody(req): JsonBody<OllamaShowRequest>) -> Response {
    let name = req.model.as_ref().or(req.name.as_ref()).map(|n| n.served().to_string()).unwrap_or_default();
    match run_show(&state, req).await {
        Ok(r) => r,
        Err(e) => labelled(e, &name),
    }
}

async fn run_show(state: &AppState, req: OllamaShowRequest) -> Result<Response, ApiError> {
    let name = req
        .model
        .or(req.name)
        .ok_or_else(|| ApiError::Invalid("`model` is required: name the model to show".into()))?;
    let model = find(state, &name, None).await?;
    let model = &model;
    let (_, dimensions) = model.embedding()?;
    let d =
        describe(state, Some(&model.name)).await?.pop().ok_or_else(|| ApiError::Internal("no description".into()))?;
    let arch = model.files.model_type.clone().unwrap_or_else(|| "unknown".into());
    let mut info = std::collections::BTreeMap::new();
    info.insert("general.architecture".to_string(), arch.clone().into());
    if let Some(n) = d.facts.parameters {
        info.insert("general.parameter_count".into(), n.into());
    }
    info.insert(format!("{arch}.context_length"), model.files.max_seq_length.into());
    info.insert(format!("{arch}.embedding_length"), dimensions.into());
    info.insert(format!("{arch}.pooling_type"), pooling_name(model.files.pooling).into());
    let body = OllamaShow {
        modelfile: String::new(),
        parameters: String::new(),
        template: String::new(),
        license: String::new(),
        details: d.details(),
        model_info: info,
        capabilities: vec!["embedding".into()],
        modified_at: d.facts.modified_at.clone(),
    };
    Ok(with_label(Json(body), model))
}

/// bulkhead's version (Ollama compatible).
#[utoipa::path(get, path = "/api/version", tag = "Ollama", responses((status = 200, description = "The server's version", body = OllamaVersion)))]
pub async fn version() -> Json<OllamaVersion> {
    Json(OllamaVersion { version: env!("CARGO_PKG_VERSION").into() })
}
