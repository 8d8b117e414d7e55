//! text-embeddings-inference compatible `/info` and `/similarity`.

use std::collections::BTreeMap;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::models::KeepAlive;

use super::tei::TruncationDirection;
use super::{EmbeddingModelName, PromptName};

/// The answer of `GET /info`: text-embeddings-inference's fields, then bulkhead's own.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Info {
    /// The model's name on this server.
    pub model_id: String,
    /// Always `null` (text-embeddings-inference gives the hub revision; a model here is a folder).
    pub model_sha: Option<String>,
    /// The weights' element type as the serving unit loaded them: `float32`, `float16`, `bfloat16`, `int8`, or
    /// `unknown` while no unit serves.
    pub model_dtype: String,
    /// What the model computes.
    pub model_type: ModelType,
    /// Requests that may wait in the model's queue (`--max-queue`); past it, 429.
    pub max_concurrent_requests: usize,
    /// The most tokens of one input, special tokens included (`max_seq_length`).
    pub max_input_length: usize,
    /// Padded tokens a batch may hold (`--max-batch-tokens`).
    pub max_batch_tokens: usize,
    /// Rows a batch may hold (`--max-batch-size`).
    pub max_batch_requests: Option<usize>,
    /// Inputs one request may hold (`--max-inputs`).
    pub max_client_batch_size: usize,
    /// Whether `/embed` cuts over-long texts when a request does not say (false: it refuses them with 422).
    pub auto_truncate: bool,
    /// Tokenizations that run at once (one per core).
    pub tokenization_workers: usize,
    /// bulkhead's version.
    pub version: String,
    /// Always `null`.
    pub sha: Option<String>,
    /// Always `null`.
    pub docker_label: Option<String>,
    /// The embedding size (bulkhead extension; `null` for a cross-encoder).
    pub dimensions: Option<usize>,
    /// The compute unit serving the model now (bulkhead extension; `null` while none serves).
    pub unit: Option<String>,
    /// The weight precision that unit loaded, as `x-bulkhead-precision` writes it (bulkhead extension).
    pub precision: Option<String>,
    /// The model's named prompts and their texts (bulkhead extension).
    pub prompts: BTreeMap<String, String>,
    /// The prompt applied when a request names none (bulkhead extension): a prompt name, or `null`.
    pub default_prompt_name: Option<String>,
}

/// What a model computes, as text-embeddings-inference writes it: `{"embedding": {"pooling": "mean"}}`,
/// `{"reranker": {...labels}}` or `{"classifier": {...labels}}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    /// One vector per text.
    Embedding(EmbeddingModel),
    /// One relevance score per (query, document) pair.
    Reranker(ClassifierModel),
    /// One score per label.
    Classifier(ClassifierModel),
}

/// An embedding model's pooling.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EmbeddingModel {
    /// `cls`, `mean`, `max`, `mean_sqrt_len_tokens`, `weightedmean` or `last_token` (sentence-transformers' names);
    /// `splade` for a sparse embedding model.
    pub pooling: String,
}

/// A cross-encoder's labels.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClassifierModel {
    /// Label name by logit index (as a string, as in `config.json`).
    pub id2label: BTreeMap<String, String>,
    /// Logit index by label name.
    pub label2id: BTreeMap<String, usize>,
}

/// `POST /similarity`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimilarityRequest {
    /// The sentence and the sentences to compare it with.
    #[serde(deserialize_with = "object")]
    pub inputs: SimilarityInput,
    /// Truncation and prompt.
    #[serde(default, deserialize_with = "optional_object")]
    pub parameters: Option<SimilarityParameters>,
    /// The model (bulkhead extension; default: the first model the server was started with).
    #[serde(default)]
    pub model: Option<EmbeddingModelName>,
    /// How long the model stays loaded once idle after this request (models loaded on demand; Ollama's
    /// `keep_alive`): seconds or a duration such as `"5m"`; `0` unloads it after this request, negative never.
    #[serde(default)]
    pub keep_alive: Option<KeepAlive>,
}

/// A struct from a JSON object only (serde's derive also reads a struct from an array of its fields in order,
/// which the schema does not allow).
fn object<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<T, D::Error> {
    let map = serde_json::Map::deserialize(d)?;
    serde_json::from_value(serde_json::Value::Object(map)).map_err(D::Error::custom)
}

fn optional_object<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    let map = Option::<serde_json::Map<String, serde_json::Value>>::deserialize(d)?;
    map.map(|m| serde_json::from_value(serde_json::Value::Object(m)).map_err(D::Error::custom)).transpose()
}

/// The texts of `/similarity`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimilarityInput {
    /// The sentence the others are compared with.
    pub source_sentence: String,
    /// The sentences to compare with it (at least one).
    pub sentences: SimilaritySentences,
}

/// The sentences of `/similarity`: at least one, and one fewer than `--max-inputs` (the source sentence counts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SimilaritySentences(pub Vec<String>);

/// How `/similarity` prepares its texts.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimilarityParameters {
    /// Cut texts longer than the model's maximum instead of refusing them with 422 (default false).
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Which end of a text truncation keeps (default `Right`: the start is kept).
    #[serde(default)]
    pub truncation_direction: Option<TruncationDirection>,
    /// A named prompt of the model to prepend to every text.
    #[serde(default)]
    pub prompt_name: Option<PromptName>,
}

/// The answer of `POST /similarity`: the cosine similarity of each sentence with the source sentence, in order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SimilarityResponse(pub Vec<f32>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_types_are_written_as_text_embeddings_inference_writes_them() {
        let t = ModelType::Embedding(EmbeddingModel { pooling: "mean".into() });
        assert_eq!(serde_json::to_value(t).unwrap(), serde_json::json!({"embedding": {"pooling": "mean"}}));
        let labels = ClassifierModel {
            id2label: [("0".to_string(), "LABEL_0".to_string())].into(),
            label2id: [("LABEL_0".to_string(), 0)].into(),
        };
        let v = serde_json::to_value(ModelType::Reranker(labels)).unwrap();
        assert_eq!(v, serde_json::json!({"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}));
    }

    #[test]
    fn parses_similarity_requests() {
        let r: SimilarityRequest = serde_json::from_str(
            r#"{"inputs": {"source_sentence": "a", "sentences": ["b", "c"]},
                "parameters": {"truncate": true, "prompt_name": "query"}}"#,
        )
        .unwrap();
        assert_eq!(r.inputs.sentences.0.len(), 2);
        assert_eq!(r.parameters.unwrap().truncate, Some(true));
        assert!(serde_json::from_str::<SimilarityRequest>(r#"{"inputs": {"source_sentence": "a"}}"#).is_err());
        for arrays in [
            r#"{"inputs": {"source_sentence": "a", "sentences": ["b"]}, "parameters": [null, null]}"#,
            r#"{"inputs": ["a", ["b"]]}"#,
        ] {
            assert!(serde_json::from_str::<SimilarityRequest>(arrays).is_err(), "{arrays}");
        }
        let r: SimilarityRequest =
            serde_json::from_str(r#"{"inputs": {"source_sentence": "a", "sentences": ["b"]}, "parameters": null}"#)
                .unwrap();
        assert!(r.parameters.is_none());
    }
}
