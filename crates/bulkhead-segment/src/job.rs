//! What a worker is asked to segment and what it answers: the `Payload::Segment` / `Answer::Segment` contents of
//! the supervisor's protocol (serialised with postcard, so every field is plain data).

use serde::{Deserialize, Serialize};

/// The model-input image: the original resized by the model's preprocessor (SAM2: to its square input, 8-bit),
/// not yet normalised. Sent as 8-bit RGB rather than `float32` pixel values: a quarter of the bytes, and the
/// worker's normalisation is the same arithmetic transformers uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Interleaved RGB bytes, rows top to bottom (`height * width * 3`).
    pub rgb: Vec<u8>,
}

/// A prompt in model-input coordinates (what the decoder graph takes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Prompt {
    /// Points `[x, y]`.
    pub points: Vec<[f32; 2]>,
    /// One label per point: 1 foreground, 0 background.
    pub labels: Vec<i64>,
    /// At most one box `[x0, y0, x1, y1]`.
    pub boxes: Vec<[f32; 4]>,
    /// An earlier answer's low-resolution mask logits (`side x side`, the decoder's mask size), to refine it.
    pub mask: Option<Vec<f32>>,
}

/// One segmentation request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentJob {
    /// The image's content id ([`image_id`](crate::image_id)): the embedding cache key.
    pub image_id: String,
    /// The image, when the sender has it at hand; without it a worker that has no embedding for `image_id`
    /// answers [`SegmentOutput::NeedImage`].
    pub image: Option<InputImage>,
    /// The prompt.
    pub prompt: Prompt,
    /// Three candidate masks (`true`) or the single best one (`false`, with SAM2's stability-based choice).
    pub multimask: bool,
}

/// The masks of one request, as the decoder computed them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Masks {
    /// Masks answered (3 for multimask, else 1).
    pub count: usize,
    /// Side of each low-resolution mask (a quarter of the model input side).
    pub side: usize,
    /// `count x side x side` mask logits (a pixel is foreground above 0).
    pub logits: Vec<f32>,
    /// The predicted IoU of each mask.
    pub iou_scores: Vec<f32>,
    /// The object score logit (positive: an object is present).
    pub object_score: f32,
    /// Milliseconds the image encoder took (0 when the embedding came from the cache).
    pub encode_ms: f64,
    /// Milliseconds the prompt encoder + mask decoder took.
    pub decode_ms: f64,
    /// Whether the image embedding came from the cache.
    pub embedding_cached: bool,
}

/// A worker's answer to a [`SegmentJob`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SegmentOutput {
    /// The masks.
    Masks(Masks),
    /// This worker holds no embedding for the job's `image_id` and the job carried no image: send it again with
    /// the image (a fresh or recycled worker, or an evicted embedding).
    NeedImage,
}
