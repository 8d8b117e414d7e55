//! OpenAI-compatible `/v1/embeddings` and `/v1/models`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::models::KeepAlive;

pub use super::models::ModelState;

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
    /// `float` (default), `base64` (little-endian f32 bytes), or a quantized form as sentence-transformers'
    /// `quantize_embeddings` computes it: `int8`, `uint8` (one integer per dimension), `binary`, `ubinary` (one
    /// integer per 8 dimensions: the signs' bits, packed as numpy's `packbits`).
    #[serde(default)]
    pub encoding_format: Option<EncodingFormat>,
    /// For `int8` and `uint8`: the `[[min...], [max...]]` of each dimension to map onto the 256 levels (bulkhead
    /// extension; sentence-transformers' `ranges`). Without it they are the request's own minimum and maximum per
    /// dimension (so it needs two inputs at least), and the response says which were used.
    #[serde(default)]
    pub quantization_ranges: Option<QuantizationRanges>,
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
    /// How long the model stays loaded once idle after this request (models loaded on demand; Ollama's
    /// `keep_alive`): seconds or a duration such as `"5m"`; `0` unloads it after this request, negative never.
    #[serde(default)]
    pub keep_alive: Option<KeepAlive>,
    /// Answer sparse embeddings (SPLADE models): `data[].sparse_embedding` as `[{"index", "value"}]` instead of
    /// `data[].embedding` (bulkhead extension; texts only; default false).
    #[serde(default)]
    pub sparse: bool,
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

/// The per-dimension minimum and maximum of `int8` and `uint8` quantization: `[[min...], [max...]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QuantizationRanges(pub Vec<Vec<f32>>);

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
    /// The ranges `int8` and `uint8` used, `[[min...], [max...]]`, to send back with later requests so that their
    /// vectors share the same levels (bulkhead extension; only for those encodings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantization_ranges: Option<QuantizationRanges>,
}

impl EmbeddingsResponse {
    /// The answer holding `embeddings` (in input order, already encoded) of `model`, with the quantization ranges
    /// used, if any.
    pub fn new(
        model: String,
        embeddings: Vec<Embedding>,
        tokens: usize,
        quantization_ranges: Option<QuantizationRanges>,
    ) -> EmbeddingsResponse {
        let data = embeddings
            .into_iter()
            .enumerate()
            .map(|(index, embedding)| EmbeddingData { object: EmbeddingTag::Embedding, index, embedding })
            .collect();
        EmbeddingsResponse {
            object: ListTag::List,
            data,
            model,
            usage: Usage { prompt_tokens: tokens, total_tokens: tokens },
            quantization_ranges,
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

/// A vector as JSON numbers, as base64, or as integers (the quantized encodings).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Embedding {
    /// JSON numbers (`encoding_format: float`).
    Float(Vec<f32>),
    /// Base64 of the little-endian f32 bytes (`encoding_format: base64`).
    Base64(String),
    /// `int8` levels or `binary` packed bits.
    Int8(Vec<i8>),
    /// `uint8` levels or `ubinary` packed bits.
    Uint8(Vec<u8>),
}

// Written by hand: an array of integers is also an array of numbers, so the derived `oneOf` would match both.
impl utoipa::PartialSchema for Embedding {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder, ObjectBuilder, Type};
        let numbers = ArrayBuilder::new()
            .items(ObjectBuilder::new().schema_type(Type::Number))
            .description(Some("`float`: the values; `int8`, `uint8`, `binary`, `ubinary`: integers from -128 to 255"));
        let base64 =
            ObjectBuilder::new().schema_type(Type::String).description(Some("`base64`: the little-endian f32 bytes"));
        AnyOfBuilder::new().item(numbers).item(base64).into()
    }
}

impl ToSchema for Embedding {}

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
    /// Where it is in its lifecycle: `available` (loaded by the first request naming it), `loading`, `loaded`,
    /// `draining`, `failed`.
    pub state: ModelState,
    /// Loaded at start (`--model`): never unloaded for idleness or to make room.
    pub pinned: bool,
    /// Why its load failed (state `failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Resident memory of its workers (measured while loaded; the last measure once unloaded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resident_bytes: Option<u64>,
    /// Milliseconds its last load took (workers started, warmed up, first request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_ms: Option<f64>,
    /// Successful loads.
    pub loads: u64,
    /// Unloads, for any reason.
    pub unloads: u64,
    /// Unloads to make room for another model.
    pub evictions: u64,
    /// Unix seconds at which it is unloaded if no request comes (loaded on demand, finite keep-alive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<f64>,
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
