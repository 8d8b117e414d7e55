//! Sparse embeddings (SPLADE): text-embeddings-inference `/embed_sparse`, and the `sparse` output of
//! `/v1/embeddings` (`"sparse": true`, a bulkhead extension).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::models::KeepAlive;
use super::openai::{EmbeddingTag, EmbeddingsResponse, ListTag, Usage};
use super::tei::TruncationDirection;
use super::TextBatch;

/// The name of a sparse embedding model this server serves (SPLADE: texts in, weighted vocabulary entries out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SparseModelName(pub String);

/// `POST /embed_sparse` (text-embeddings-inference).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedSparseRequest {
    /// A text or texts.
    pub inputs: SparseInput,
    /// Cut texts longer than the model's maximum instead of refusing them with 422 (default false).
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Which end of a text truncation keeps (default `Right`: the start is kept).
    #[serde(default)]
    pub truncation_direction: Option<TruncationDirection>,
    /// The sparse model (bulkhead extension; default: the first sparse model the server was started with).
    #[serde(default)]
    pub model: Option<SparseModelName>,
    /// How long the model stays loaded once idle after this request (models loaded on demand; Ollama's
    /// `keep_alive`): seconds or a duration such as `"5m"`; `0` unloads it after this request, negative never.
    #[serde(default)]
    pub keep_alive: Option<KeepAlive>,
}

/// The `inputs` of `/embed_sparse`.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(untagged, expecting = "`inputs` must be a string or an array of strings")]
pub enum SparseInput {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(TextBatch),
}

/// One active dimension of a sparse embedding.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct SparseValue {
    /// The vocabulary index (token id).
    pub index: u32,
    /// Its weight (positive).
    pub value: f32,
}

/// The answer of `POST /embed_sparse`: per text, its active dimensions, indices ascending (every non-zero value,
/// or the model's `max_active_dims` largest).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EmbedSparseResponse(pub Vec<Vec<SparseValue>>);

/// One entry of a sparse `/v1/embeddings` answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SparseEmbeddingData {
    /// Always `embedding`.
    pub object: EmbeddingTag,
    /// The input's position.
    pub index: usize,
    /// Its active dimensions, indices ascending.
    pub sparse_embedding: Vec<SparseValue>,
}

/// The answer of `POST /v1/embeddings` with `"sparse": true`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SparseEmbeddingsResponse {
    /// Always `list`.
    pub object: ListTag,
    /// One entry per input, in input order.
    pub data: Vec<SparseEmbeddingData>,
    /// The model that computed them.
    pub model: String,
    /// Tokens processed.
    pub usage: Usage,
}

/// What `POST /v1/embeddings` answers: dense vectors (`data[].embedding`), or sparse ones with `"sparse": true`
/// (`data[].sparse_embedding`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingsAnswer {
    /// Dense vectors.
    Dense(EmbeddingsResponse),
    /// Sparse vectors.
    Sparse(SparseEmbeddingsResponse),
}
