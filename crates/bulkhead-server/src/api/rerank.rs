//! Cross-encoder routes: text-embeddings-inference `/rerank` and `/predict`, Cohere / Jina `/v1/rerank`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::models::KeepAlive;

use super::tei::TruncationDirection;
use super::TextBatch;

/// The name of a reranker this server serves (one relevance score per query and document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RerankModelName(pub String);

/// The name of a classifier this server serves (one score per label).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClassifierModelName(pub String);

/// `POST /rerank` (text-embeddings-inference).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerankRequest {
    /// The query.
    pub query: String,
    /// The documents to rank against the query.
    pub texts: TextBatch,
    /// Return the logits instead of the scores (sigmoid of the logit, unless the model's config says otherwise).
    #[serde(default)]
    pub raw_scores: bool,
    /// Return each document's text with its score.
    #[serde(default)]
    pub return_text: bool,
    /// Cut (query, document) pairs longer than the model's maximum, the longer side first, instead of refusing
    /// them with 422 (default false).
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Which end of an over-long pair truncation removes (default `Right`: the start is kept).
    #[serde(default)]
    pub truncation_direction: Option<TruncationDirection>,
    /// The reranker (bulkhead extension; default: the first reranker the server was started with).
    #[serde(default)]
    pub model: Option<RerankModelName>,
    /// How long the model stays loaded once idle after this request (models loaded on demand; Ollama's
    /// `keep_alive`): seconds or a duration such as `"5m"`; `0` unloads it after this request, negative never.
    #[serde(default)]
    pub keep_alive: Option<KeepAlive>,
}

/// One ranked document of `POST /rerank`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Rank {
    /// The document's position in `texts`.
    pub index: usize,
    /// Its relevance score (or logit with `raw_scores`).
    pub score: f32,
    /// The document, with `return_text`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// The answer of `POST /rerank`: every document, best first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RerankResponse(pub Vec<Rank>);

/// `POST /v1/rerank` (Cohere and Jina).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CohereRerankRequest {
    /// The reranker (default: the first reranker the server was started with).
    #[serde(default)]
    pub model: Option<RerankModelName>,
    /// The query.
    pub query: String,
    /// The documents: strings, or objects with a `text`.
    pub documents: DocumentBatch,
    /// How many of the best documents to return (default: all). Above the number of documents it is clamped to
    /// it, as Cohere does, and `meta.warnings` says so.
    #[serde(default)]
    pub top_n: Option<TopN>,
    /// Return each document with its score (default false).
    #[serde(default)]
    pub return_documents: bool,
    /// How long the model stays loaded once idle after this request (models loaded on demand; Ollama's
    /// `keep_alive`): seconds or a duration such as `"5m"`; `0` unloads it after this request, negative never.
    #[serde(default)]
    pub keep_alive: Option<KeepAlive>,
}

/// How many documents to return: at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct TopN(pub usize);

impl<'de> Deserialize<'de> for TopN {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Zero and negative values parse here so that the handler can say what is wrong with them.
        let v = i64::deserialize(d)?;
        Ok(TopN(usize::try_from(v.max(0)).unwrap_or(0)))
    }
}

/// The documents of `POST /v1/rerank`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
pub struct DocumentBatch(pub Vec<RerankDocument>);

/// A document: its text, or an object with a `text`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(untagged, expecting = "a document must be a string or an object with a `text` string")]
pub enum RerankDocument {
    /// The text.
    Text(String),
    /// `{"text": ...}`.
    Object(DocumentText),
}

impl RerankDocument {
    /// The text.
    pub fn into_text(self) -> String {
        match self {
            RerankDocument::Text(t) | RerankDocument::Object(DocumentText { text: t }) => t,
        }
    }
}

/// A document as an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentText {
    /// The text.
    pub text: String,
}

/// The answer of `POST /v1/rerank`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CohereRerankResponse {
    /// A request id.
    pub id: String,
    /// The best `top_n` documents, best first.
    pub results: Vec<CohereRerankResult>,
    /// What was billed (Cohere's shape) and warnings.
    pub meta: RerankMeta,
    /// The model that ranked them (Jina).
    pub model: String,
    /// Tokens processed (Jina).
    pub usage: RerankUsage,
}

/// One ranked document of `POST /v1/rerank`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CohereRerankResult {
    /// The document's position in `documents`.
    pub index: usize,
    /// Its relevance score.
    pub relevance_score: f32,
    /// The document, with `return_documents`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<DocumentText>,
}

