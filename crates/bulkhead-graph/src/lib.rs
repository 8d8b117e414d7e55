//! Builds the ONNX graph of an embedding model directly from `config.json` + safetensors (one file or shards), so
//! Hugging Face folders run on ONNX Runtime without a Python export step. Architectures: BERT, XLM-RoBERTa, GTE
//! (`NewModel`), NomicBERT, ModernBERT and the Qwen3/Qwen2/Mistral/Llama decoders ([`supported_architectures`]).
//!
//! * [`build_cached`]: writes `cache_dir/<key>/model.onnx` (weights as ONNX external data pointing into a hard link
//!   of the safetensors file, or embedded when the cache is on another file system) and reuses it on later calls;
//! * [`export`]: writes one self-contained `.onnx` file (weights embedded), for `bulkhead export`;
//! * [`supported_architectures`]: what the builder accepts.
//! * [`build_tower_cached`], [`export_tower`]: the vision and text towers of two-tower image-text models (CLIP,
//!   SigLIP; [`TOWER_ARCHITECTURES`]), one graph each (`pixel_values` → `image_embeds`, `input_ids` +
//!   `attention_mask` → `text_embeds`), unnormalised as transformers returns them; [`tower_model_files`] finds the
//!   transformers folder in a sentence-transformers CLIP layout.
//!
//! SAM2 (`Sam2Model`) is built as two graphs, a vision encoder and a prompt encoder + mask decoder, by
//! [`sam2::build_sam2_cached`] / [`sam2::export_sam2`] (see [`sam2`]).
//!
//! A `*ForSequenceClassification` checkpoint (BERT, RoBERTa, XLM-RoBERTa, GTE, ModernBERT, Qwen3, Qwen2) gets its
//! classification head (`head`) and the output `logits` `[batch, labels]` instead of `last_hidden_state`. A SPLADE
//! model (a `BertForMaskedLM` with sentence-transformers' `SpladePooling`) gets its MLM head and the pooling
//! (`splade`): `logits` `[batch, vocab]`, the pooled sparse vector before sparsification.
//!
//! One module per architecture family (`bert`, `gte`, `nomic`, `modernbert`, `decoder`, `clip`, `siglip`; the
//! towers' API and shared encoder layer in `vision`) builds on shared pieces: the graph writer (`graph`), layers,
//! norms, attention and rotary embeddings (`layers`), config access (`config`) and the mapped weights (`weights`,
//! f16/bf16 widened exactly to f32). The graphs are written in the patterns ONNX Runtime's CPU optimiser fuses
//! (BERT: `EmbedLayerNormalization`, `Attention`, `SkipLayerNormalization`, `BiasGelu`); see `README.md` for the
//! fused operators per architecture and the measurements behind the choices.
//!
//! Speech models do not fit one graph: [`whisper`] writes Whisper as an encoder, a cross-attention key/value graph
//! and a decoder step with key/value caches ([`whisper::build_whisper_cached`]), cached the same way.
//! [`qwen3_asr`] writes Qwen3-ASR as an audio encoder and a decoder (prefill and steps) with key/value caches
//! ([`qwen3_asr::build_qwen3_asr_cached`]).
//!
//! # Architecture invariants
//!
//! * **It builds what it knows, or says what it does not:** an unknown architecture is an error listing the supported
//!   ones; every config or weights error names the file and the field or tensor; the graph computes in f32 (f16
//!   and bf16 weights are widened exactly).
//! * **A stale graph is never run:** a cached graph is keyed by the builder version, the options, which graph of the
//!   folder it is (a variant, a tower, one of Whisper's or SAM2's graphs), the config, the tokenizer and the weights'
//!   digest ([`graph_key`]), and written under a temporary name, then renamed.
//! * **No engine here:** it writes ONNX protobuf itself and never runs a graph; ONNX Runtime appears only in its tests.
#![deny(missing_docs)]

mod arch;
mod bert;
mod cache;
mod clip;
mod config;
mod decoder;
mod graph;
mod gte;
mod head;
mod layers;
mod modernbert;
mod nomic;
mod proto;
pub mod quant;
pub mod qwen3_asr;
pub mod sam2;
mod siglip;
mod splade;
mod vision;
mod weights;
pub mod whisper;

use std::path::{Path, PathBuf};

use bulkhead_core::ModelFiles;

