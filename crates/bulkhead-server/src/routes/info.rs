//! text-embeddings-inference compatible `/info` (a model's settings and limits, and the unit serving it) and
//! `/similarity` (cosine similarity of sentences with a source sentence, through the embedding path).

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::Response;
use axum::Json;
use bulkhead_core::{ModelTask, Pooling, Precision};
use bulkhead_embed::Truncation;
use serde::Deserialize;
use utoipa::IntoParams;

use super::common::{inference_headers, labelled, JsonBody};
use super::embed::{embed, EmbedJob, Inputs, Normalize};
use super::tokens::{tokenizer_of, with_label};
use crate::api::info::{ClassifierModel, EmbeddingModel, Info, ModelType, SimilarityRequest, SimilarityResponse};
use crate::api::tei::TruncationDirection;
use crate::api::tokens::TextModelName;
use crate::error::{ApiError, ErrorKind};
use crate::state::{AppState, ModelEntry, ModelKind};

/// The errors `/info` answers with.
pub const INFO_ERRORS: &[ErrorKind] =
    &[ErrorKind::Invalid, ErrorKind::WrongKind, ErrorKind::UnknownModel, ErrorKind::Unavailable];

/// The errors `/similarity` answers with: those of the embedding routes.
pub const SIMILARITY_ERRORS: &[ErrorKind] = super::openai::EMBEDDINGS_ERRORS;

/// The query of `GET /info`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InfoQuery {
    /// The model (bulkhead extension; default: the first model the server was started with).
    pub model: Option<TextModelName>,
}

impl<S: Send + Sync> FromRequestParts<S> for InfoQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<InfoQuery>::try_from_uri(&parts.uri)
            .map(|q| q.0)
            .map_err(|e| ApiError::Invalid(format!("invalid query: {}", e.body_text())))
    }
}

/// The model's settings and limits (text-embeddings-inference compatible), with the unit serving it now.
#[utoipa::path(
    get,
    path = "/info",
    tag = "text-embeddings-inference",
    params(InfoQuery),
    responses((status = 200, description = "The model's settings and limits", body = Info))
)]
pub async fn info(State(state): State<Arc<AppState>>, query: InfoQuery) -> Response {
    let name = query.model.as_ref().map_or_else(|| state.default_model.clone(), |m| m.0.clone());
    let described = match state.model(Some(&name)).await {
        Ok(m) => describe(&state, &m).map(|info| (m, info)),
        Err(e) => Err(e),
    };
    match described {
        Ok((model, info)) => with_label(Json(info), &model),
        Err(e) => labelled(e, &name),
    }
}

fn describe(state: &AppState, model: &ModelEntry) -> Result<Info, ApiError> {
    let tokenizer = tokenizer_of(model)?;
    let (model_type, dimensions) = match &model.kind {
        ModelKind::Embedding { dimensions, .. } => (
            ModelType::Embedding(EmbeddingModel { pooling: pooling_name(model.files.pooling).into() }),
            Some(*dimensions),
        ),
        _ => match model.task() {
            Some(ModelTask::Classify { labels }) => (ModelType::Classifier(labels_of(labels)), None),
            // As text-embeddings-inference describes a SPLADE model: an embedding model pooled by `splade`.
            Some(ModelTask::SparseEmbedding(_)) => {
                (ModelType::Embedding(EmbeddingModel { pooling: "splade".into() }), None)
            }
            _ => (ModelType::Reranker(labels_of(&["LABEL_0".to_string()])), None),
        },
    };
    let units = model.backend.units();
    let serving = units.serving.clone();
    let precision = serving
        .as_ref()
        .and_then(|s| units.units.iter().find(|u| &u.unit == s))
        .and_then(|u| u.precision)
        .filter(|p| *p != Precision::Unknown);
    let prompts = &model.files.prompts;
    let default_prompt_name = match &prompts.default {
        Some(bulkhead_core::DefaultPrompt::Named(n)) => Some(n.clone()),
        _ => None,
    };
    Ok(Info {
        model_id: model.name.clone(),
        model_sha: None,
        model_dtype: dtype_name(precision).into(),
        model_type,
        max_concurrent_requests: state.config.max_queue,
        max_input_length: tokenizer.max_len(),
        max_batch_tokens: state.config.max_batch_tokens,
        max_batch_requests: Some(state.config.max_batch_size),
        max_client_batch_size: state.config.max_inputs,
        auto_truncate: false,
        // The tokenization permits: one per core (`AppState::tokenize_permits`).
        tokenization_workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        version: env!("CARGO_PKG_VERSION").into(),
        sha: None,
        docker_label: None,
        dimensions,
        unit: serving,
        precision: precision.map(|p| p.as_str().to_string()),
        prompts: prompts.named.clone(),
        default_prompt_name,
    })
}

