//! The engine boundary: a tiny, synchronous trait pair that each engine crate implements.
//!
//! An [`Engine`] turns a model and a [`Unit`] into a [`Session`]; a session runs forward passes on token batches.
//! Everything above (tokenization, pooling, batching, supervision) is engine-neutral. An engine with its own Whisper
//! encoder-decoder also returns a [`WhisperSession`] from [`Engine::load_whisper`] (the others leave that to graphs).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::model::ModelFiles;
use crate::precision::Precision;
use crate::tensor::{NamedTensor, Tensor, TensorSpec, TokenBatch};
use crate::unit::Unit;

/// Whether a unit can run on this machine with this build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum Availability {
    /// The unit can be tried.
    Usable,
    /// The unit is known but this build lacks it (cargo feature off).
    NotCompiled(String),
    /// The unit is in this build but the machine cannot run it (no device, no library support).
    Unusable(String),
}

/// How many graph nodes one execution provider was assigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlacement {
    /// The provider, e.g. `CPUExecutionProvider`.
    pub provider: String,
    /// Number of nodes it runs.
    pub nodes: usize,
    /// Node count per operator type.
    pub op_types: BTreeMap<String, usize>,
}

/// What a session's compiled-model cache did on this load (ONNX Runtime on a safetensors folder runs the graph
/// bulkhead-graph builds and caches on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphCache {
    /// The graph was found in the cache.
    Hit,
    /// The graph was built (and stored).
    Built,
}

/// What really runs a loaded session: the facts a user needs to trust the unit label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionReport {
    /// The unit the session was created for.
    pub unit: Unit,
    /// Engine and version, e.g. `onnxruntime 1.31.1` or `candle 0.11`.
    pub runtime: String,
    /// The weights file the session was built from.
    pub model_file: String,
    /// Weight precision.
    pub precision: Precision,
    /// Node placement per execution provider (empty when the engine has no such notion).
    pub placement: Vec<NodePlacement>,
    /// Output width (embedding dimensions for encoder models).
    pub hidden_size: usize,
    /// Free-form notes (fallbacks inside the engine, options applied).
    pub notes: Vec<String>,
    /// What the compiled-model cache did (`None`: the session uses no such cache).
    pub graph_cache: Option<GraphCache>,
}

impl SessionReport {
    /// Fraction of graph nodes assigned to a provider other than the CPU one (1.0 when there is no placement info
    /// and the unit is not a CPU unit; 0.0 for CPU units).
    pub fn accelerated_fraction(&self) -> f64 {
        let total: usize = self.placement.iter().map(|p| p.nodes).sum();
        if total == 0 {
            return if self.unit.is_cpu() { 0.0 } else { 1.0 };
        }
        let cpu: usize = self.placement.iter().filter(|p| p.provider == "CPUExecutionProvider").map(|p| p.nodes).sum();
        (total - cpu) as f64 / total as f64
    }
}

/// An inference engine: creates sessions for units of its kind.
pub trait Engine: Send + Sync {
    /// Whether `unit` can be tried here. Must be cheap and must not load a model.
    fn availability(&self, unit: &Unit) -> Availability;

    /// The runtime and its version for `unit`, e.g. `onnxruntime 1.31.1` (keys the crash history: an upgraded
    /// runtime gets a fresh chance). Must not load a model.
    fn runtime(&self, unit: &Unit) -> String {
        let _ = unit;
        "unknown".to_string()
    }

    /// Loads `model` on `unit`. Errors say what failed, naming the file.
    fn load(&self, model: &ModelFiles, unit: &Unit) -> Result<Box<dyn Session>, EngineError>;

    /// Loads `model` (see [`ModelFiles::is_tensor_model`]) on `unit` as a plain graph: named tensors in, named
    /// tensors out. Engines that run only embedding models keep the default, which says so.
    fn load_graph(&self, model: &ModelFiles, unit: &Unit) -> Result<Box<dyn GraphSession>, EngineError> {
        let _ = model;
        Err(EngineError::Unsupported {
            unit: unit.to_string(),
            reason: "this engine runs only embedding models (a tokenizer beside the weights); run other ONNX \
                     models on an ort: unit"
                .into(),
        })
    }

    /// Loads the Whisper checkpoint `model` on `unit` as the engine's own encoder-decoder, or `None` when the
    /// engine has none (the caller then builds graphs for [`Engine::load_graph`]). The default is `None`.
    fn load_whisper(&self, model: &ModelFiles, unit: &Unit) -> Option<Result<Box<dyn WhisperSession>, EngineError>> {
        let _ = (model, unit);
        None
    }
}

/// A Whisper encoder-decoder run natively by an engine: the encoder on one window of log-mel features, and the
/// decoder one step at a time over the key/value caches the session keeps between steps.
pub trait WhisperSession: Send {
    /// What runs the decoder.
    fn report(&self) -> &SessionReport;

    /// What runs the encoder (the decoder's report unless they differ).
    fn encoder_report(&self) -> &SessionReport {
        self.report()
    }

    /// Runs the encoder on one window `[mel_bins, frames]` (row-major); returns `[positions, d_model]`.
    fn encode(&mut self, features: &Tensor) -> Result<Tensor, EngineError>;

    /// Starts a decoding over `encoded` (`[positions, d_model]`, from [`WhisperSession::encode`]): the
    /// cross-attention keys and values computed once, the self-attention caches emptied.
    fn start(&mut self, encoded: &Tensor) -> Result<(), EngineError>;

    /// Feeds `ids` after the tokens already cached and returns the logits `[vocab]` of the last position.
    fn step(&mut self, ids: &[i64]) -> Result<Vec<f32>, EngineError>;
}

/// A model without a tokenizer loaded on one unit: any graph, named tensors in and out.
pub trait GraphSession: Send {
    /// What really runs this session.
    fn report(&self) -> &SessionReport;

    /// The graph inputs, in order.
    fn inputs(&self) -> &[TensorSpec];

    /// The graph outputs, in order.
    fn outputs(&self) -> &[TensorSpec];

    /// Runs the graph on `inputs` (every graph input, by name; checked against [`GraphSession::inputs`]) and returns
    /// every output.
    fn run(&mut self, inputs: &[NamedTensor]) -> Result<Vec<NamedTensor>, EngineError>;
}

/// A loaded model on one unit.
pub trait Session: Send {
    /// What really runs this session.
    fn report(&self) -> &SessionReport;

    /// Runs a forward pass. Returns `[batch, seq, hidden]` token states or `[batch, hidden]` pooled embeddings.
    fn forward(&mut self, batch: &TokenBatch) -> Result<Tensor, EngineError>;
}
