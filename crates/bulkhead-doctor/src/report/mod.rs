//! The doctor's report: the stable JSON schema (`bulkhead.doctor/1`, documented field by field in docs/doctor.md)
//! that the terminal and HTML renderers read. Every field is always present (`null` when not measured), so a
//! consumer can rely on the shape.

use std::collections::BTreeMap;

use bulkhead_core::Precision;
use serde::{Deserialize, Serialize};

mod codes;
mod media;
mod vision;

pub use codes::{Availability, Branch, CompiledCache, CrashPhase, LoadErrorKind, Severity, Verdict};
pub use media::{
    MaskAgreement, ModelKind, SegmentReport, SegmentSpeed, SpeechReport, SpeechSpeed, StepSpeed, TokenAgreement,
};
pub use vision::{VisionAgreement, VisionReport, VisionSpeed};

/// The schema identifier; bumped on any incompatible change.
pub const SCHEMA: &str = "bulkhead.doctor/1";

/// The whole diagnosis.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The bulkhead version that measured.
    pub bulkhead_version: String,
    /// The model and the static checks of its files.
    pub model: ModelReport,
    /// The machine.
    pub machine: Machine,
    /// What was measured, and how much.
    pub settings: Settings,
    /// One entry per unit of the chain, in chain order.
    pub units: Vec<UnitReport>,
    /// The unit whose outputs the others were compared with (the most exact: fp32 on the CPU), if any.
    pub reference: Option<Reference>,
    /// The recommendation for `BULKHEAD_COMPUTE_UNITS`.
    pub recommendation: Recommendation,
}

/// A finding: one branch of the diagnosis tree (docs/doctor.md) with what was observed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Finding {
    /// The branch of the diagnosis tree.
    pub branch: Branch,
    /// How serious it is.
    pub severity: Severity,
    /// What was observed, with the numbers.
    pub message: String,
}

impl Finding {
    pub fn new(branch: Branch, severity: Severity, message: impl Into<String>) -> Finding {
        Finding { branch, severity, message: message.into() }
    }
}

/// The model and its files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelReport {
    pub name: String,
    pub source: String,
    /// `onnx`, `safetensors` or `onnx+safetensors`.
    pub format: String,
    pub architecture: Option<String>,
    pub model_type: Option<String>,
    pub pooling: String,
    pub normalize: bool,
    pub max_seq_length: usize,
    pub files: Vec<FileCheck>,
    /// Bytes of the weight files (the largest that a unit loads).
    pub weights_bytes: u64,
    pub onnx: Option<OnnxSummary>,
    pub safetensors: Option<SafetensorsSummary>,
    /// Whether any weights file is quantized (int8) or half precision (fp16, bf16).
    pub quantized: bool,
    /// The accuracy against float32 that `bulkhead quantize` measured, for a folder it wrote.
    pub int8_accuracy: Option<bulkhead_core::quantized::Int8Accuracy>,
    pub findings: Vec<Finding>,
}

/// One file of the model folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileCheck {
    /// `config`, `tokenizer`, `safetensors` or `onnx`.
    pub role: String,
    pub path: String,
    pub bytes: u64,
    pub readable: bool,
    pub error: Option<String>,
}

/// What the ONNX protobuf says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OnnxSummary {
    pub ir_version: u64,
    pub opsets: Vec<Opset>,
    pub producer: String,
    pub nodes: usize,
    pub op_types: BTreeMap<String, usize>,
    /// `fp32`, `fp16`, `bf16`, `int8` or `unknown`, from the initializers' element types
    /// ([`Precision::of_weights`]).
    pub precision: Precision,
    /// The parse error when the file is not a valid ONNX model.
    pub error: Option<String>,
}

/// One imported opset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Opset {
    /// `""` is the default ONNX domain.
    pub domain: String,
    pub version: u64,
}

/// What the safetensors header says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SafetensorsSummary {
    pub tensors: usize,
    pub parameters: u64,
    /// Parameter count per dtype (`F32`, `F16`, `BF16`, `I8`...).
    pub dtypes: BTreeMap<String, u64>,
    /// `fp32`, `fp16`, `bf16`, `int8` or `unknown`, from the parameter counts ([`Precision::of_weights`]).
    pub precision: Precision,
    pub error: Option<String>,
}

