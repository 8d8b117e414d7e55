//! The report's sections for models that take audio or images instead of text: a speech-to-text model's
//! transcriptions of the doctor's synthetic clip (real-time factor per stage, decoder tokens per second, the token
//! ids and their agreement with the first unit) and a segmentation model's image-encoder and click latency (masks
//! and their agreement with the first unit). The speed parts are shared with the bench's JSON.

use serde::{Deserialize, Serialize};

/// What kind of model was measured, which decides the report's sections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// A model that takes text (embedding, reranker, classifier, the text tower of an image-text model).
    #[default]
    Text,
    /// A speech-to-text model (Whisper, Qwen3-ASR).
    Speech,
    /// A promptable segmentation model (SAM2).
    Segmentation,
}

impl ModelKind {
    /// `text`, `speech` or `segmentation`.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Text => "text",
            ModelKind::Speech => "speech",
            ModelKind::Segmentation => "segmentation",
        }
    }
}

/// Speed of repeated transcriptions of one clip (the doctor's and the bench's).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SpeechSpeed {
    /// Seconds of audio in the clip.
    pub clip_seconds: f64,
    /// Timed transcriptions (after a first, untimed one).
    pub transcriptions: usize,
    /// The first transcription, round trip.
    pub first_ms: f64,
    /// Round trip of a transcription, median.
    pub p50_ms: f64,
    pub p95_ms: f64,
    /// Inside the worker, medians: PCM to log-mel features, the encoder, the decoder's steps.
    pub features_p50_ms: f64,
    pub encode_p50_ms: f64,
    pub generate_p50_ms: f64,
    /// Real-time factor: audio seconds per wall-clock second of the round trip at p50 (above 1: faster than real
    /// time).
    pub rtf: f64,
    /// The same per stage: audio seconds per second spent in that stage.
    pub rtf_features: f64,
    pub rtf_encode: f64,
    pub rtf_generate: f64,
    /// Tokens the decoder produced per transcription (segment tokens, timestamp tokens included).
    pub tokens: usize,
    /// Those tokens per second of the decoder's time (median over the runs).
    pub decoder_tokens_per_s: f64,
}

/// A speech unit's transcriptions: speed, what it wrote, and how it agrees with the first unit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpeechReport {
    pub speed: SpeechSpeed,
    /// The transcript of the first run.
    pub text: String,
    /// Its language (given or detected); `None` for an English-only model.
    pub language: Option<String>,
    /// Its token ids, segment after segment.
    pub token_ids: Vec<i64>,
    /// Whether every run wrote the same token ids as the first.
    pub deterministic: bool,
    /// Against the first unit of the chain that transcribed (`None` on that unit itself).
    pub agreement: Option<TokenAgreement>,
}

/// One unit's token ids against the first unit's, on the same clip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenAgreement {
    pub reference_unit: String,
    /// Token ids identical.
    pub identical: bool,
    /// The first position where they differ (`None` when identical).
    pub first_divergence: Option<usize>,
    pub tokens: usize,
    pub reference_tokens: usize,
    /// The reference's transcript.
    pub reference_text: String,
}

/// Latency of one kind of segmentation prediction.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepSpeed {
    /// Timed predictions (after a first, untimed one).
    pub runs: usize,
    /// The first, round trip.
    pub first_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    /// The graph's own time inside the worker (the image encoder, or the prompt encoder + mask decoder), median.
    pub engine_p50_ms: f64,
    /// Predictions per second (`1000 / mean round trip`).
    pub per_s: f64,
}

/// Speed of a segmentation model (the doctor's and the bench's): the image encoder on new images, clicks on a cached
/// image embedding.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SegmentSpeed {
    /// Side of the square model input, pixels.
    pub input_side: u32,
    /// A new image: the image encoder, then the decoder on one click.
    pub encoder: StepSpeed,
    /// A click on an image whose embedding the worker holds: the prompt encoder and the mask decoder.
    pub clicks: StepSpeed,
}

/// A segmentation unit: speed, the masks of the fixed prompt, and how they agree with the first unit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentReport {
    pub speed: SegmentSpeed,
    /// Masks answered for the fixed prompt (multimask: 3).
    pub masks: usize,
    /// Their predicted IoU scores.
    pub iou_scores: Vec<f32>,
    /// Share of foreground pixels of each low-resolution mask.
    pub foreground: Vec<f64>,
    /// Whether every click answered from the cached embedding (`false`: the worker asked for the image again).
    pub embedding_reused: bool,
    /// Against the first unit of the chain that segmented (`None` on that unit itself).
    pub agreement: Option<MaskAgreement>,
}

/// One unit's masks against the first unit's, for the same image and prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskAgreement {
    pub reference_unit: String,
    /// The lowest intersection over union of a mask (foreground: logit above 0) with the reference's same mask.
    pub min_mask_iou: f64,
    /// The largest difference of a predicted IoU score.
    pub max_iou_score_diff: f64,
    /// The largest difference of a mask logit.
    pub max_logit_diff: f64,
}
