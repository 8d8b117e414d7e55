//! Image inputs of image-text models (CLIP, SigLIP): the content parts `/v1/embeddings` takes beside texts
//! (OpenAI's `{"type": "image_url", "image_url": {"url": ...}}`) and infinity's `POST /embeddings_image`.
//!
//! An image is a URL: a `data:image/...;base64,...` URL always; an `http(s)://` URL only when the server was started
//! with `--allow-image-urls`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::models::KeepAlive;

use super::EncodingFormat;

/// The name of an image-text model this server serves (texts and images in, vectors out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageModelName(pub String);

/// A content part, tagged by `type` (OpenAI's chat content parts).
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ContentPart {
    /// `{"type": "text", "text": ...}`.
    Text {
        /// The text.
        text: String,
    },
    /// `{"type": "image_url", "image_url": {"url": ...}}` (or `"image_url": "..."`).
    ImageUrl {
        /// The image.
        image_url: ImageUrl,
    },
}

/// An image URL, as an object `{"url", "detail"?}` or a bare string.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(untagged, expecting = "`image_url` must be an object `{\"url\": ...}` or a URL string")]
pub enum ImageUrl {
    /// `{"url": ..., "detail"?: ...}` (`detail` is accepted and ignored: the model's processor decides the size).
    Object {
        /// A `data:image/...;base64,...` URL (or `http(s)://` with `--allow-image-urls`).
        url: String,
        /// OpenAI's resolution hint (ignored).
        #[serde(default)]
        detail: Option<String>,
    },
    /// The URL itself.
    Url(String),
}

impl ImageUrl {
    /// The URL.
    pub fn url(&self) -> &str {
        match self {
            ImageUrl::Object { url, .. } | ImageUrl::Url(url) => url,
        }
    }
}

/// Several content parts (texts and images, each embedded by its own tower). Texts among images are text parts,
/// so that an array of plain strings is always a [`TextBatch`](super::TextBatch).
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
pub struct ItemBatch(pub Vec<ContentPart>);

/// `POST /embeddings_image` (infinity's shape).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageEmbeddingsRequest {
    /// One image URL or several: `data:image/...;base64,...` (or `http(s)://` with `--allow-image-urls`).
    pub input: ImageUrls,
    /// The model (default: the first image-text model the server serves).
    #[serde(default)]
    pub model: Option<ImageModelName>,
    /// `float` (default) or `base64` (little-endian f32 bytes).
    #[serde(default)]
    pub encoding_format: Option<EncodingFormat>,
    /// An end-user id (accepted and ignored).
    #[serde(default)]
    pub user: Option<String>,
    /// infinity's input modality (`image` only here).
    #[serde(default)]
    pub modality: Option<Modality>,
    /// How long the model stays loaded once idle after this request (models loaded on demand; Ollama's
    /// `keep_alive`): seconds or a duration such as `"5m"`; `0` unloads it after this request, negative never.
    #[serde(default)]
    pub keep_alive: Option<KeepAlive>,
}

/// The modality of `/embeddings_image` inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    /// Images.
    Image,
}

/// The `input` of `/embeddings_image`.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(untagged, expecting = "`input` must be an image URL or an array of image URLs")]
pub enum ImageUrls {
    /// One URL.
    One(String),
    /// Several URLs.
    Many(Vec<String>),
}

impl ImageUrls {
    /// The URLs, in order.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            ImageUrls::One(u) => vec![u],
            ImageUrls::Many(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_parse_into_texts_and_parts() {
        let items: ItemBatch = serde_json::from_str(
            r#"[{"type": "text", "text": "a dog"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}},
                {"type": "image_url", "image_url": "data:image/png;base64,BB"}]"#,
        )
        .unwrap();
        assert_eq!(items.0[0], ContentPart::Text { text: "a dog".into() });
        assert!(matches!(&items.0[1], ContentPart::ImageUrl { image_url } if image_url.url().ends_with("AA")));
        assert!(matches!(&items.0[2], ContentPart::ImageUrl { image_url } if image_url.url().ends_with("BB")));
        assert!(serde_json::from_str::<ItemBatch>(r#"["a cat", {"type": "text", "text": "x"}]"#).is_err());
        assert!(serde_json::from_str::<ContentPart>(r#"{"type": "audio", "x": 1}"#).is_err());
        assert!(serde_json::from_str::<ContentPart>(r#"{"type": "image_url"}"#).is_err());
        let r: ImageEmbeddingsRequest =
            serde_json::from_str(r#"{"input": "data:image/png;base64,AA", "modality": "image"}"#).unwrap();
        assert_eq!(r.input.into_vec().len(), 1);
        assert!(serde_json::from_str::<ImageEmbeddingsRequest>(r#"{"input": ["a"], "nope": 1}"#).is_err());
    }
}