/// The machine the doctor ran on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub os: String,
    pub arch: String,
    pub cpus: usize,
    pub memory_total_bytes: Option<u64>,
    pub memory_available_bytes: Option<u64>,
    /// The ONNX Runtime library loaded (`onnxruntime 1.31.1 (/path)`), or why none.
    pub onnxruntime: Option<String>,
}

/// What was measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// What the model takes (`text`, `speech`, `segmentation`): which sections the report has.
    #[serde(default)]
    pub kind: ModelKind,
    pub chain: String,
    pub batch_sizes: Vec<usize>,
    pub iterations: usize,
    pub predictions: usize,
    pub seq_lengths: Vec<usize>,
    pub probes: usize,
    pub memory_budget_mb: u64,
    pub load_timeout_s: u64,
    pub predict_timeout_s: u64,
    /// `BULKHEAD_FAULTS` rules that were active (fault injection).
    pub faults: serde_json::Value,
}

/// Everything measured on one unit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitReport {
    pub unit: String,
    pub verdict: Verdict,
    /// Why the verdict, with the numbers.
    pub evidence: Vec<String>,
    /// Whether the unit can run here at all (before any load), with the reason.
    pub availability: Availability,
    pub availability_reason: Option<String>,
    pub session: Option<SessionInfo>,
    pub placement: Option<Placement>,
    pub load: Option<LoadReport>,
    pub load_error: Option<LoadError>,
    pub crash: Option<Crash>,
    pub latency: Vec<LatencyRow>,
    pub shapes: Option<Shapes>,
    pub memory: Option<Memory>,
    pub accuracy: Option<Accuracy>,
    /// A speech-to-text model's transcriptions of the synthetic clip.
    #[serde(default)]
    pub speech: Option<SpeechReport>,
    /// A segmentation model's encoder and click latency and masks.
    #[serde(default)]
    pub segmentation: Option<SegmentReport>,
    /// An image-text model's vision tower on synthetic images.
    #[serde(default)]
    pub vision: Option<VisionReport>,
    pub findings: Vec<Finding>,
}

impl UnitReport {
    pub fn new(unit: String) -> UnitReport {
        UnitReport {
            unit,
            verdict: Verdict::Ok,
            evidence: vec![],
            availability: Availability::Usable,
            availability_reason: None,
            session: None,
            placement: None,
            load: None,
            load_error: None,
            crash: None,
            latency: vec![],
            shapes: None,
            memory: None,
            accuracy: None,
            speech: None,
            segmentation: None,
            vision: None,
            findings: vec![],
        }
    }
}

/// What really ran the session (from the worker's `SessionReport`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The unit that actually ran (as the worker reported it).
    pub unit: String,
    pub runtime: String,
    pub model_file: String,
    pub precision: Precision,
    pub hidden_size: usize,
    pub notes: Vec<String>,
}

/// Node placement per execution provider (ONNX Runtime's graph assignment).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Placement {
    /// `true` when the engine reported per-node placement; `false` for engines that run the whole graph on the
    /// unit's device (candle).
    pub reported: bool,
    pub total_nodes: usize,
    /// Nodes on the unit's own execution provider.
    pub on_unit_nodes: usize,
    /// Nodes that fell back to the CPU execution provider (0 for CPU units, by definition).
    pub fallback_nodes: usize,
    /// Operator types (and counts) that fell back to the CPU.
    pub fallback_op_types: BTreeMap<String, usize>,
    pub providers: Vec<ProviderNodes>,
}

/// Nodes of one execution provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderNodes {
    pub provider: String,
    pub nodes: usize,
    pub op_types: BTreeMap<String, usize>,
}

/// Load times: a cold load (empty compiled-model cache) and a second, cached load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReport {
    pub cold: LoadTiming,
    pub cached: Option<LoadTiming>,
    /// The compiled-model cache this unit uses.
    pub cache: CompiledCache,
    /// Whether the cold load built (missed) and the cached load hit, from the engine's own notes.
    pub cold_cache_hit: Option<bool>,
    pub cached_cache_hit: Option<bool>,
    /// Where the user's cache lives (`BULKHEAD_CACHE_DIR`, default `~/.cache/bulkhead`).
    pub cache_dir: Option<String>,
    /// Resident memory of the worker once loaded and warmed up.
    pub rss_after_load_bytes: u64,
    /// The worker's warm-up: median latency per shape, measured inside the worker.
    pub warmup: Vec<WarmupRow>,
}

