//! int8 graphs with a measured accuracy floor.
//!
//! `bulkhead quantize` (and `serve --precision int8`) build the graph of a Hugging Face folder with its linear
//! layers in int8 (weights quantized here, symmetric per output channel; activations quantized dynamically by ONNX
//! Runtime; see [`bulkhead_graph::quant`]), choosing **by measurement** which layers stay in float32:
//!
//! * [`texts`]: the built-in calibration and held-out sets, and `--calibration FILE`;
//! * [`measure`]: embeddings through bulkhead's own pipeline, cosine and nearest-neighbour agreement against float32;
//! * [`search`]: the per-group sensitivity search and the path from all-int8 back towards float32;
//! * [`folder`]: the output folder (self-contained `model.onnx`, the tokenizer and pooling files, and the manifest
//!   `bulkhead-quantization.json` with what is int8 and the accuracy measured on the held-out set).
//!
//! # Architecture invariants
//!
//! * **Nothing is written unless a configuration meets the floor** (`--min-cosine`), or with `--force`, which the
//!   manifest records (`meets_target: false`); the folder appears under its name only once complete.
//! * **The held-out set is never seen by the search**: it measures the written configuration only.
//! * **One manifest type:** the manifest is [`bulkhead_core::quantized::Manifest`] with this crate's [`Record`]
//!   flattened in, so what the quantizer writes is what the doctor and `--precision int8` read.
//! * **ONNX Runtime runs only in the process that quantizes:** `serve --precision int8` starts a child
//!   `bulkhead quantize` rather than quantizing in the server.
#![deny(missing_docs)]

pub mod folder;
pub mod measure;
pub mod search;
pub mod texts;

use std::path::{Path, PathBuf};

use bulkhead_core::ModelFiles;
use bulkhead_graph::{Int8Form, Variant};

pub use folder::{Manifest, Record, MANIFEST_FILE};
pub use measure::{compare, Accuracy, Evaluator};
pub use search::{search, OutlierOptions, Search, SearchOptions, Step, Treatment};

/// The default accuracy floor: the lowest cosine against float32 of any text.
pub const DEFAULT_MIN_COSINE: f64 = 0.999;

/// The SmoothQuant migration strength `--smoothquant-alpha` suggests (the paper's default for most models).
/// SmoothQuant is off by default: on BERT-style (post-norm) encoders its `Mul` cannot be folded into the norm before
/// it, and measured side by side on all-MiniLM-L6-v2 the configuration meeting the floor with it was slower than the
/// one without (1.09x vs 1.18x fp32), while outlier channels in float32 fix the layers it fixes and those it makes
/// worse (the MLP outputs).
pub const DEFAULT_SMOOTH_ALPHA: f32 = 0.5;

/// Rows per forward pass while measuring: activations are quantized per tensor, over the whole batch, so accuracy
/// is measured at a serving-sized batch.
pub const DEFAULT_BATCH: usize = 32;

/// Why quantizing failed.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// The calibration file is unusable.
    #[error("--calibration {path}: {reason}")]
    Calibration {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The model cannot be quantized.
    #[error("{0}")]
    Model(String),
    /// The graph builder refused the model.
    #[error(transparent)]
    Graph(#[from] bulkhead_graph::GraphError),
    /// ONNX Runtime failed.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// No configuration meets the floor.
    #[error(
        "no int8 configuration meets --min-cosine {target}: the closest keeps {fp32} of {groups} layer groups in \
         float32 and reaches a worst-text cosine of {closest:.5} on the calibration set; nothing was written (lower \
         --min-cosine, or pass --force to write the closest)"
    )]
    Unmet {
        /// The floor asked for.
        target: f64,
        /// The closest worst-text cosine.
        closest: f64,
        /// Groups the closest configuration keeps in float32.
        fp32: usize,
        /// All groups.
        groups: usize,
    },
    /// Bad options.
    #[error("{0}")]
    Usage(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What to quantize and how.
#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    /// The accuracy floor ([`DEFAULT_MIN_COSINE`]).
    pub min_cosine: f64,
    /// The user's calibration texts (`None`: the built-in set).
    pub calibration: Option<PathBuf>,
    /// Write the closest configuration when none meets the floor.
    pub force: bool,
    /// SmoothQuant's α (`None`, the default: off).
    pub smooth_alpha: Option<f32>,
    /// Outlier channels kept in float32 (`None`: off; on by default).
    pub outliers: Option<OutlierOptions>,
    /// The int8 operators.
    pub form: Int8Form,
    /// Rows per forward pass while measuring.
    pub batch: usize,
    /// ONNX Runtime intra-op threads (0: its default).
    pub threads: usize,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            min_cosine: DEFAULT_MIN_COSINE,
            calibration: None,
            force: false,
            smooth_alpha: None,
            outliers: Some(OutlierOptions::default()),
            form: Int8Form::Fused,
            batch: DEFAULT_BATCH,
            threads: 0,
        }
    }
}

