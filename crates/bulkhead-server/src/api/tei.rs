//! text-embeddings-inference compatible `/embed`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::models::KeepAlive;

use super::{Dimensions, EmbeddingModelName, PromptName, TextBatch};

/// `POST /embed`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    /// A text or texts.
    pub inputs: TeiInput,
    /// L2-normalise the vectors (default true, as text-embeddings-inference).
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub normalize: bool,
    /// Cut texts longer than the model's maximum instead of refusing them with 422 (default false).
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Which end of a text truncation keeps (default `Right`: the start is kept).
    #[serde(default)]
    pub truncation_direction: Option<TruncationDirection>,
    /// A named prompt of the model to prepend to every text.
    #[serde(default)]
    pub prompt_name: Option<PromptName>,
    /// A prompt text to prepend to every text (bulkhead extension; wins over `prompt_name`, as in sentence-transformers).
    #[serde(default)]
    pub prompt: Option<String>,
    /// Keep the first N values of each embedding (Matryoshka); then normalised when `normalize` is true.
    #[serde(default)]
    pub dimensions: Option<Dimensions>,
    /// The model (bulkhead extension; default: the first model the server was started with).
    #[serde(default)]
    pub model: Option<EmbeddingModelName>,
    /// How long the model stays loaded once idle after this request (models loaded on demand; Ollama's
    /// `keep_alive`): seconds or a duration such as `"5m"`; `0` unloads it after this request, negative never.
    #[serde(default)]
    pub keep_alive: Option<KeepAlive>,
}

fn yes() -> bool {
    true
}

/// The `inputs` of `/embed`.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(
    untagged,
    expecting = "`inputs` must be a string, an array of strings, or (image-text models) `{\"image\": URL}` items"
)]
pub enum TeiInput {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(TextBatch),
    /// One image of an image-text model (bulkhead extension).
    Image(TeiImage),
    /// Texts and images of an image-text model, each embedded by its own tower (bulkhead extension).
    Items(TeiItemBatch),
}

/// An image input of `/embed`: `{"image": "data:image/png;base64,..."}` (an `http(s)://` URL with
/// `--allow-image-urls`).
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeiImage {
    /// The image URL.
    pub image: String,
}

/// A text item of a mixed `/embed` input: `{"text": "..."}`.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeiText {
    /// The text.
    pub text: String,
}

/// One item of a mixed `/embed` input.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(untagged, expecting = "an item must be `{\"text\": ...}` or `{\"image\": URL}`")]
pub enum TeiItem {
    /// A text.
    Text(TeiText),
    /// An image.
    Image(TeiImage),
}

/// Several items of a mixed `/embed` input.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
pub struct TeiItemBatch(pub Vec<TeiItem>);

/// Which part of an over-long text truncation removes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
pub enum TruncationDirection {
    /// Remove the end (keep the start).
    #[default]
    Right,
    /// Remove the start (keep the end).
    Left,
}

/// The answer of `POST /embed`: one vector per text.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EmbedResponse(pub Vec<Vec<f32>>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_embeddings_inference_requests() {
        let r: EmbedRequest = serde_json::from_str(r#"{"inputs": "hi"}"#).unwrap();
        assert!(r.normalize && r.truncate.is_none() && r.inputs == TeiInput::Text("hi".into()));
        let r: EmbedRequest = serde_json::from_str(
            r#"{"inputs": ["a"], "normalize": false, "truncate": true, "truncation_direction": "Left",
                "prompt_name": "query", "dimensions": 4}"#,
        )
        .unwrap();
        assert_eq!(r.truncation_direction, Some(TruncationDirection::Left));
        assert_eq!(r.prompt_name, Some(PromptName("query".into())));
        let err = serde_json::from_str::<EmbedRequest>(r#"{"inputs": 3}"#).unwrap_err().to_string();
        assert!(err.contains("`inputs` must be a string, an array of strings"), "{err}");
        let r: EmbedRequest = serde_json::from_str(r#"{"inputs": {"image": "data:,"}}"#).unwrap();
        assert_eq!(r.inputs, TeiInput::Image(TeiImage { image: "data:,".into() }));
        let r: EmbedRequest = serde_json::from_str(r#"{"inputs": [{"text": "a"}, {"image": "data:,"}]}"#).unwrap();
        assert!(matches!(r.inputs, TeiInput::Items(items) if items.0.len() == 2));
        assert!(serde_json::from_str::<EmbedRequest>(r#"{"inputs": {"image": "x", "y": 1}}"#).is_err());
    }
}
