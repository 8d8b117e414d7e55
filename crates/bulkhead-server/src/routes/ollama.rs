//! Ollama-compatible routes, for the embedding models: `/api/embed` and `/api/embeddings` through the embedding
//! path, and `/api/tags`, `/api/show`, `/api/ps`, `/api/version` to list and describe them.
//!
//! A model is named as Ollama clients name it: its served name, or that name with the tag `:latest`. As Ollama,
//! `/api/embed` L2-normalises its vectors and truncates by default, and `/api/embeddings` returns the model's own
//! vector. `keep_alive` and `options` are accepted and ignored: models stay loaded while the server runs.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulkhead_core::{Device, Precision, Unit};
use bulkhead_embed::Truncation;

use super::common::{inference_headers, labelled, JsonBody};
use super::embed::{embed, EmbedJob, Inputs, Normalize};
use super::info::pooling_name;
use super::tokens::{check_inputs, with_label};
use super::weights::{facts, human_count, WeightsFacts};
use crate::api::ollama::{
    OllamaDetails, OllamaEmbedRequest, OllamaEmbedResponse, OllamaEmbeddingsRequest, OllamaEmbeddingsResponse,
    OllamaInput, OllamaModel, OllamaModelName, OllamaPs, OllamaRunning, OllamaShow, OllamaShowRequest, OllamaTags,
    OllamaVersion,
};
use crate::error::{ApiError, ErrorKind};
use crate::state::{AppState, ModelEntry, ModelKind};

/// The errors `/api/embed` and `/api/embeddings` answer with: those of the embedding routes.
pub const OLLAMA_EMBED_ERRORS: &[ErrorKind] = super::openai::EMBEDDINGS_ERRORS;

/// The errors `/api/show` answers with.
pub const OLLAMA_SHOW_ERRORS: &[ErrorKind] =
    &[ErrorKind::MalformedJson, ErrorKind::Invalid, ErrorKind::WrongKind, ErrorKind::UnknownModel, ErrorKind::Internal];

/// The errors `/api/tags` and `/api/ps` answer with.
pub const OLLAMA_LIST_ERRORS: &[ErrorKind] = &[ErrorKind::Internal];

/// The served model an Ollama client names: the name itself, else the name without `:latest`.
fn find<'a>(state: &'a AppState, name: &OllamaModelName) -> Result<&'a Arc<ModelEntry>, ApiError> {
    state
        .models
        .get(&name.0)
        .or_else(|| state.models.get(name.served()))
        .ok_or_else(|| ApiError::UnknownModel(name.0.clone()))
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
    let model = find(state, &req.model)?;
    model.embedding()?;
    let texts = match req.input {
        OllamaInput::Text(t) => vec![t],
        OllamaInput::Texts(t) => t.0,
    };
    let answer = |embeddings, prompt_eval_count| OllamaEmbedResponse {
        model: req.model.0.clone(),
        embeddings,
        total_duration: t0.elapsed().as_nanos() as u64,
        load_duration: 0,
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
    let model = find(state, &req.model)?;
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
    model: Arc<ModelEntry>,
    facts: WeightsFacts,
    unit: Option<String>,
    precision: Option<Precision>,
    resident: u64,
}

impl Described {
    fn details(&self) -> OllamaDetails {
        let family = self.model.files.model_type.clone().unwrap_or_default();
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
        format!("{}:latest", self.model.name)
    }
}

/// The embedding models (all of them, or the one named), described: their files read on the blocking pool.
async fn describe(state: &AppState, only: Option<&Arc<ModelEntry>>) -> Result<Vec<Described>, ApiError> {
    let models: Vec<Arc<ModelEntry>> = match only {
        Some(m) => vec![m.clone()],
        None => state.models.values().filter(|m| matches!(m.kind, ModelKind::Embedding { .. })).cloned().collect(),
    };
    let read = models.clone();
    let all_facts = tokio::task::spawn_blocking(move || read.iter().map(|m| facts(&m.files)).collect::<Vec<_>>())
        .await
        .map_err(|e| ApiError::Internal(format!("reading the weights files stopped: {e}")))?;
    Ok(models
        .into_iter()
        .zip(all_facts)
        .map(|(model, facts)| {
            let units = model.backend.units();
            let view = units.serving.as_ref().and_then(|s| units.units.iter().find(|u| &u.unit == s));
            let precision = view.and_then(|u| u.precision);
            let resident = view.map_or(0, |u| u.resident_bytes);
            Described { facts, unit: units.serving.clone(), precision, resident, model }
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
                .map(|d| {
                    let on_gpu =
                        d.unit.as_deref().and_then(|u| u.parse::<Unit>().ok()).is_some_and(|u| on_gpu(u.device));
                    OllamaRunning {
                        name: d.tagged(),
                        model: d.tagged(),
                        size: d.resident,
                        digest: d.facts.digest.clone(),
                        details: d.details(),
                        expires_at: "9999-12-31T23:59:59Z".into(),
                        size_vram: if on_gpu { d.resident } else { 0 },
                        context_length: d.model.files.max_seq_length,
                        unit: d.unit.clone(),
                    }
                })
                .collect();
            Json(OllamaPs { models }).into_response()
        }
        Err(e) => labelled(e, ""),
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
    let model = find(state, &name)?;
    let (_, dimensions) = model.embedding()?;
    let d = describe(state, Some(model)).await?.pop().ok_or_else(|| ApiError::Internal("no description".into()))?;
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
