//! Sparse embeddings of SPLADE models: text-embeddings-inference `POST /embed_sparse` and `POST /v1/embeddings`
//! with `"sparse": true`. A sparse model runs the scoring path ([`score`]): texts in, one vocabulary-sized pooled
//! vector per text from its graph, made sparse here as the model's sentence-transformers config says
//! ([`bulkhead_core::SparseSpec::sparsify`]: every non-zero value, or the `max_active_dims` largest). Any other
//! model is refused with 400 naming what it is and the routes that serve it; a sparse model on the dense routes is
//! refused the same way (it has no dense output).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use bulkhead_core::ModelTask;
use bulkhead_embed::Truncation;

use super::common::{inference_headers, labelled, JsonBody, Provenance};
use super::score::{score, ScoreJob};
use crate::api::openai::{EmbeddingInput, EmbeddingTag, EmbeddingsRequest, EncodingFormat, ListTag, Usage};
use crate::api::sparse::{
    EmbedSparseRequest, EmbedSparseResponse, SparseEmbeddingData, SparseEmbeddingsResponse, SparseInput, SparseValue,
};
use crate::api::tei::TruncationDirection;
use crate::error::{ApiError, ErrorKind};
use crate::state::{AppState, KeepAlive, ModelEntry};

/// The errors `/embed_sparse` answers with.
pub const SPARSE_ERRORS: &[ErrorKind] = &[
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

/// What a route asks of the sparse path.
struct SparseJob {
    texts: Vec<String>,
    truncate: Option<Truncation>,
    route: &'static str,
}

/// The sparse vectors of the texts, with who computed them and the tokens they took.
struct Sparse {
    vectors: Vec<Vec<SparseValue>>,
    provenance: Provenance,
    tokens: usize,
}

/// The sparse model `name` names (or the first sparse model for `None`): the one place a sparse route looks a
/// model up.
async fn sparse_model(
    state: &AppState,
    name: Option<&str>,
    keep_alive: Option<&KeepAlive>,
) -> Result<Arc<ModelEntry>, ApiError> {
    state.model_for_kept(name, keep_alive, ModelTask::is_sparse).await
}

async fn sparse(model: &ModelEntry, state: &AppState, job: SparseJob) -> Result<Sparse, ApiError> {
    let (tokenizer, task) = model.cross_encoder(job.route, ModelTask::is_sparse)?;
    let ModelTask::SparseEmbedding(spec) = task else {
        return Err(ApiError::Internal(format!("model `{}` passed as sparse but is {}", model.name, task.noun())));
    };
    let pairs = job.texts.into_iter().map(|t| (t, None)).collect();
    let s = score(model, state, tokenizer, ScoreJob { pairs, truncate: job.truncate, noun: "input" }).await?;
    let vectors = s
        .logits
        .iter()
        .map(|v| spec.sparsify(v).into_iter().map(|a| SparseValue { index: a.index, value: a.value }).collect())
        .collect();
    Ok(Sparse { vectors, provenance: s.provenance, tokens: s.tokens })
}

/// Sparse embeddings of texts (text-embeddings-inference compatible): per text, its active vocabulary entries as
/// `{index, value}`, indices ascending. A text longer than the model's maximum is refused unless `truncate` is
/// true. Only sparse (SPLADE) models serve it.
#[utoipa::path(
    post,
    path = "/embed_sparse",
    tag = "text-embeddings-inference",
    request_body = EmbedSparseRequest,
    responses((status = 200, description = "One sparse vector per text", body = EmbedSparseResponse))
)]
pub async fn embed_sparse(State(state): State<Arc<AppState>>, JsonBody(req): JsonBody<EmbedSparseRequest>) -> Response {
    let name = req.model.as_ref().map_or_else(|| state.default_model.clone(), |m| m.0.clone());
    let result = async {
        let model = sparse_model(&state, req.model.as_ref().map(|m| m.0.as_str()), req.keep_alive.as_ref()).await?;
        let model = &model;
        let side = match req.truncation_direction.unwrap_or_default() {
            TruncationDirection::Right => Truncation::Right,
            TruncationDirection::Left => Truncation::Left,
        };
        let texts = match req.inputs {
            SparseInput::Text(t) => vec![t],
            SparseInput::Texts(t) => t.0,
        };
        let job =
            SparseJob { texts, truncate: req.truncate.unwrap_or(false).then_some(side), route: "POST /embed_sparse" };
        let s = sparse(model, &state, job).await?;
        Ok::<_, ApiError>(inference_headers(Json(EmbedSparseResponse(s.vectors)), model, &s.provenance))
    }
    .await;
    result.unwrap_or_else(|e| labelled(e, &name))
}

/// `POST /v1/embeddings` with `"sparse": true`: `data[].sparse_embedding` instead of `data[].embedding`. Texts only;
/// over-long texts are truncated, as the dense route does; the options that shape dense vectors are refused.
pub(crate) async fn openai(state: &AppState, req: EmbeddingsRequest) -> Result<Response, ApiError> {
    let model = sparse_model(state, req.model.as_ref().map(|m| m.0.as_str()), req.keep_alive.as_ref()).await?;
    let model = &model;
    let dense_only = [
        (req.dimensions.is_some(), "dimensions"),
        (req.quantization_ranges.is_some(), "quantization_ranges"),
        (!matches!(req.encoding_format.unwrap_or_default(), EncodingFormat::Float), "encoding_format other than float"),
        (req.prompt.is_some() || req.prompt_name.is_some(), "prompt and prompt_name"),
    ];
    if let Some((_, what)) = dense_only.iter().find(|(set, _)| *set) {
        return Err(ApiError::Invalid(format!(
            "{what} cannot be combined with \"sparse\": true (sparse vectors are returned as index/value pairs); \
             leave it out"
        )));
    }
    let texts = match req.input {
        EmbeddingInput::Text(t) => vec![t],
        EmbeddingInput::Texts(t) => t.0,
        _ => {
            return Err(ApiError::Invalid(
                "\"sparse\": true takes `input` as a string or an array of strings (not token ids or images)".into(),
            ))
        }
    };
    let job =
        SparseJob { texts, truncate: Some(Truncation::Right), route: "POST /v1/embeddings with \"sparse\": true" };
    let s = sparse(model, state, job).await?;
    let data = s
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| SparseEmbeddingData { object: EmbeddingTag::Embedding, index, sparse_embedding: v })
        .collect();
    let usage = Usage { prompt_tokens: s.tokens, total_tokens: s.tokens };
    let body = SparseEmbeddingsResponse { object: ListTag::List, data, model: model.name.clone(), usage };
    Ok(inference_headers(Json(body), model, &s.provenance))
}
