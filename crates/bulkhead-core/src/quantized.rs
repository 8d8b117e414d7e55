//! A folder written by `bulkhead quantize` and its manifest `bulkhead-quantization.json`, defined once: the quantizer
//! writes a [`Manifest`] whose `record` is its own account of the search (`bulkhead_quantize::Manifest`), and every
//! other reader (the doctor, `--precision int8`) reads the same type with the record left out, so writer and reader
//! cannot drift apart.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::precision::Precision;

/// The manifest's file name, beside `model.onnx`.
pub const MANIFEST_FILE: &str = "bulkhead-quantization.json";

/// The manifest format this build writes and the newest it reads.
pub const FORMAT: u32 = 1;

/// How close a graph's embeddings are to the float32 graph's, over a set of texts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    /// The lowest cosine between a text's embedding and its float32 embedding.
    pub min_cosine: f64,
    /// The mean of those cosines.
    pub mean_cosine: f64,
    /// Mean share of each text's 10 nearest neighbours (among the other texts of the set) that float32 finds too.
    pub top10_overlap: f64,
}

/// An accuracy and the set it was measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// `built-in` or the file.
    pub texts: String,
    /// How many texts.
    pub count: usize,
    /// Against the float32 graph of the same model.
    pub accuracy: Accuracy,
}

/// The manifest of a quantized folder. `R` is what the writer records beyond these fields (flattened into the same
/// JSON object); readers that need only these fields use the default `()`, which ignores the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest<R = ()> {
    /// Manifest format version ([`FORMAT`]).
    pub format: u32,
    /// The tool and graph builder that wrote it.
    pub producer: String,
    /// The source folder.
    pub source: String,
    /// The weight precision of the quantized layers (`int8`: weights symmetric per output channel, activations
    /// dynamic per tensor).
    pub precision: Precision,
    /// The accuracy floor asked for (`--min-cosine`).
    pub min_cosine_target: f64,
    /// Whether the written configuration meets it on the calibration texts (false only with `--force`).
    pub meets_target: bool,
    /// Weight elements of the int8 layers.
    pub int8_params: usize,
    /// Weight elements of all linear layers.
    pub linear_params: usize,
    /// Rows per forward pass during the measurements.
    pub batch: usize,
    /// Accuracy on the calibration set (what the search saw).
    pub calibration: Measured,
    /// Accuracy on the held-out set (never seen by the search).
    pub heldout: Measured,
    /// The writer's own record.
    #[serde(flatten)]
    pub record: R,
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file exists but cannot be read.
    #[error("{path}: {source}")]
    Unreadable {
        /// The manifest.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a manifest of a format this build reads.
    #[error("{path}: not a quantization manifest ({reason}); write the folder again with `bulkhead quantize`")]
    Invalid {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl<R: DeserializeOwned> Manifest<R> {
    /// The manifest of `folder`: `None` when it has none (it was not written by `bulkhead quantize`); an error when
    /// the file is there but unreadable, not a manifest, or of a newer format.
    pub fn read(folder: &Path) -> Result<Option<Manifest<R>>, ManifestError> {
        let path = folder.join(MANIFEST_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ManifestError::Unreadable { path, source }),
        };
        let invalid = |reason: String| ManifestError::Invalid { path: path.clone(), reason };
        let m: Manifest<R> = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if m.format > FORMAT {
            return Err(invalid(format!("format {} is newer than this build reads ({FORMAT})", m.format)));
        }
        Ok(Some(m))
    }
}

impl<R> Manifest<R> {
    /// The share of linear-layer weights in int8.
    pub fn int8_share(&self) -> f64 {
        self.int8_params as f64 / self.linear_params.max(1) as f64
    }

    /// What the doctor reports of it.
    pub fn int8_accuracy(&self) -> Int8Accuracy {
        let h = &self.heldout;
        Int8Accuracy {
            min_cosine_target: self.min_cosine_target,
            meets_target: self.meets_target,
            heldout_texts: h.count,
            heldout_min_cosine: h.accuracy.min_cosine,
            heldout_mean_cosine: h.accuracy.mean_cosine,
            heldout_top10_overlap: h.accuracy.top10_overlap,
            int8_share: self.int8_share(),
        }
    }
}

/// The accuracy `bulkhead quantize` measured for the folder it wrote, as the doctor's report (`model.int8_accuracy`,
/// docs/doctor.md) shows it.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> serde_json::Value {
        serde_json::json!({
            "format": 1, "producer": "bulkhead-quantize 0.1.0", "source": "/models/minilm", "precision": "int8",
            "min_cosine_target": 0.999, "meets_target": true, "int8_params": 3, "linear_params": 4, "batch": 32,
            "calibration": {"texts": "built-in", "count": 72, "accuracy": {"min_cosine": 0.9992, "mean_cosine": 0.9996, "top10_overlap": 0.99}},
            "heldout": {"texts": "built-in", "count": 96, "accuracy": {"min_cosine": 0.9991, "mean_cosine": 0.9995, "top10_overlap": 0.98}},
            "path": ["the quantizer's own record is ignored by this reader"]
        })
    }

    #[test]
    fn reads_the_shared_fields_and_tells_absent_from_broken() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Manifest::<()>::read(dir.path()).unwrap().is_none());
        std::fs::write(dir.path().join(MANIFEST_FILE), manifest().to_string()).unwrap();
        let m = Manifest::<()>::read(dir.path()).unwrap().unwrap();
        assert_eq!((m.precision, m.heldout.count, m.int8_share()), (Precision::Int8, 96, 0.75));
        let a = m.int8_accuracy();
        assert_eq!((a.heldout_texts, a.heldout_min_cosine, a.int8_share), (96, 0.9991, 0.75));

        std::fs::write(dir.path().join(MANIFEST_FILE), "{").unwrap();
        let e = Manifest::<()>::read(dir.path()).unwrap_err();
        assert!(matches!(e, ManifestError::Invalid { .. }) && e.to_string().contains("not a quantization manifest"));

        let mut newer = manifest();
        newer["format"] = 2.into();
        std::fs::write(dir.path().join(MANIFEST_FILE), newer.to_string()).unwrap();
        let e = Manifest::<()>::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("format 2 is newer than this build reads (1)"), "{e}");

        let mut missing = manifest();
        missing.as_object_mut().unwrap().remove("heldout");
        std::fs::write(dir.path().join(MANIFEST_FILE), missing.to_string()).unwrap();
        let e = Manifest::<()>::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("heldout"), "the error names the missing field: {e}");
    }

    #[test]
    fn the_writer_record_round_trips_beside_the_shared_fields() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Record {
            path: Vec<String>,
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), manifest().to_string()).unwrap();
        let m = Manifest::<Record>::read(dir.path()).unwrap().unwrap();
        assert_eq!(m.record.path.len(), 1);
        assert_eq!(serde_json::to_value(&m).unwrap(), manifest(), "written back field for field");
    }
}
