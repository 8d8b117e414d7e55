//! The quantized model folder: `model.onnx` (self-contained: int8 weights and the float32 rest), the source's
//! tokenizer, config and sentence-transformers files (so every command serves the folder like the original), and
//! the manifest `bulkhead-quantization.json`. Written in a temporary sibling folder and renamed into place.

use std::path::{Path, PathBuf};

use bulkhead_core::{ModelFiles, Precision};
use bulkhead_graph::{BuildOptions, Int8Form, QuantPlan, Variant};
use serde::{Deserialize, Serialize};

use crate::measure::Accuracy;
use crate::search::{GroupSensitivity, Search, Step};
use crate::{QuantizeError, QuantizeOptions};

pub use bulkhead_core::quantized::{Measured, MANIFEST_FILE};

/// The manifest of a quantized folder: the fields every reader shares ([`bulkhead_core::quantized::Manifest`]) and,
/// flattened into the same JSON object, the quantizer's [`Record`].
pub type Manifest = bulkhead_core::quantized::Manifest<Record>;

/// What the quantizer records beyond the shared fields: which layers are int8 and in which form, and the search that
/// chose them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The int8 operator form.
    pub operators: Int8Form,
    /// Linear layers in int8.
    pub int8_layers: Vec<String>,
    /// Layer groups kept in float32, costliest first.
    pub fp32_groups: Vec<String>,
    /// Groups that use SmoothQuant, and its α.
    pub smoothquant: SmoothQuant,
    /// Groups that keep their outlier input channels in float32, and how outliers were chosen.
    #[serde(default)]
    pub outliers: Outliers,
    /// Every configuration the search measured.
    pub path: Vec<Step>,
    /// Every group's cost alone.
    pub sensitivity: Vec<GroupSensitivity>,
}

/// SmoothQuant in the written graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmoothQuant {
    /// α (`None`: not tried).
    pub alpha: Option<f32>,
    /// The int8 groups that use it.
    pub groups: Vec<String>,
}

/// Outlier channels in the written graph.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outliers {
    /// How channels were chosen (`None`: not tried).
    pub options: Option<crate::OutlierOptions>,
    /// The int8 groups that use them.
    pub groups: Vec<String>,
}

/// The manifest of the configuration `pick` of `search`, with the held-out accuracy measured for it.
pub(crate) fn manifest(
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
        format: bulkhead_core::quantized::FORMAT,
        producer: format!(
            "bulkhead-quantize {} (bulkhead-graph {})",
            env!("CARGO_PKG_VERSION"),
            bulkhead_graph::BUILDER_VERSION
        ),
        source: model.source.display().to_string(),
        precision: Precision::Int8,
        min_cosine_target: opts.min_cosine,
        meets_target: step.calibration.min_cosine >= opts.min_cosine,
        int8_params: step.int8_params,
        linear_params: search.linear_params,
        batch: opts.batch,
        calibration: Measured { texts: calib_name, count: calibration_count, accuracy: step.calibration },
        heldout: Measured { texts: "built-in".into(), count: heldout_count, accuracy: heldout },
        record: Record {
            operators: opts.form,
            int8_layers: step.plan.int8.iter().cloned().collect(),
            fp32_groups: step.fp32_groups.clone(),
            smoothquant: SmoothQuant { alpha: opts.smooth_alpha, groups: step.smoothed_groups.clone() },
            outliers: Outliers { options: opts.outliers, groups: step.outlier_groups.clone() },
            path: search.path.clone(),
            sensitivity: search.sensitivity.clone(),
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::{Step, Treatment};

    // Literal values: serde_json's default float parsing is best-effort in the last bit (its `float_roundtrip`
    // feature is off), so a computed value such as 0.9964999999999999 may read back as 0.9965.
    fn accuracy(min_cosine: f64) -> Accuracy {
        Accuracy { min_cosine, mean_cosine: 0.9975, top10_overlap: 0.98 }
    }

    fn sample() -> Manifest {
        let step = |fp32: &[&str]| Step {
            int8_groups: 4 - fp32.len(),
            int8_params: 1000 * (4 - fp32.len()),
            fp32_groups: fp32.iter().map(|g| g.to_string()).collect(),
            smoothed_groups: vec![],
            outlier_groups: vec!["layer.0.mlp_in".into()],
            calibration: accuracy([0.99, 0.993][fp32.len().min(1)]),
            plan: Default::default(),
        };
        bulkhead_core::quantized::Manifest {
            format: bulkhead_core::quantized::FORMAT,
            producer: "bulkhead-quantize test".into(),
            source: "/models/minilm".into(),
            precision: Precision::Int8,
            min_cosine_target: 0.995,
            meets_target: true,
            int8_params: 3000,
            linear_params: 4000,
            batch: 32,
            calibration: Measured { texts: "built-in".into(), count: 72, accuracy: accuracy(0.996) },
            heldout: Measured { texts: "built-in".into(), count: 96, accuracy: accuracy(0.9955) },
            record: Record {
                operators: Int8Form::Fused,
                int8_layers: vec!["layer.0.q".into(), "layer.0.k".into()],
                fp32_groups: vec!["layer.1.mlp_out".into()],
                smoothquant: SmoothQuant { alpha: None, groups: vec![] },
                outliers: Outliers {
                    options: Some(crate::OutlierOptions::default()),
                    groups: vec!["layer.0.mlp_in".into()],
                },
                path: vec![step(&[]), step(&["layer.1.mlp_out"])],
                sensitivity: vec![GroupSensitivity {
                    group: "layer.1.mlp_out".into(),
                    params: 1000,
                    plain: accuracy(0.991),
                    smoothed: None,
                    with_outliers: Some(accuracy(0.994)),
                    outlier_channels: 3,
                    treatment: Treatment::Outliers,
                }],
            },
        }
    }

    #[test]
    fn the_manifest_round_trips_and_other_readers_read_the_shared_fields() {
        let written = sample();
        let json = serde_json::to_string_pretty(&written).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        // One flat object: the shared fields and the record side by side, as earlier manifests were written.
        assert_eq!((value["precision"].as_str(), value["heldout"]["count"].as_u64()), (Some("int8"), Some(96)));
        assert_eq!(value["operators"], "fused");
        assert_eq!(value["path"].as_array().map(Vec::len), Some(2));

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), &json).unwrap();
        let read = Manifest::read(dir.path()).unwrap().expect("the manifest");
        assert_eq!(read, written);
        let shared = bulkhead_core::quantized::Manifest::<()>::read(dir.path()).unwrap().expect("the manifest");
        assert_eq!((&shared.heldout, &shared.calibration), (&written.heldout, &written.calibration));
        assert_eq!((shared.int8_share(), shared.int8_accuracy().heldout_min_cosine), (0.75, 0.9955));
    }
}