impl QuantizeOptions {
    /// Checks the options and reads the calibration file (what [`quantize`] refuses before measuring anything).
    pub fn check(&self) -> Result<(), QuantizeError> {
        if !(self.min_cosine > 0.0 && self.min_cosine <= 1.0) {
            return Err(QuantizeError::Usage(format!(
                "--min-cosine {} is outside (0, 1]; the default is {DEFAULT_MIN_COSINE}",
                self.min_cosine
            )));
        }
        if let Some(a) = self.smooth_alpha {
            if !(0.0..=1.0).contains(&a) {
                return Err(QuantizeError::Usage(format!("SmoothQuant alpha {a} is outside [0, 1]")));
            }
        }
        if let Some(o) = self.outliers {
            if !(o.ratio.is_finite() && o.ratio > 1.0 && o.max_fraction > 0.0 && o.max_fraction <= 0.5) {
                return Err(QuantizeError::Usage(format!(
                    "outlier channels: ratio {} must be above 1 and max fraction {} in (0, 0.5]",
                    o.ratio, o.max_fraction
                )));
            }
        }
        if let Some(p) = &self.calibration {
            texts::read_calibration(p)?;
        }
        Ok(())
    }
}

/// What [`quantize`] did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The manifest written beside the model.
    pub manifest: Manifest,
    /// The search behind it.
    pub search: Search,
}

/// Searches the int8 configuration of `model` and writes it to `output` (a new or empty folder) with its manifest.
pub fn quantize(model: &ModelFiles, opts: &QuantizeOptions, output: &Path) -> Result<Outcome, QuantizeError> {
    opts.check()?;
    folder::check_output(output)?;
    let calibration = match &opts.calibration {
        Some(p) => texts::read_calibration(p)?,
        None => texts::builtin_calibration(),
    };
    let heldout = texts::builtin_heldout();
    let ev = Evaluator::new(model, opts.batch, opts.threads)?;
    let (calib_rows, held_rows) = (ev.tokenize(&calibration)?, ev.tokenize(&heldout)?);
    let calib_ref = ev.embed(Variant::Float, &calib_rows)?;
    let search_opts = SearchOptions {
        min_cosine: opts.min_cosine,
        smooth_alpha: opts.smooth_alpha,
        outliers: opts.outliers,
        form: opts.form,
    };
    let found = search(&ev, &calib_rows, &calib_ref, &search_opts)?;
    let pick = match found.chosen {
        Some(i) => i,
        None if opts.force => found.closest(),
        None => {
            let c = &found.path[found.closest()];
            return Err(QuantizeError::Unmet {
                target: opts.min_cosine,
                closest: c.calibration.min_cosine,
                fp32: c.fp32_groups.len(),
                groups: found.sensitivity.len(),
            });
        }
    };
    let step = &found.path[pick];
    let held_ref = ev.embed(Variant::Float, &held_rows)?;
    let held = compare(&ev.embed(Variant::Int8(&step.plan), &held_rows)?, &held_ref);
    let manifest = folder::manifest(model, opts, &found, pick, held, calibration.len(), heldout.len());
    folder::write(ev.model(), &step.plan, &manifest, output)?;
    Ok(Outcome { manifest, search: found })
}

/// The folder under `cache_dir` where `serve --precision int8` keeps the quantized form of `model` made with
/// `opts`: keyed by the float graph's key (builder version, config, tokenizer, weights) and every option that
/// changes the result (floor, calibration file contents, SmoothQuant, outliers, operators, batch).
pub fn cache_entry(model: &ModelFiles, opts: &QuantizeOptions, cache_dir: &Path) -> Result<PathBuf, QuantizeError> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(bulkhead_graph::graph_key(model, &bulkhead_graph::BuildOptions::default(), Variant::Float)?);
    h.update(env!("CARGO_PKG_VERSION"));
    h.update(format!(
        "{:?} {:?} {:?} {:?} {}",
        opts.min_cosine, opts.smooth_alpha, opts.outliers, opts.form, opts.batch
    ));
    if let Some(p) = &opts.calibration {
        h.update(
            std::fs::read(p)
                .map_err(|e| QuantizeError::Calibration { path: p.clone(), reason: format!("cannot read it: {e}") })?,
        );
    }
    let key: String = h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect();
    Ok(cache_dir.join(key))
}
