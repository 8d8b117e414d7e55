//! The classification heads' error paths on the cross-encoder fixtures of `tests/fixtures/cross/`: a checkpoint
//! that lacks a tensor of its head is refused with an error naming the tensor and the head, and a graph is written
//! for the complete one. (Their logits against transformers are checked end to end in
//! `crates/bulkhead/tests/rerank.rs`.)

use std::path::{Path, PathBuf};

use bulkhead_core::ModelFiles;
use bulkhead_graph::{export, BuildOptions};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/cross").join(name)
}

/// A copy of the fixture whose safetensors header calls `tensor` something else of the same length (`x` for its
/// first letter), so the header keeps its size and the file stays valid.
fn without(name: &str, tensor: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture(name).join(f), dir.path().join(f)).unwrap();
    }
    let mut bytes = std::fs::read(fixture(name).join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let key = format!("\"{tensor}\"");
    let header = &mut bytes[8..8 + n];
    let at = header.windows(key.len()).position(|w| w == key.as_bytes());
    let at = at.unwrap_or_else(|| panic!("{name} has no tensor {tensor}"));
    header[at + 1] = b'x';
    std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
    dir
}

#[test]
fn a_missing_head_tensor_is_named_with_its_head() {
    for (name, tensor, head) in [
        ("modernbert-reranker", "head.norm.weight", "ModernBERT"),
        ("modernbert-classifier", "head.dense.bias", "ModernBERT"),
        ("modernbert-reranker", "classifier.bias", "ModernBERT"),
        ("qwen3-reranker", "score.weight", "decoder (score on the last token)"),
        ("qwen2-classifier", "score.weight", "decoder (score on the last token)"),
        ("bert-reranker", "classifier.weight", "BERT"),
        ("gte-reranker", "new.pooler.dense.weight", "BERT / GTE"),
    ] {
        let out = tempfile::tempdir().unwrap();
        let complete = ModelFiles::open(&fixture(name)).unwrap();
        export(&complete, &BuildOptions::default(), &out.path().join("ok.onnx")).unwrap();

        let dir = without(name, tensor);
        let model = ModelFiles::open(dir.path()).unwrap();
        let err = export(&model, &BuildOptions::default(), &out.path().join("bad.onnx")).unwrap_err().to_string();
        assert!(err.contains(&format!("tensor `{tensor}` is missing")) && err.contains(head), "{name}: {err}");
        assert!(err.contains("model.safetensors"), "the file is named: {err}");
        assert!(!out.path().join("bad.onnx").exists());
    }
}
