//! Ollama-compatible routes: `/api/embed`, the older `/api/embeddings`, `/api/tags`, `/api/show`, `/api/ps` and
//! `/api/version`, in the shapes the official `ollama` clients parse.
//!
//! As Ollama's own server, the request types ignore fields they do not know (clients send generation options the
//! embedding routes have no use for).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Dimensions;

/// The name of an embedding model as Ollama clients send it: a served name, or that name with the tag `:latest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OllamaModelName(pub String);

impl OllamaModelName {
    /// The served name: the name without a `:latest` tag.
    pub fn served(&self) -> &str {
        self.0.strip_suffix(":latest").unwrap_or(&self.0)
    }
}

pub use super::models::KeepAlive;

/// `POST /api/embed`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct OllamaEmbedRequest {
    /// The model.
    pub model: OllamaModelName,
    /// A text or texts (an empty array gives no embeddings, as Ollama does).
    pub input: OllamaInput,
    /// Cut texts longer than the model's maximum (default true, as Ollama); false refuses them with 422.
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Keep the first N values of each embedding, renormalised.
    #[serde(default)]
    pub dimensions: Option<Dimensions>,
    /// How long the model stays loaded once idle after this request (`0` unloads it; negative: for good).
    #[serde(default)]
    pub keep_alive: Option<KeepAlive>,
    /// Generation options: accepted and ignored (none applies to an embedding model).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub options: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The `input` of `/api/embed`.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(untagged, expecting = "`input` must be a string or an array of strings")]
pub enum OllamaInput {
    /// One text.
    Text(String),
    /// Several texts (possibly none).
    Texts(OllamaTexts),
}

/// The texts of `/api/embed`: up to `--max-inputs`, possibly none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OllamaTexts(pub Vec<String>);

/// The answer of `POST /api/embed`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OllamaEmbedResponse {
    /// The model, as the request named it.
    pub model: String,
    /// One L2-normalised vector per text.
    pub embeddings: Vec<Vec<f32>>,
    /// Nanoseconds from receiving the request to the answer.
    pub total_duration: u64,
    /// Nanoseconds spent loading the model: always 0, the model is loaded before the server listens.
    pub load_duration: u64,
    /// Tokens processed (special tokens included).
    pub prompt_eval_count: usize,
}

/// `POST /api/embeddings` (Ollama's older embedding route).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct OllamaEmbeddingsRequest {
    /// The model.
    pub model: OllamaModelName,
    /// The text (absent or empty: an empty embedding, as Ollama answers). Texts longer than the model's maximum
    /// are truncated.
    #[serde(default)]
    pub prompt: String,
    /// How long the model stays loaded once idle after this request (`0` unloads it; negative: for good).
    #[serde(default)]
    pub keep_alive: Option<KeepAlive>,
    /// Accepted and ignored.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub options: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The answer of `POST /api/embeddings`: the vector as the model computes it (not renormalised, as in Ollama).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OllamaEmbeddingsResponse {
    /// The vector.
    pub embedding: Vec<f32>,
}

/// What Ollama says about a model's files.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OllamaDetails {
    /// Always empty.
    pub parent_model: String,
    /// The weights' format: `safetensors` or `onnx`.
    pub format: String,
    /// The architecture (`model_type` of `config.json`: `bert`, `xlm-roberta`...).
    pub family: String,
    /// The same, as a list.
    pub families: Vec<String>,
    /// Parameters, as Ollama writes them (`22.7M`); empty when the weights do not say.
    pub parameter_size: String,
    /// The weight precision (`F32`, `F16`, `BF16`, `Q8_0` for int8), as the serving unit loaded it; empty while
    /// none serves.
    pub quantization_level: String,
}

/// One model of `GET /api/tags`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OllamaModel {
    /// `NAME:latest`.
    pub name: String,
    /// The same.
    pub model: String,
    /// When the weights file was last written (RFC 3339).
    pub modified_at: String,
    /// Bytes of the weights files.
    pub size: u64,
    /// A SHA-256 of the weights' sizes and their first and last MiB (hex): changes when the weights do.
    pub digest: String,
    /// Format, family, size, precision.
    pub details: OllamaDetails,
}