pub use cache::{build_cached, build_cached_variant, BUILDER_VERSION};
pub use quant::{Int8Form, LinearGroup, LinearLayer, QuantPlan};
pub use vision::{
    build_tower_cached, export_tower, tower_model_files, tower_spec, Tower, TowerSpec, TOWER_ARCHITECTURES,
};

/// Which graph of a model to write.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Variant<'p> {
    /// The float32 graph.
    #[default]
    Float,
    /// The linear layers the plan names in int8 (see [`quant`]).
    Int8(&'p QuantPlan),
    /// The float32 graph with one extra output per linear layer's input activation, `absmax:<layer>` (the largest
    /// magnitude per input channel over the batch: [`quant::probe_name`]), for calibration.
    Probe,
}

impl Variant<'_> {
    /// Bytes that tell variants apart in cache keys (empty for the float graph, whose keys predate variants).
    pub(crate) fn digest(&self) -> Vec<u8> {
        match self {
            Variant::Float => vec![],
            Variant::Int8(plan) => [b"int8\0".as_slice(), &plan.digest()].concat(),
            Variant::Probe => b"probe".to_vec(),
        }
    }
}

/// Input shapes of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShapeMode {
    /// `[batch, sequence]` symbolic: one graph for every batch.
    Dynamic,
    /// Fixed `[batch, seq]` (buckets for Core ML's Neural Engine, which requires static input shapes); callers pad
    /// to the bucket and mask the padding.
    Static {
        /// Batch size.
        batch: usize,
        /// Sequence length.
        seq: usize,
    },
}

/// How to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildOptions {
    /// Input shapes.
    pub shape: ShapeMode,
    /// ONNX opset of the graph, 11 to 21. The default, [`DEFAULT_OPSET`] (12), is the one ONNX Runtime fuses
    /// best: its attention fusion does not match the opset-13 forms of `Unsqueeze`/`Cast` nor the opset-17
    /// `LayerNormalization` on the query path.
    pub opset: i64,
}

/// The opset that ONNX Runtime fuses fully (see [`BuildOptions::opset`]).
pub const DEFAULT_OPSET: i64 = 12;

/// ONNX Runtime graph optimisers worth switching off when a built graph runs on the CPU execution provider
/// (`SessionBuilder::with_disabled_optimizers`; CPU only: other providers have fast fused kernels).
///
/// ONNX Runtime's CPU `SkipLayerNormalization` kernel (1.31) is a scalar loop with a division per element, about
/// three times slower than the `Add` + `LayerNormalization` it replaces; without that one fusion the built graph
/// keeps `EmbedLayerNormalization`, `Attention` and `BiasGelu` and runs about 5 % faster (all-MiniLM-L6-v2 on a
/// 2-core AVX2 EPYC, batch 32: from 0.93–0.97× to 0.98–1.02× the throughput of the torch export; see `README.md`).
/// The embeddings are unchanged (tested against the reference).
pub const ORT_CPU_DISABLED_OPTIMIZERS: &str = "SkipLayerNormFusion";

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions { shape: ShapeMode::Dynamic, opset: DEFAULT_OPSET }
    }
}

/// Where the weights of a built graph live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsStorage {
    /// ONNX external data pointing into a hard link of `model.safetensors` beside `model.onnx`.
    HardLink,
    /// Copied into `model.onnx`.
    Embedded,
}

/// A graph on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltGraph {
    /// The `model.onnx` file.
    pub path: PathBuf,
    /// Whether it came from the cache.
    pub cache_hit: bool,
    /// Time spent in [`build_cached`], in milliseconds (building, or only looking up on a hit).
    pub build_ms: f64,
    /// The cache key (the folder name under the cache directory).
    pub key: String,
    /// Where the weights are.
    pub storage: WeightsStorage,
}

