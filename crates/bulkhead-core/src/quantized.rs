//! What a folder written by `bulkhead quantize` says about itself: the part of its manifest
//! (`bulkhead-quantization.json`) that tools other than the quantizer read, the measured accuracy against float32.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The manifest's file name, beside `model.onnx`.
pub const MANIFEST_FILE: &str = "bulkhead-quantization.json";

/// The accuracy `bulkhead quantize` measured for the folder it wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Int8Accuracy {
    /// The floor asked for (`--min-cosine`).
    pub min_cosine_target: f64,
    /// Whether the written configuration meets it on the calibration texts (false only with `--force`).
    pub meets_target: bool,
    /// Texts of the held-out set (never seen by the search).
    pub heldout_texts: usize,
    /// The worst held-out text's cosine against float32.
    pub heldout_min_cosine: f64,
    /// The mean held-out cosine against float32.
    pub heldout_mean_cosine: f64,
    /// Top-10 nearest-neighbour agreement with float32 over the held-out set.
    pub heldout_top10_overlap: f64,
    /// The share of linear-layer weights in int8.
    pub int8_share: f64,
}

/// The manifest fields [`Int8Accuracy`] comes from.
#[derive(Deserialize)]
struct Manifest {
    min_cosine_target: f64,
    meets_target: bool,
    int8_params: usize,
    linear_params: usize,
    heldout: Measured,
}

#[derive(Deserialize)]
struct Measured {
    count: usize,
    accuracy: Accuracy,
}

#[derive(Deserialize)]
struct Accuracy {
    min_cosine: f64,
    mean_cosine: f64,
    top10_overlap: f64,
}

/// The measured accuracy of a folder `bulkhead quantize` wrote; `None` for any other folder. A manifest that
/// exists but does not parse is an error naming it.
pub fn read_int8_accuracy(folder: &Path) -> Result<Option<Int8Accuracy>, String> {
    let path = folder.join(MANIFEST_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let m: Manifest =
        serde_json::from_str(&text).map_err(|e| format!("{}: not a quantization manifest: {e}", path.display()))?;
    Ok(Some(Int8Accuracy {
        min_cosine_target: m.min_cosine_target,
        meets_target: m.meets_target,
        heldout_texts: m.heldout.count,
        heldout_min_cosine: m.heldout.accuracy.min_cosine,
        heldout_mean_cosine: m.heldout.accuracy.mean_cosine,
        heldout_top10_overlap: m.heldout.accuracy.top10_overlap,
        int8_share: m.int8_params as f64 / m.linear_params.max(1) as f64,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_accuracy_and_tells_absent_from_broken() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_int8_accuracy(dir.path()), Ok(None));
        let manifest = serde_json::json!({
            "min_cosine_target": 0.999, "meets_target": true, "int8_params": 3, "linear_params": 4,
            "heldout": {"count": 96, "accuracy": {"min_cosine": 0.9991, "mean_cosine": 0.9995, "top10_overlap": 0.98}},
            "other": "fields the quantizer writes are ignored"
        });
        std::fs::write(dir.path().join(MANIFEST_FILE), manifest.to_string()).unwrap();
        let a = read_int8_accuracy(dir.path()).unwrap().unwrap();
        assert_eq!((a.heldout_texts, a.heldout_min_cosine, a.int8_share), (96, 0.9991, 0.75));
        std::fs::write(dir.path().join(MANIFEST_FILE), "{").unwrap();
        assert!(read_int8_accuracy(dir.path()).unwrap_err().contains("not a quantization manifest"));
    }
}