/// Pooling as sentence-transformers names it (`pooling_mode_*` of `1_Pooling/config.json`).
pub(crate) fn pooling_name(p: Pooling) -> &'static str {
    match p {
        Pooling::Mean => "mean",
        Pooling::Cls => "cls",
        Pooling::Max => "max",
        Pooling::MeanSqrtLen => "mean_sqrt_len_tokens",
        Pooling::LastToken => "last_token",
        Pooling::WeightedMean => "weightedmean",
    }
}

fn dtype_name(p: Option<Precision>) -> &'static str {
    match p {
        Some(Precision::Fp32) => "float32",
        Some(Precision::Fp16) => "float16",
        Some(Precision::Bf16) => "bfloat16",
        Some(Precision::Int8) => "int8",
        Some(Precision::Unknown) | None => "unknown",
    }
}

fn labels_of(labels: &[String]) -> ClassifierModel {
    ClassifierModel {
        id2label: labels.iter().enumerate().map(|(i, l)| (i.to_string(), l.clone())).collect(),
        label2id: labels.iter().enumerate().map(|(i, l)| (l.clone(), i)).collect(),
    }
}

/// The cosine similarity of each sentence with the source sentence (text-embeddings-inference compatible), from
/// the same vectors `/embed` gives.
#[utoipa::path(
    post,
    path = "/similarity",
    tag = "text-embeddings-inference",
    request_body = SimilarityRequest,
    responses((status = 200, description = "One cosine similarity per sentence, in order", body = SimilarityResponse))
)]
pub async fn similarity(State(state): State<Arc<AppState>>, JsonBody(req): JsonBody<SimilarityRequest>) -> Response {
    let name = req.model.as_ref().map_or_else(|| state.default_model.clone(), |m| m.0.clone());
    match run_similarity(&state, req).await {
        Ok(r) => r,
        Err(e) => labelled(e, &name),
    }
}

async fn run_similarity(state: &AppState, req: SimilarityRequest) -> Result<Response, ApiError> {
    let model = state.model_kept(req.model.as_ref().map(|m| m.0.as_str()), req.keep_alive.as_ref()).await?;
    let model = &model;
    let sentences = req.inputs.sentences.0;
    let max = state.config.max_inputs;
    if sentences.is_empty() {
        return Err(ApiError::Invalid(
            "`inputs.sentences` is empty; send at least one sentence to compare with `source_sentence`".into(),
        ));
    }
    if sentences.len() + 1 > max {
        return Err(ApiError::Invalid(format!(
            "`inputs.sentences` holds {} sentences; with `source_sentence` that is more than the limit of {max} \
             inputs (--max-inputs)",
            sentences.len()
        )));
    }
    let params = req.parameters.unwrap_or_default();
    let side = match params.truncation_direction.unwrap_or_default() {
        TruncationDirection::Right => Truncation::Right,
        TruncationDirection::Left => Truncation::Left,
    };
    let mut texts = Vec::with_capacity(sentences.len() + 1);
    texts.push(req.inputs.source_sentence);
    texts.extend(sentences);
    let job = EmbedJob {
        inputs: Inputs::Texts(texts),
        truncate: params.truncate.unwrap_or(false).then_some(side),
        prompt: None,
        prompt_name: params.prompt_name.map(|p| p.0),
        dimensions: None,
        normalize: Normalize::Never,
    };
    let e = embed(model, state, job).await?;
    let (source, others) = e.vectors.split_first().ok_or_else(|| ApiError::Internal("no vectors".into()))?;
    let scores = others.iter().map(|v| bulkhead_core::stats::cosine(source, v) as f32).collect();
    Ok(inference_headers(Json(SimilarityResponse(scores)), model, &e.provenance))
}