/// Why a graph could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// The architecture is not one the builder knows.
    #[error(
        "architecture {architecture} (model_type {model_type}) is not supported by the ONNX graph builder \
         (supported: {supported}); {hint}"
    )]
    UnsupportedArchitecture {
        /// `architectures[0]` of config.json.
        architecture: String,
        /// `model_type` of config.json.
        model_type: String,
        /// The supported list.
        supported: String,
        /// What can run it instead.
        hint: String,
    },
    /// A BERT variant the builder does not express (activation, position embeddings).
    #[error("{path}: {reason}")]
    Unsupported {
        /// The config file.
        path: PathBuf,
        /// What and what to do.
        reason: String,
    },
    /// config.json is missing a field or is malformed.
    #[error("{path}: {reason}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The safetensors file is corrupt or lacks a tensor the config implies, or the tokenizer has ids past the
    /// embedding table.
    #[error("{path}: {reason}")]
    Weights {
        /// The safetensors file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The model folder lacks a file.
    #[error("{model}: no {file}; the ONNX graph builder needs config.json and model.safetensors (or its shards)")]
    MissingFile {
        /// The model's folder.
        model: PathBuf,
        /// The missing file.
        file: &'static str,
    },
    /// Bad [`BuildOptions`].
    #[error("invalid build options: {0}")]
    Options(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Architectures (`architectures[0]` of config.json) the builder accepts; configs without `architectures` are
/// accepted by `model_type` (`bert`, `xlm-roberta`, `roberta`, `new`, `nomic_bert`, `modernbert`, `qwen3`, `qwen2`,
/// `mistral`, `llama`).
pub fn supported_architectures() -> &'static [&'static str] {
    config::SUPPORTED_ARCHITECTURES
}

/// Writes a self-contained ONNX file (weights embedded) for `model` to `output`, atomically.
pub fn export(model: &ModelFiles, opts: &BuildOptions, output: &Path) -> Result<(), GraphError> {
    export_variant(model, opts, Variant::Float, output)
}

/// The key under which [`build_cached_variant`] keeps the graph `variant` of `model` (builder version, options,
/// config, tokenizer and weights digest): also a key for anything derived from that graph.
pub fn graph_key(model: &ModelFiles, opts: &BuildOptions, variant: Variant<'_>) -> Result<String, GraphError> {
    cache::cache_key(model, opts, variant)
}

/// The linear layers of `model`'s graph grouped by the activation they read, in graph order (what the int8
/// sensitivity search quantizes one group at a time).
pub fn linear_groups(model: &ModelFiles, opts: &BuildOptions) -> Result<Vec<LinearGroup>, GraphError> {
    let inputs = Inputs::open(model, opts)?;
    let mut g = graph::Graph::new(&inputs.weights, opts.opset, &graph::Storage::Embedded);
    inputs.arch.build(&mut g)?;
    Ok(quant::groups(&g.rec.linears))
}

/// The largest magnitude of each column of each linear layer's weight (`[din]` per layer), keyed by layer name:
/// the weight side of SmoothQuant's factors.
pub fn weight_column_absmax(
    model: &ModelFiles,
    opts: &BuildOptions,
) -> Result<std::collections::BTreeMap<String, Vec<f32>>, GraphError> {
    let inputs = Inputs::open(model, opts)?;
    let mut out = std::collections::BTreeMap::new();
    for group in linear_groups(model, opts)? {
        for l in &group.layers {
            let t = inputs.weights.get(&format!("{}.weight", l.name), &[l.dout, l.din])?;
            let bytes = t.converted_f32();
            let bytes = bytes.as_deref().unwrap_or(t.bytes);
            let mut col = vec![0f32; l.din];
            for (k, c) in bytes.chunks_exact(4).enumerate() {
                let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]).abs();
                let i = k % l.din;
                col[i] = col[i].max(v);
            }
            out.insert(l.name.clone(), col);
        }
    }
    Ok(out)
}

