//! OpenAI-compatible `/v1/embeddings` and `/v1/models`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use super::EncodingFormat;
use super::{Dimensions, EmbeddingModelName, PromptName, TextBatch, TokenBatch, TokenRow};

/// `POST /v1/embeddings`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    /// What to embed: a text, texts, one input as token ids, or several inputs as token ids.
    pub input: EmbeddingInput,
    /// The model (default: the first model the server was started with).
    #[serde(default)]
    pub model: Option<EmbeddingModelName>,
    /// `float` (default) or `base64` (little-endian f32 bytes).
    #[serde(default)]
    pub encoding_format: Option<EncodingFormat>,
    /// Keep the first N values of each embedding (Matryoshka), renormalised when the model normalises.
    #[serde(default)]
    pub dimensions: Option<Dimensions>,
    /// An end-user id (accepted and ignored).
    #[serde(default)]
    pub user: Option<String>,
    /// A named prompt of the model to prepend to every text (bulkhead and text-embeddings-inference extension).
    #[serde(default)]
    pub prompt_name: Option<PromptName>,
    /// A prompt text to prepend to every text (bulkhead extension; wins over `prompt_name`, as in sentence-transformers).
    #[serde(default)]
    pub prompt: Option<String>,
}

/// The `input` of an embeddings request.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(
    untagged,
    expecting = "`input` must be a string, an array of strings, an array of token ids, an array of token-id arrays, \
                 or an array of texts and image parts ({\"type\": \"image_url\", \"image_url\": {\"url\": ...}})"
)]
pub enum EmbeddingInput {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(TextBatch),
    /// One input as token ids.
    Tokens(TokenRow),
    /// Several inputs as token ids.
    TokenRows(TokenBatch),
    /// Texts and images (content parts `{"type": "image_url", "image_url": {"url": ...}}`) of an image-text
    /// model, each embedded by its own tower.
    Items(super::images::ItemBatch),
    /// One content part (an image or a text).
    Part(super::images::ContentPart),
}

/// The answer of `POST /v1/embeddings`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EmbeddingsResponse {
    /// Always `list`.
    pub object: ListTag,
    /// One entry per input, in input order.
    pub data: Vec<EmbeddingData>,
    /// The model that computed them.
    pub model: String,
    /// Tokens processed.
    pub usage: Usage,
}

impl EmbeddingsResponse {
    /// The answer for `vectors` (in input order) of `model`, as JSON numbers or base64.
    pub fn new(model: String, vectors: Vec<Vec<f32>>, tokens: usize, encoding: EncodingFormat) -> EmbeddingsResponse {
        use base64::Engine as _;
        let data = vectors
            .into_iter()
            .enumerate()
            .map(|(index, v)| {
                let embedding = match encoding {
                    EncodingFormat::Base64 => {
                        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                        Embedding::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
                    }
                    EncodingFormat::Float => Embedding::Float(v),
                };
                EmbeddingData { object: EmbeddingTag::Embedding, index, embedding }
            })
            .collect();
        EmbeddingsResponse {
            object: ListTag::List,
            data,
            model,
            usage: Usage { prompt_tokens: tokens, total_tokens: tokens },
        }
    }
}

/// The `object` of a list.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListTag {
    /// `list`.
    List,
}

/// The `object` of an embedding.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingTag {
    /// `embedding`.
    Embedding,
}

/// One embedding.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EmbeddingData {
    /// Always `embedding`.
    pub object: EmbeddingTag,
    /// The position of its input.
    pub index: usize,
    /// The vector.
    pub embedding: Embedding,
}

/// A vector as JSON numbers or as base64.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Embedding {
    /// JSON numbers (`encoding_format: float`).
    Float(Vec<f32>),
    /// Base64 of the little-endian f32 bytes (`encoding_format: base64`).
    Base64(String),
}

/// Tokens processed by a request.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Usage {
    /// Input tokens (prompts and special tokens included).
    pub prompt_tokens: usize,
    /// The same: embeddings produce no output tokens.
    pub total_tokens: usize,
}

/// The answer of `GET /v1/models`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: ListTag,
    /// Every served model.
    pub data: Vec<ModelCard>,
}

/// The `object` of a model card.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelTag {
    /// `model`.
    Model,
}

/// One served model.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelCard {
    /// Its name.
    pub id: String,
    /// Always `model`.
    pub object: ModelTag,
    /// When it was loaded (Unix seconds).
    pub created: u64,
    /// Always `bulkhead`.
    pub owned_by: String,
    /// What it takes: `text`, `image` (an image-text model takes both), or `tensor` (a KServe tensor model).
    pub inputs: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> Result<EmbeddingInput, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn every_input_shape_parses_into_its_variant() {
        assert_eq!(input(r#""hi""#).unwrap(), EmbeddingInput::Text("hi".into()));
        assert!(matches!(input(r#"["a", "b"]"#).unwrap(), EmbeddingInput::Texts(t) if t.0.len() == 2));
        assert!(matches!(input("[101, 102]").unwrap(), EmbeddingInput::Tokens(r) if r.to_ids() == [101, 102]));
        assert!(matches!(input("[[101], [7, 102]]").unwrap(), EmbeddingInput::TokenRows(b) if b.0.len() == 2));
        let err = input("42").unwrap_err().to_string();
        assert!(err.contains("`input` must be a string"), "{err}");
        assert!(input(r#"["a", 1]"#).is_err() && input("[-1]").is_err() && input("[[1], \"a\"]").is_err());
        // JSON Schema's integers include 7.0; 7.5 is no token id.
        assert!(matches!(input("[[101.0, 7]]").unwrap(), EmbeddingInput::TokenRows(b) if b.0[0].to_ids() == [101, 7]));
        assert!(input("[7.5]").is_err() && input("[4294967296]").is_err());
    }

    #[test]
    fn unknown_fields_and_formats_are_refused() {
        let ok: EmbeddingsRequest =
            serde_json::from_str(r#"{"input": "x", "encoding_format": "base64", "dimensions": 8}"#).unwrap();
        assert_eq!(ok.encoding_format, Some(EncodingFormat::Base64));
        assert_eq!(ok.dimensions, Some(Dimensions(8)));
        assert!(serde_json::from_str::<EmbeddingsRequest>(r#"{"input": "x", "encoding_format": "hex"}"#).is_err());
        assert!(serde_json::from_str::<EmbeddingsRequest>(r#"{"input": "x", "nope": 1}"#).is_err());
    }
}