/// One load, split in stages (wall-clock, from the doctor's side).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadTiming {
    /// Spawn to the worker's handshake.
    pub process_ms: f64,
    /// Handshake to `Loaded` (tokenizer, session creation, graph build on a cache miss).
    pub session_ms: f64,
    /// `Loaded` to `Ready` (warm-up forward passes).
    pub warmup_ms: f64,
    pub total_ms: f64,
}

/// A warm-up shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WarmupRow {
    pub batch: usize,
    pub seq: usize,
    pub ms: f64,
}

/// Why the model did not load on this unit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadError {
    /// The worker's classification.
    pub kind: LoadErrorKind,
    /// The exact error.
    pub reason: String,
    /// The branch of the diagnosis tree it belongs to (`1a`, `1b`, `1c`, `5a`).
    pub branch: Branch,
}

/// A worker that died or hung.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Crash {
    /// Where the worker was.
    pub phase: CrashPhase,
    /// What it was doing, in words (`prediction 12 of the memory run`).
    pub during: String,
    pub signal: Option<String>,
    pub exit_code: Option<i32>,
    /// `true` when it stopped answering and the doctor killed it after the timeout.
    pub hung: bool,
    pub stderr_tail: String,
}

/// Latency and throughput at one batch size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyRow {
    pub batch: usize,
    /// Padded sequence length of the batch.
    pub seq: usize,
    pub iterations: usize,
    /// The first prediction of this shape (not part of the percentiles).
    pub first_ms: f64,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub mean_ms: f64,
    /// Median time inside the engine (forward pass, pooling), as the worker measured it.
    pub engine_p50_ms: f64,
    /// Median of (round trip - engine time) per prediction: what is lost around the forward pass (pipes,
    /// scheduling, anything the worker does besides the engine).
    pub overhead_p50_ms: f64,
    /// Minimum engine time.
    pub engine_min_ms: f64,
    /// Inputs per second at this batch size (`batch / mean`).
    pub throughput_per_s: f64,
}

/// Latency across input lengths (batch 1): dynamic shapes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shapes {
    pub rows: Vec<ShapeRow>,
    /// The first length measured once more at the end: a spike there means the unit recompiles on shape changes.
    pub revisit_seq: usize,
    pub revisit_ms: f64,
    /// Lengths whose first prediction spiked.
    pub spikes: usize,
    pub recompiles_suspected: bool,
    /// Least-squares slope of the median latency over the token count.
    pub ms_per_token: f64,
    pub recommendation: Option<String>,
}

/// One input length.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShapeRow {
    pub seq: usize,
    pub first_ms: f64,
    pub p50_ms: f64,
    pub spike: bool,
}

/// Resident memory over many predictions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Memory {
    pub predictions: usize,
    pub batch: usize,
    pub rss_start_bytes: u64,
    pub rss_end_bytes: u64,
    /// Resident memory after each prediction (bytes).
    pub rss_bytes: Vec<u64>,
    /// Least-squares slope over the second half of the run (after allocator warm-up), in bytes per prediction.
    pub slope_bytes_per_prediction: f64,
    pub slope_mib_per_prediction: f64,
    /// Allowed growth before a recycle.
    pub budget_mb: u64,
    /// Recycle the worker every this many predictions to keep growth under the budget (`null`: no material growth,
    /// below 1/16 MiB per prediction).
    pub recycle_every: Option<u64>,
}

/// This unit's outputs against the reference unit's on the fixed probe set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accuracy {
    pub reference_unit: String,
    pub probes: usize,
    pub min_cosine: f64,
    pub mean_cosine: f64,
    pub max_abs_diff: f64,
    /// This unit's weight precision.
    pub precision: Precision,
    /// Whether that precision is reduced (int8, fp16, bf16), so outputs are expected to differ.
    pub quantized: bool,
}

/// The reference of the accuracy comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reference {
    pub unit: String,
    /// The model the reference ran (the diagnosed model, or `--reference`).
    pub model: String,
    pub precision: Precision,
    /// `true` when the reference unit is one of the chain's units.
    pub in_chain: bool,
}

/// The recommended chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recommendation {
    /// The value for `BULKHEAD_COMPUTE_UNITS` (empty when no unit is usable).
    pub compute_units: String,
    /// Why this order, and what each unit needs (recycling, buckets).
    pub notes: Vec<String>,
}
