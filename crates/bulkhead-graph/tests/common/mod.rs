//! Shared by the integration test and the benchmark: ONNX Runtime set-up (plain `ort`: this crate sits below
//! bulkhead-ort), tokenising, running a session and mean pooling; the models and the reference embeddings come from
//! bulkhead-testkit.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::TensorRef;

pub use bulkhead_testkit::{compare, minilm_folder, minilm_fp32_onnx as torch_export, percentile};

/// Truncation of all-MiniLM-L6-v2 (sentence-transformers `max_seq_length`).
pub const MAX_TOKENS: usize = 256;

fn ort_library() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return Ok(PathBuf::from(p));
    }
    let capi = bulkhead_core::install::find_in_site_packages("onnxruntime", "capi")
        .ok_or("the onnxruntime Python package is not installed (run scripts/setup.sh)")?;
    let mut libs: Vec<PathBuf> = std::fs::read_dir(&capi)
        .map_err(|e| format!("{}: {e}", capi.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libonnxruntime.so")))
        .collect();
    libs.sort();
    libs.pop().ok_or_else(|| format!("no libonnxruntime.so* in {}", capi.display()))
}

/// The process-wide ONNX Runtime environment, or why there is none.
pub fn ort_env() -> Result<&'static Environment, String> {
    static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let lib = ort_library()?;
        ort::init_from(&lib)
            .map_err(|e| format!("{}: {e}", lib.display()))?
            .with_name("bulkhead-graph-test")
            .build()
            .map_err(|e| format!("{}: {e}", lib.display()))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// A CPU session at the default optimisation level (all) with `threads` intra-op threads.
pub fn session(env: &Environment, model: &Path, threads: usize) -> Session {
    session_without(env, model, threads, "")
}

/// [`session`] with the ONNX Runtime optimisers in `disabled` (`;`-separated, may be empty) switched off.
pub fn session_without(env: &Environment, model: &Path, threads: usize, disabled: &str) -> Session {
    let mut b = Session::builder(env).unwrap();
    if !disabled.is_empty() {
        b = b.with_disabled_optimizers(disabled).unwrap();
    }
    b.with_intra_threads(threads)
        .unwrap()
        .commit_from_file(model)
        .unwrap_or_else(|e| panic!("{}: {e}", model.display()))
}

/// Token ids of the sentences, truncated at [`MAX_TOKENS`].
pub fn tokenize(folder: &Path, sentences: &[String]) -> Vec<(Vec<i64>, Vec<i64>)> {
    let mut tok = tokenizers::Tokenizer::from_file(folder.join("tokenizer.json")).unwrap();
    tok.with_truncation(Some(tokenizers::TruncationParams { max_length: MAX_TOKENS, ..Default::default() })).unwrap();
    tok.with_padding(None);
    sentences
        .iter()
        .map(|s| {
            let e = tok.encode(s.as_str(), true).unwrap();
            let ids = e.get_ids().iter().map(|&x| i64::from(x)).collect();
            let types = e.get_type_ids().iter().map(|&x| i64::from(x)).collect();
            (ids, types)
        })
        .collect()
}

/// A padded batch: ids, mask, token types, each `[batch, seq]` row-major.
pub struct Batch {
    pub batch: usize,
    pub seq: usize,
    pub ids: Vec<i64>,
    pub mask: Vec<i64>,
    pub types: Vec<i64>,
}

/// Pads `rows` to `seq` tokens (the longest row when `None`) and `batch` rows (`rows.len()` when `None`).
pub fn pad(rows: &[(Vec<i64>, Vec<i64>)], batch: Option<usize>, seq: Option<usize>) -> Batch {
    let seq = seq.unwrap_or_else(|| rows.iter().map(|r| r.0.len()).max().unwrap_or(1).max(1));
    let batch = batch.unwrap_or(rows.len());
    let mut b =
        Batch { batch, seq, ids: vec![0; batch * seq], mask: vec![0; batch * seq], types: vec![0; batch * seq] };
    for (i, (ids, types)) in rows.iter().enumerate() {
        for j in 0..ids.len().min(seq) {
            b.ids[i * seq + j] = ids[j];
            b.types[i * seq + j] = types[j];
            b.mask[i * seq + j] = 1;
        }
    }
    b
}

/// Runs the session on the inputs it has (`input_ids`, `attention_mask`, `token_type_ids`; models without token
/// types have no `token_type_ids`): `last_hidden_state` (or the first output), `[batch, seq, hidden]` row-major,
/// and `hidden`.
pub fn forward(session: &mut Session, b: &Batch) -> (Vec<f32>, usize) {
    let shape = [b.batch, b.seq];
    let names: Vec<String> = session.inputs().iter().map(|i| i.name().to_string()).collect();
    let mut inputs: Vec<(String, ort::session::SessionInputValue<'_>)> = vec![];
    for n in names {
        let data = match n.as_str() {
            "input_ids" => &b.ids,
            "attention_mask" => &b.mask,
            "token_type_ids" => &b.types,
            other => panic!("unexpected graph input `{other}`"),
        };
        inputs.push((n, TensorRef::from_array_view((shape, data.as_slice())).unwrap().into()));
    }
    let outputs = session.run(inputs).unwrap();
    let value = if outputs.contains_key("last_hidden_state") { &outputs["last_hidden_state"] } else { &outputs[0] };
    let (out_shape, data) = value.try_extract_tensor::<f32>().unwrap();
    (data.to_vec(), out_shape[2] as usize)
}

/// Mean pooling over the unmasked tokens, L2-normalised; one vector per real row (`rows` of them).
pub fn pool(hidden_states: &[f32], hidden: usize, b: &Batch, rows: usize) -> Vec<Vec<f32>> {
    (0..rows)
        .map(|i| {
            let mut v = vec![0f32; hidden];
            let mut n = 0f32;
            for j in 0..b.seq {
                if b.mask[i * b.seq + j] == 1 {
                    let t = &hidden_states[(i * b.seq + j) * hidden..][..hidden];
                    v.iter_mut().zip(t).for_each(|(a, x)| *a += x);
                    n += 1.0;
                }
            }
            v.iter_mut().for_each(|a| *a /= n.max(1e-9));
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|a| *a /= norm);
            v
        })
        .collect()
}

/// The reference sentences and embeddings (sentence-transformers, PyTorch fp32).
pub fn reference() -> (Vec<String>, Vec<Vec<f32>>) {
    let r = bulkhead_testkit::reference();
    (r.sentences, r.embeddings)
}

/// Writes the graph ONNX Runtime's CPU optimiser makes of `model` (level all, the session default; the optimisers
/// in `disabled` switched off) to `out` and returns its node count per `domain:op_type` (`op_type` alone for the
/// ONNX domain).
pub fn optimized_op_types(
    env: &Environment,
    model: &Path,
    out: &Path,
    disabled: &str,
) -> std::collections::BTreeMap<String, usize> {
    let mut b = Session::builder(env).unwrap();
    if !disabled.is_empty() {
        b = b.with_disabled_optimizers(disabled).unwrap();
    }
    let session = b
        .with_intra_threads(1)
        .unwrap()
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::All)
        .unwrap()
        .with_optimized_model_path(out)
        .unwrap()
        .commit_from_file(model)
        .unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    drop(session);
    op_types(&std::fs::read(out).unwrap())
}