/// `meta` of `POST /v1/rerank`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RerankMeta {
    /// Cohere's billing record: one search unit per query and up to 100 documents.
    pub billed_units: BilledUnits,
    /// What the server changed in the request (a clamped `top_n`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Cohere's billing units.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BilledUnits {
    /// One per query and up to 100 documents.
    pub search_units: usize,
}

/// `usage` of `POST /v1/rerank` (Jina).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RerankUsage {
    /// Tokens of every (query, document) pair, special tokens included.
    pub total_tokens: usize,
}

/// `POST /predict` (text-embeddings-inference).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// A text, a text in an array (`[a]`), a pair of texts (`[a, b]`), or a batch of those arrays
    /// (`[[a], [a, b]...]`).
    pub inputs: PredictInput,
    /// Return the logits instead of the softmax probabilities.
    #[serde(default)]
    pub raw_scores: bool,
    /// Cut inputs longer than the model's maximum instead of refusing them with 422 (default false).
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Which end of an over-long input truncation removes (default `Right`: the start is kept).
    #[serde(default)]
    pub truncation_direction: Option<TruncationDirection>,
    /// The classifier (bulkhead extension; default: the first classifier the server was started with).
    #[serde(default)]
    pub model: Option<ClassifierModelName>,
    /// How long the model stays loaded once idle after this request (models loaded on demand; Ollama's
    /// `keep_alive`): seconds or a duration such as `"5m"`; `0` unloads it after this request, negative never.
    #[serde(default)]
    pub keep_alive: Option<KeepAlive>,
}

/// The `inputs` of `/predict`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(
    untagged,
    expecting = "`inputs` must be a string, an array of one or two strings, or an array of arrays of one or two strings"
)]
pub enum PredictInput {
    /// One input.
    One(Sequence),
    /// Several inputs.
    Batch(SequenceBatch),
}

/// One input of `/predict`: a text, or one or two texts in an array (two are a pair).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Sequence {
    /// A text.
    Text(String),
    /// `[text]` or `[text, text_pair]`.
    Parts(TextPair),
}

impl Sequence {
    /// The text and the second text of a pair.
    pub fn into_parts(self) -> Vec<String> {
        match self {
            Sequence::Text(t) => vec![t],
            Sequence::Parts(p) => p.0,
        }
    }
}

/// A text or a pair of texts as an array of one or two strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TextPair(pub Vec<String>);

/// Several inputs of `/predict`, each an array of one text or a pair.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, ToSchema)]
pub struct SequenceBatch(pub Vec<TextPair>);

/// One label's score.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Prediction {
    /// The label (`id2label` of the model's config).
    pub label: String,
    /// Its probability (or logit with `raw_scores`).
    pub score: f32,
}

/// The answer of `POST /predict`: every label, best first; a list of those for a batch.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum PredictResponse {
    /// One input.
    One(Vec<Prediction>),
    /// A batch.
    Batch(Vec<Vec<Prediction>>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_shapes_of_each_route() {
        let p = |s: &str| serde_json::from_str::<PredictRequest>(s).map(|r| r.inputs);
        assert_eq!(p(r#"{"inputs": "a"}"#).unwrap(), PredictInput::One(Sequence::Text("a".into())));
        let pair = Sequence::Parts(TextPair(vec!["a".into(), "b".into()]));
        assert_eq!(p(r#"{"inputs": ["a", "b"]}"#).unwrap(), PredictInput::One(pair));
        let batch = SequenceBatch(vec![TextPair(vec!["a".into(), "b".into()])]);
        assert_eq!(p(r#"{"inputs": [["a", "b"]]}"#).unwrap(), PredictInput::Batch(batch));
        assert!(p(r#"{"inputs": [["a"], "b"]}"#).is_err(), "a batch holds arrays only");
        assert!(p(r#"{"inputs": 3}"#).unwrap_err().to_string().contains("`inputs` must be"));

        let r: CohereRerankRequest =
            serde_json::from_str(r#"{"query": "q", "documents": ["a", {"text": "b"}], "top_n": -1}"#).unwrap();
        let texts: Vec<String> = r.documents.0.into_iter().map(RerankDocument::into_text).collect();
        assert_eq!((texts, r.top_n, r.return_documents), (vec!["a".into(), "b".into()], Some(TopN(0)), false));
        assert!(serde_json::from_str::<CohereRerankRequest>(r#"{"query": "q", "documents": [1]}"#).is_err());
        let r: RerankRequest = serde_json::from_str(r#"{"query": "q", "texts": ["a"], "raw_scores": true}"#).unwrap();
        assert!(r.raw_scores && !r.return_text && r.truncate.is_none());
    }
}
