//! `POST /v1/segment`: promptable segmentation (SAM2). The request as JSON, or as multipart with the image in a
//! `file` part and the other fields as text parts (`points`, `point_labels` and `boxes` as JSON text).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::models::KeepAlive;

/// How each mask is encoded in the response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MaskFormat {
    /// COCO uncompressed run-length encoding (the default).
    #[default]
    Rle,
    /// An 8-bit greyscale PNG (foreground 255), base64.
    Png,
}

/// `POST /v1/segment` as JSON.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentRequest {
    /// The segmentation model (default: the first segmentation model the server was started with).
    #[serde(default)]
    pub model: Option<String>,
    /// The image: base64 of a PNG, JPEG, WebP, GIF or BMP file, or a `data:image/...;base64,` URL. Give this or
    /// `image_id`.
    #[serde(default)]
    pub image: Option<String>,
    /// The `image_id` of an earlier answer: the same image again without sending it (its embedding is reused).
    #[serde(default)]
    pub image_id: Option<String>,
    /// Prompt points `[x, y]` in pixels of the original image (x across, y down from the top-left corner).
    #[serde(default)]
    #[schema(value_type = Option<Vec<[f32; 2]>>)]
    pub points: Option<Vec<Vec<f32>>>,
    /// One label per point: 1 foreground (the default), 0 background.
    #[serde(default)]
    pub point_labels: Option<Vec<i64>>,
    /// At most one box `[x0, y0, x1, y1]` (top-left, bottom-right) in pixels of the original image.
    #[serde(default)]
    #[schema(value_type = Option<Vec<[f32; 4]>>)]
    pub boxes: Option<Vec<Vec<f32>>>,
    /// Three candidate masks (true, the default, as transformers' `Sam2Model`) or the single best one (false).
    #[serde(default)]
    pub multimask_output: Option<bool>,
    /// `rle` (default) or `png`.
    #[serde(default)]
    pub mask_format: Option<MaskFormat>,
    /// A mask prompt: an earlier answer's low-resolution logits for this image (an entry of its `low_res_logits`:
    /// base64 of little-endian f32, `low_res_side` squared), refined by this request's points or box.
    #[serde(default)]
    pub mask_input: Option<String>,
    /// Also answer each mask's low-resolution logits (`low_res_logits`), to send back later as `mask_input`.
    #[serde(default)]
    pub return_low_res_logits: Option<bool>,
    /// How long the model stays loaded once idle after this request (models loaded on demand; Ollama's
    /// `keep_alive`): seconds or a duration such as `"5m"`; `0` unloads it after this request, negative never.
    #[serde(default)]
    pub keep_alive: Option<KeepAlive>,
}

/// COCO uncompressed RLE: run lengths in column-major order, starting with a background run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Rle {
    /// `[height, width]`.
    pub size: [u32; 2],
    /// Run lengths.
    pub counts: Vec<u64>,
}

/// One mask at the original image size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SegmentMask {
    /// `mask_format` `rle`.
    Rle {
        /// The mask.
        rle: Rle,
    },
    /// `mask_format` `png`.
    Png {
        /// Base64 of an 8-bit greyscale PNG.
        png: String,
    },
}

/// The answer of `POST /v1/segment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SegmentResponse {
    /// The image's id: send it as `image_id` for further prompts on the same image.
    pub image_id: String,
    /// The original image width (after EXIF orientation).
    pub width: u32,
    /// The original image height.
    pub height: u32,
    /// The masks, best candidates in the model's order (3 with `multimask_output`, else 1).
    pub masks: Vec<SegmentMask>,
    /// The model's predicted IoU of each mask.
    pub iou_scores: Vec<f32>,
    /// Whether the image embedding was reused from an earlier request (the image encoder did not run).
    pub embedding_cached: bool,
    /// With `return_low_res_logits`: each mask's logits at the decoder's resolution, in the order of `masks` (base64
    /// of little-endian f32, `low_res_side` squared, row-major; a pixel is foreground above 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_res_logits: Option<Vec<String>>,
    /// With `return_low_res_logits`: the side of each low-resolution mask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_res_side: Option<usize>,
}