/// The answer of `GET /api/tags`: the served embedding models.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OllamaTags {
    /// Every served embedding model.
    pub models: Vec<OllamaModel>,
}

/// `POST /api/show`: `model` (or, from older clients, `name`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct OllamaShowRequest {
    /// The model.
    #[serde(default)]
    pub model: Option<OllamaModelName>,
    /// The model (older clients).
    #[serde(default)]
    pub name: Option<OllamaModelName>,
    /// Accepted and ignored.
    #[serde(default)]
    pub verbose: Option<bool>,
}

/// The answer of `POST /api/show`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OllamaShow {
    /// Always empty: the model comes from a folder, not a Modelfile.
    pub modelfile: String,
    /// Always empty.
    pub parameters: String,
    /// Always empty: an embedding model has no prompt template.
    pub template: String,
    /// Always empty.
    pub license: String,
    /// Format, family, size, precision.
    pub details: OllamaDetails,
    /// Ollama's keys: `general.architecture`, `general.parameter_count` (when known), `ARCH.context_length`,
    /// `ARCH.embedding_length`, `ARCH.pooling_type`.
    #[schema(value_type = Object)]
    pub model_info: BTreeMap<String, serde_json::Value>,
    /// `["embedding"]`.
    pub capabilities: Vec<String>,
    /// When the weights file was last written (RFC 3339).
    pub modified_at: String,
}

/// One model of `GET /api/ps`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OllamaRunning {
    /// `NAME:latest`.
    pub name: String,
    /// The same.
    pub model: String,
    /// Resident memory of the model's worker processes now, in bytes (measured, not estimated).
    pub size: u64,
    /// As in `/api/tags`.
    pub digest: String,
    /// Format, family, size, precision.
    pub details: OllamaDetails,
    /// When it is unloaded if no request comes (its keep-alive); a date far ahead for a model never unloaded for
    /// idleness (loaded at start, or a negative keep-alive).
    pub expires_at: String,
    /// `size` when the serving unit runs on a GPU (CUDA, TensorRT, ROCm, DirectML, Metal, CoreML), else 0, so
    /// that `ollama ps` shows where the model runs.
    pub size_vram: u64,
    /// The most tokens of one input.
    pub context_length: usize,
    /// The compute unit serving it (bulkhead extension; `null` while none serves).
    pub unit: Option<String>,
}

/// The answer of `GET /api/ps`: the embedding models in memory (those loaded now).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OllamaPs {
    /// Every served embedding model.
    pub models: Vec<OllamaRunning>,
}

/// The answer of `GET /api/version`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OllamaVersion {
    /// bulkhead's version.
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_ollama_client_sends() {
        let r: OllamaEmbedRequest = serde_json::from_str(
            r#"{"model": "m:latest", "input": ["a", "b"], "truncate": true, "keep_alive": "5m",
                "options": {"num_ctx": 512}, "dimensions": 8, "stream": false}"#,
        )
        .unwrap();
        assert_eq!(r.model.served(), "m");
        assert_eq!(r.keep_alive, Some(KeepAlive::Duration("5m".into())));
        assert!(matches!(r.input, OllamaInput::Texts(t) if t.0.len() == 2));
        let r: OllamaEmbedRequest = serde_json::from_str(r#"{"model": "m", "input": [], "keep_alive": 0}"#).unwrap();
        assert!(matches!(r.input, OllamaInput::Texts(t) if t.0.is_empty()));
        assert_eq!(r.model.served(), "m");
        let err = serde_json::from_str::<OllamaEmbedRequest>(r#"{"model": "m", "input": 3}"#).unwrap_err();
        assert!(err.to_string().contains("`input` must be a string"), "{err}");

        let e: OllamaEmbeddingsRequest = serde_json::from_str(r#"{"model": "m"}"#).unwrap();
        assert!(e.prompt.is_empty());
        let s: OllamaShowRequest = serde_json::from_str(r#"{"name": "m:latest"}"#).unwrap();
        assert_eq!(s.name.unwrap().served(), "m");
    }
}