/// Node count per `domain:op_type` of the main graph of an ONNX `ModelProto` (a minimal protobuf walk).
pub fn op_types(model: &[u8]) -> std::collections::BTreeMap<String, usize> {
    fn varint(b: &[u8], pos: &mut usize) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = b[*pos];
            *pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        v
    }
    /// The length-delimited fields of a message, as (field number, bytes).
    fn fields(b: &[u8]) -> Vec<(u64, &[u8])> {
        let mut out = vec![];
        let mut pos = 0;
        while pos < b.len() {
            let key = varint(b, &mut pos);
            match key & 7 {
                0 => {
                    varint(b, &mut pos);
                }
                1 => pos += 8,
                2 => {
                    let n = varint(b, &mut pos) as usize;
                    out.push((key >> 3, &b[pos..pos + n]));
                    pos += n;
                }
                5 => pos += 4,
                w => panic!("unsupported wire type {w}"),
            }
        }
        out
    }
    let mut counts = std::collections::BTreeMap::new();
    let graph = fields(model).into_iter().find(|(n, _)| *n == 7).expect("ModelProto.graph").1;
    for (_, node) in fields(graph).into_iter().filter(|(n, _)| *n == 1) {
        let (mut op, mut domain) = (String::new(), String::new());
        for (n, v) in fields(node) {
            match n {
                4 => op = String::from_utf8_lossy(v).into_owned(),
                7 => domain = String::from_utf8_lossy(v).into_owned(),
                _ => {}
            }
        }
        let key = if domain.is_empty() || domain == "ai.onnx" { op } else { format!("{domain}:{op}") };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}
