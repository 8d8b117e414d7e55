//! The quantized model folder: `model.onnx` (self-contained: int8 weights and the float32 rest), the source's
//! tokenizer, config and sentence-transformers files (so every command serves the folder like the original), and
//! the manifest `bulkhead-quantization.json`. Written in a temporary sibling folder and renamed into place.

use std::path::{Path, PathBuf};

use bulkhead_core::ModelFiles;
use bulkhead_graph::{BuildOptions, Int8Form, QuantPlan, Variant};
use serde::{Deserialize, Serialize};

use crate::measure::Accuracy;
use crate::search::{GroupSensitivity, Search, Step};
use crate::{QuantizeError, QuantizeOptions};

/// The manifest's file name.
pub use bulkhead_core::quantized::MANIFEST_FILE;

/// What is int8 in a quantized folder and what it measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub format: u32,
    /// The tool and graph builder that wrote it.
    pub producer: String,
    /// The source folder.
    pub source: String,
    /// `int8` (weights symmetric per output channel, activations dynamic per tensor).
    pub precision: String,
    /// The int8 operator form.
    pub operators: Int8Form,
    /// The floor asked for.
    pub min_cosine_target: f64,
    /// Whether the written configuration meets it (false only with `--force`).
    pub meets_target: bool,
    /// Linear layers in int8.
    pub int8_layers: Vec<String>,
    /// Layer groups kept in float32, costliest first.
    pub fp32_groups: Vec<String>,
    /// Groups that use SmoothQuant, and its α.
    pub smoothquant: SmoothQuant,
    /// Groups that keep their outlier input channels in float32, and how outliers were chosen.
    #[serde(default)]
    pub outliers: Outliers,
    /// Weight elements of the int8 layers and of all linear layers.
    pub int8_params: usize,
    /// Weight elements of all linear layers.
    pub linear_params: usize,
    /// Rows per forward pass during the measurements.
    pub batch: usize,
    /// Accuracy on the calibration set (what the search saw).
    pub calibration: Measured,
    /// Accuracy on the held-out set (never seen by the search).
    pub heldout: Measured,
    /// Every configuration the search measured.
    pub path: Vec<Step>,
    /// Every group's cost alone.
    pub sensitivity: Vec<GroupSensitivity>,
}

/// SmoothQuant in the written graph.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SmoothQuant {
    /// α (`None`: not tried).
    pub alpha: Option<f32>,
    /// The int8 groups that use it.
    pub groups: Vec<String>,
}

/// Outlier channels in the written graph.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outliers {
    /// How channels were chosen (`None`: not tried).
    pub options: Option<crate::OutlierOptions>,
    /// The int8 groups that use them.
    pub groups: Vec<String>,
}

/// An accuracy and the set it was measured on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    /// `built-in` or the file.
    pub texts: String,
    /// How many texts.
    pub count: usize,
    /// Against the float32 graph of the same model.
    pub accuracy: Accuracy,
}

impl Manifest {
    pub(crate) fn new(
        model: &ModelFiles,
        opts: &QuantizeOptions,
        search: &Search,
        pick: usize,
        heldout: Accuracy,
        calibration_count: usize,
        heldout_count: usize,
    ) -> Manifest {
        let step = &search.path[pick];
        let calib_name = opts.calibration.as_ref().map_or("built-in".to_string(), |p| p.display().to_string());
        Manifest {
            format: 1,
            producer: format!(
                "bulkhead-quantize {} (bulkhead-graph {})",
                env!("CARGO_PKG_VERSION"),
                bulkhead_graph::BUILDER_VERSION
            ),
            source: model.source.display().to_string(),
            precision: "int8".into(),
            operators: opts.form,
            min_cosine_target: opts.min_cosine,
            meets_target: step.calibration.min_cosine >= opts.min_cosine,
            int8_layers: step.plan.int8.iter().cloned().collect(),
            fp32_groups: step.fp32_groups.clone(),
            smoothquant: SmoothQuant { alpha: opts.smooth_alpha, groups: step.smoothed_groups.clone() },
            outliers: Outliers { options: opts.outliers, groups: step.outlier_groups.clone() },
            int8_params: step.int8_params,
            linear_params: search.linear_params,
            batch: opts.batch,
            calibration: Measured { texts: calib_name, count: calibration_count, accuracy: step.calibration },
            heldout: Measured { texts: "built-in".into(), count: heldout_count, accuracy: heldout },
            path: search.path.clone(),
            sensitivity: search.sensitivity.clone(),
        }
    }

    /// Reads the manifest of a quantized folder, if it has one.
    pub fn read(folder: &Path) -> Option<Manifest> {
        let text = std::fs::read_to_string(folder.join(MANIFEST_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// The output must be a new folder or an empty one: quantizing never mixes its files with others.
pub(crate) fn check_output(output: &Path) -> Result<(), QuantizeError> {
    match std::fs::read_dir(output).map(|mut entries| entries.next().is_some()) {
        Ok(true) => Err(QuantizeError::Usage(format!(
            "--output {}: the folder exists and is not empty; give a new or empty folder",
            output.display()
        ))),
        Ok(false) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(QuantizeError::Io { path: output.to_path_buf(), source: e }),
    }
}

/// Files of the source folder that are not weights: copied as they are (tokenizer, config, pooling...).
fn is_weights(name: &str) -> bool {
    [".safetensors", ".bin", ".onnx", ".onnx_data", ".pt", ".pth", ".h5", ".msgpack", ".ot", ".gguf"]
        .iter()
        .any(|e| name.ends_with(e))
        || name == "model.safetensors.index.json"
        || name.starts_with('.')
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), QuantizeError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| QuantizeError::Io { path: p, source: e }
    };
    std::fs::create_dir_all(to).map_err(io(to))?;
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if is_weights(&name) || name == "onnx" {
            continue;
        }
        if path.is_dir() {
            copy_tree(&path, &to.join(&name))?;
        } else if path.is_file() {
            std::fs::copy(&path, to.join(&name)).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// Writes the folder: the int8 graph of `plan`, the source's other files, the manifest.
pub(crate) fn write(
    model: &ModelFiles,
    plan: &QuantPlan,
    manifest: &Manifest,
    output: &Path,
) -> Result<(), QuantizeError> {
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "int8".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| {
        let root = if model.source.is_dir() { model.source.clone() } else { parent.clone() };
        copy_tree(&root, &tmp)?;
        bulkhead_graph::export_variant(model, &BuildOptions::default(), Variant::Int8(plan), &tmp.join("model.onnx"))?;
        let json = serde_json::to_vec_pretty(manifest).expect("the manifest serialises");
        let path = tmp.join(MANIFEST_FILE);
        std::fs::write(&path, json).map_err(|e| QuantizeError::Io { path, source: e })?;
        // An empty output folder is replaced.
        let _ = std::fs::remove_dir(output);
        std::fs::rename(&tmp, output).map_err(|e| QuantizeError::Io { path: output.to_path_buf(), source: e })
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}