/// [`export`] of a [`Variant`]: a self-contained ONNX file, written atomically.
pub fn export_variant(
    model: &ModelFiles,
    opts: &BuildOptions,
    variant: Variant<'_>,
    output: &Path,
) -> Result<(), GraphError> {
    let inputs = Inputs::open(model, opts)?;
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model.onnx".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = inputs.write(opts, variant, &graph::Storage::Embedded, &tmp).and_then(|()| {
        std::fs::rename(&tmp, output).map_err(|e| GraphError::Io { path: output.to_path_buf(), source: e })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The parsed config and mapped weights of a model.
pub(crate) struct Inputs {
    config_path: PathBuf,
    arch: arch::Arch,
    /// The classification head of a `*ForSequenceClassification` checkpoint.
    head: Option<head::Head>,
    pub(crate) weights: weights::Weights,
}

impl Inputs {
    pub(crate) fn open(model: &ModelFiles, opts: &BuildOptions) -> Result<Inputs, GraphError> {
        check_options(opts)?;
        let folder = || model.source.clone();
        let config_path =
            model.config.clone().ok_or(GraphError::MissingFile { model: folder(), file: "config.json" })?;
        if model.safetensors_shards.is_empty() {
            return Err(GraphError::MissingFile { model: folder(), file: "model.safetensors" });
        }
        let config_text = std::fs::read_to_string(&config_path)
            .map_err(|e| GraphError::Io { path: config_path.clone(), source: e })?;
        let cfg = config::Cfg::parse(&config_path, &config_text)?;
        let arch = arch::Arch::parse(&cfg)?;
        let head = match &model.task {
            bulkhead_core::ModelTask::SparseEmbedding(spec) => {
                Some(head::Head::Splade(splade::Splade::parse(&cfg, cfg.family()?, spec)?))
            }
            _ => head::Head::parse(&cfg, cfg.family()?)?,
        };
        if let ShapeMode::Static { seq, .. } = opts.shape {
            if seq > arch.max_tokens() {
                return Err(GraphError::Options(format!(
                    "static sequence length {seq} exceeds the {} positions of the model",
                    arch.max_tokens()
                )));
            }
        }
        let weights =
            weights::Weights::open(&model.safetensors_shards, model.safetensors_index.as_deref(), arch.anchors())?;
        check_tokenizer(model, &arch, &weights)?;
        Ok(Inputs { config_path, arch, head, weights })
    }

    /// Builds and writes the model to `path` (not atomically: callers write to a temporary name).
    pub(crate) fn write(
        &self,
        opts: &BuildOptions,
        variant: Variant<'_>,
        storage: &graph::Storage,
        path: &Path,
    ) -> Result<(), GraphError> {
        use std::io::Write;
        let mut g = graph::Graph::new(&self.weights, opts.opset, storage);
        match variant {
            Variant::Float => {}
            Variant::Int8(plan) => g = g.with_plan(Some(plan)),
            Variant::Probe => g = g.probing(),
        }
        self.arch.build(&mut g)?;
        let output = match &self.head {
            Some(head) => {
                head.build(&mut g, "last_hidden_state", self.arch.hidden())?;
                graph::Output::Logits(head.labels())
            }
            None => graph::Output::Hidden(self.arch.hidden()),
        };
        let model = g.finish(self.arch.name(), self.arch.inputs(), output, opts.shape, BUILDER_VERSION);
        let io = |e| GraphError::Io { path: path.to_path_buf(), source: e };
        let file = std::fs::File::create(path).map_err(io)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        model.write_to(&mut w).map_err(io)?;
        w.flush().map_err(io)?;
        tracing::debug!(config = %self.config_path.display(), arch = self.arch.name(), out = %path.display(),
            "ONNX graph written");
        Ok(())
    }
}

/// A tokenizer that produces ids past the embedding table would index out of it at run time: refuse the model
/// with both sizes instead.
fn check_tokenizer(model: &ModelFiles, arch: &arch::Arch, weights: &weights::Weights) -> Result<(), GraphError> {
    let Some(tok) = &model.tokenizer else { return Ok(()) };
    let (table, rows) = arch.embedding_table();
    // A tokenizer.json that does not parse is reported by the tokenizer loader, with its own message.
    let Ok(ids) = bulkhead_core::tokenizer_vocab_size(tok) else { return Ok(()) };
    if ids > rows {
        let name = weights.full_name(table);
        return Err(GraphError::Weights {
            path: tok.clone(),
            reason: format!(
                "the tokenizer has {ids} token ids but the embedding table `{name}` has {rows} rows; the tokenizer \
                 does not belong to these weights"
            ),
        });
    }
    Ok(())
}

fn check_options(opts: &BuildOptions) -> Result<(), GraphError> {
    if !(11..=21).contains(&opts.opset) {
        return Err(GraphError::Options(format!("opset {} is outside the supported 11..=21", opts.opset)));
    }
    if let ShapeMode::Static { batch, seq } = opts.shape {
        if batch == 0 || seq == 0 || batch > 1 << 16 || seq > 1 << 16 {
            return Err(GraphError::Options(format!("static shape [{batch}, {seq}] must be positive and sane")));
        }
    }
    Ok(())
}
