//! The report's section for an image-text model's vision tower (CLIP, SigLIP): single-image latency and images
//! per second at a batch on synthetic images preprocessed as `/v1/embeddings` preprocesses an image input, whether
//! the same images give the same vectors, resident memory per image, and the vectors' agreement with the first
//! unit's. The speed part is shared with the bench's JSON.

use serde::{Deserialize, Serialize};

use super::Memory;

/// Speed of the vision tower (the doctor's and the bench's), round trip to the worker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VisionSpeed {
    /// Sizes of the synthetic images before preprocessing (`WIDTHxHEIGHT`), sent in turn.
    pub image_sizes: Vec<String>,
    /// Side of the square model input, pixels.
    pub input_side: u32,
    /// Timed single-image predictions (after a first, untimed one).
    pub single_runs: usize,
    /// The first single image, round trip.
    pub first_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The vision tower's own time inside the worker (forward pass and pooling), median.
    pub engine_p50_ms: f64,
    /// Images per prediction of the batch measure.
    pub batch: usize,
    /// Timed predictions of that batch (after a first, untimed one).
    pub batch_runs: usize,
    pub batch_p50_ms: f64,
    /// Images per second at that batch (`batch * 1000 / mean round trip`).
    pub images_per_s: f64,
}

/// A unit's vision tower: speed, determinism, memory per image, agreement with the first unit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VisionReport {
    pub speed: VisionSpeed,
    /// Width of an image vector.
    pub dimensions: usize,
    /// Whether the synthetic images sent twice gave bit-identical vectors.
    pub deterministic: bool,
    /// Resident memory after each single-image prediction (one image per prediction).
    pub memory: Memory,
    /// Against the first unit of the chain that embedded the images (`None` on that unit itself).
    pub agreement: Option<VisionAgreement>,
    /// The vectors of the synthetic images, compared across units during the run (not part of the JSON).
    #[serde(skip)]
    pub vectors: Vec<Vec<f32>>,
}

/// One unit's image vectors against the first unit's, for the same synthetic images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionAgreement {
    pub reference_unit: String,
    /// Images compared.
    pub images: usize,
    /// The lowest cosine similarity of an image's vector with the reference's.
    pub min_cosine: f64,
    /// The largest difference of one vector component.
    pub max_abs_diff: f64,
}
