//! Every architecture end to end: the tiny random-weight fixtures of `tests/fixtures/arch/` (made by
//! `scripts/fixtures/make_architectures.py`: XLM-RoBERTa, GTE, NomicBERT, ModernBERT, Qwen3 sharded and in bf16,
//! Qwen2) through the real binary on `ort:cpu` and `candle:cpu`, against the
//! sentence-transformers outputs recorded beside them; batch equals one by one; bf16 weights give the fp32
//! reference of the same weights; `export`, `doctor` and `bench` on them; and the bad inputs (unknown rotary
//! scaling, missing or mis-shaped tensor, tokenizer larger than the embedding table, missing config field,
//! unsupported architecture) each one clear line, exit 1, with every unit of the chain tried.

mod common;

use std::path::{Path, PathBuf};

use bulkhead_core::{Chain, EngineKind, ModelFiles, Platform};
use bulkhead_embed::{load_chain, Engines, Tokenizer};
use common::*;

const MIN_COS: f32 = 0.9999;
const MAX_DIFF: f32 = 1e-4;

/// (fixture, whether candle runs it).
const FIXTURES: &[(&str, bool)] = &[
    ("xlm-roberta", true),
    ("gte", false),
    ("nomic-bert", true),
    ("modernbert", true),
    ("qwen3", true),
    ("qwen3-bf16", true),
    ("qwen2", false),
];

fn fixture(name: &str) -> PathBuf {
    common::fixture("arch").join(name)
}

struct ArchReference {
    texts: Vec<String>,
    token_ids: Vec<Vec<i64>>,
    embeddings: Vec<Vec<f32>>,
}

fn arch_reference(name: &str) -> ArchReference {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let strings = v["texts"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    let rows = |k: &str| -> Vec<Vec<f64>> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
            .collect()
    };
    ArchReference {
        texts: strings,
        token_ids: rows("token_ids").into_iter().map(|r| r.into_iter().map(|x| x as i64).collect()).collect(),
        embeddings: rows("embeddings").into_iter().map(|r| r.into_iter().map(|x| x as f32).collect()).collect(),
    }
}

fn ort_ready() -> bool {
    if bulkhead_ort::runtime().is_err() {
        bulkhead_testkit::skip("ONNX Runtime is not installed (run scripts/setup.sh)");
        return false;
    }
    true
}

fn assert_close(label: &str, got: &[Vec<f32>], want: &[Vec<f32>]) {
    let (min_cos, max_diff) = compare(got, want);
    eprintln!("{label}: min cosine {min_cos:.7}, max abs diff {max_diff:.2e}");
    assert!(min_cos >= MIN_COS && max_diff <= MAX_DIFF, "{label}: min cosine {min_cos}, max abs diff {max_diff}");
}

#[test]
fn the_tokenizer_and_sequence_limit_match_sentence_transformers() {
    for (name, _) in FIXTURES {
        let model = ModelFiles::open(&fixture(name)).unwrap();
        let r = arch_reference(name);
        let ids = Tokenizer::load(&model).unwrap().encode(&r.texts).unwrap();
        assert_eq!(ids, r.token_ids, "{name}: token ids (special tokens, truncation at {})", model.max_seq_length);
    }
    let qwen = ModelFiles::open(&fixture("qwen3")).unwrap();
    assert_eq!(qwen.padding_side, bulkhead_core::PaddingSide::Left);
    assert_eq!(qwen.safetensors_shards.len(), 3, "sharded checkpoint");
}

#[test]
fn every_architecture_embeds_like_sentence_transformers_through_the_binary() {
    if !ort_ready() {
        return;
    }
    for (name, candle) in FIXTURES {
        let r = arch_reference(name);
        let v = embed_json(&fixture(name), "ort:cpu", &r.texts);
        assert_eq!(v["unit"], "ort:cpu", "{name}");
        assert_close(&format!("{name} on ort:cpu"), &vectors(&v), &r.embeddings);
        if *candle {
            let v = embed_json(&fixture(name), "candle:cpu", &r.texts);
            assert_eq!(v["unit"], "candle:cpu", "{name}");
            assert_close(&format!("{name} on candle:cpu"), &vectors(&v), &r.embeddings);
        }
    }
    // bf16 weights are reported as such.
    let v = embed_json(&fixture("qwen3-bf16"), "ort:cpu", &["hello".to_string()]);
    assert_eq!(v["precision"], "fp32", "the built graph computes in fp32 (bf16 widened exactly)");
}

#[test]
fn candle_says_why_it_cannot_run_gte_and_the_chain_moves_on() {
    if !ort_ready() {
        return;
    }
    let model = fixture("gte");
    let out = bulkhead(
        &["embed", "--json", "--model", model.to_str().unwrap(), "--compute-units", "candle:cpu,ort:cpu", "hello"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["unit"], "ort:cpu");
    let reason = v["skipped"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("NewModel") && reason.contains("candle"), "{reason}");
}

#[test]
fn a_batch_equals_one_at_a_time_on_every_unit() {
    if !ort_ready() {
        return;
    }
    let engines = Engines::new(vec![
        (EngineKind::Ort, Box::new(bulkhead_ort::OrtEngine::default())),
        (EngineKind::Candle, Box::new(bulkhead_candle::CandleEngine)),
    ]);
    for (name, candle) in FIXTURES {
        let model = ModelFiles::open(&fixture(name)).unwrap();
        let tokenizer = Tokenizer::load(&model).unwrap();
        let rows = tokenizer.encode(&arch_reference(name).texts).unwrap();
        let units = if *candle { vec!["ort:cpu", "candle:cpu"] } else { vec!["ort:cpu"] };
        for unit in units {
            let chain = Chain::parse(unit, &Platform::detect()).unwrap();
            let mut loaded = load_chain(&engines, &model, &tokenizer, &chain).unwrap();
            let (batch, _) = loaded.embedder.embed_tokens(&rows).unwrap();
            let single: Vec<Vec<f32>> = rows
                .iter()
                .map(|r| loaded.embedder.embed_tokens(std::slice::from_ref(r)).unwrap().0.remove(0))
                .collect();
            let (c, d) = compare(&batch, &single);
            eprintln!("{name} on {unit}: batch vs one by one: min cosine {c:.7}, max abs diff {d:.2e}");
            assert!(c >= 0.99999 && d <= 1e-5, "{name} on {unit}: {c} {d}");
        }
    }
}

#[test]
fn export_doctor_and_bench_work_on_the_new_architectures() {
    if !ort_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for name in ["xlm-roberta", "gte", "nomic-bert", "modernbert", "qwen3"] {
        let src = fixture(name);
        let folder = dir.path().join(name);
        std::fs::create_dir(&folder).unwrap();
        let onnx = folder.join("model.onnx");
        let out = bulkhead(&["export", "--model", src.to_str().unwrap(), "--output", onnx.to_str().unwrap()], &[]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        // The exported graph beside the model's tokenizer and sentence-transformers files, without the weights.
        for entry in std::fs::read_dir(&src).unwrap().flatten() {
            let n = entry.file_name();
            if !n.to_string_lossy().starts_with("model") {
                std::os::unix::fs::symlink(entry.path(), folder.join(&n)).unwrap();
            }
        }
        let r = arch_reference(name);
        let v = embed_json(&folder, "ort:cpu", &r.texts);
        assert_close(&format!("{name} exported"), &vectors(&v), &r.embeddings);
    }
    for name in ["modernbert", "qwen3"] {
        let model = fixture(name);
        let quick = ["--iterations", "4", "--predictions", "24", "--seq-lengths", "8,32", "--batch-sizes", "1,8"];
        let mut args = vec!["doctor", "--json", "--model", model.to_str().unwrap(), "--compute-units", "CPU_ONLY"];
        args.extend(quick);
        let out = bulkhead(&args, &[]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let units: Vec<&str> = v["units"].as_array().unwrap().iter().filter_map(|u| u["unit"].as_str()).collect();
        assert!(units.contains(&"ort:cpu") && units.contains(&"candle:cpu"), "{name}: {units:?}");
        let out = bulkhead(
            &["bench", "--json", "--model", model.to_str().unwrap(), "--compute-units", "ort:cpu", "--seconds", "0.3"],
            &[],
        );
        assert!(out.status.success(), "{name}: {}", stderr(&out));
    }
}

/// Copies a fixture into a temporary folder (files copied, so they can be edited).
fn broken_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture(name), dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// `embed` on the broken model with both CPU units: exit 1, one line, no panic, both units named, and `needles`.
fn assert_refused(dir: &Path, needles: &[&str]) {
    let out = bulkhead(
        &["embed", "--model", dir.to_str().unwrap(), "--compute-units", "ort:cpu,candle:cpu", "hello"],
        // A backtrace in an engine's message must not reach the one line (candle appends one when asked to).
        &[("BULKHEAD_LOG", "off"), ("RUST_BACKTRACE", "1")],
    );
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(!e.contains("panicked") && !e.contains("rustc/"), "{e}");
    assert!(e.len() < 2000, "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "one line: {e}");
    // Each engine's refusal: files it cannot load, or a model it does not support.
    let refused = |u: &str| e.contains(&format!("{u} cannot load")) || e.contains(&format!("{u} does not support"));
    assert!(refused("ort:cpu") && refused("candle:cpu"), "both units tried: {e}");
    for n in needles {
        assert!(e.contains(n), "`{n}` missing from: {e}");
    }
}

#[test]
fn bad_inputs_give_one_clear_error_naming_the_file_and_the_field() {
    if !ort_ready() {
        return;
    }
    // An unknown rotary scaling type.
    let d = broken_copy("qwen3");
    edit_config(d.path(), |c| c["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0}));
    assert_refused(d.path(), &["config.json", "`rope_scaling` type `yarn`"]);

    // A tensor the config implies is missing (one layer more than the weights have).
    let d = broken_copy("xlm-roberta");
    edit_config(d.path(), |c| c["num_hidden_layers"] = 3.into());
    assert_refused(d.path(), &["model.safetensors", "encoder.layer.2."]);

    // A tensor of the wrong shape.
    let d = broken_copy("modernbert");
    edit_config(d.path(), |c| c["intermediate_size"] = 40.into());
    assert_refused(d.path(), &["model.safetensors", "layers.0.mlp.Wi.weight", "[96, 32]"]);

    // A tokenizer with more ids than the embedding table has rows.
    let d = broken_copy("xlm-roberta");
    std::fs::copy(fixture("modernbert").join("tokenizer.json"), d.path().join("tokenizer.json")).unwrap();
    assert_refused(d.path(), &["tokenizer.json", "420 token ids", "embeddings.word_embeddings.weight", "251 rows"]);

    // A config without a field the architecture needs.
    let d = broken_copy("gte");
    edit_config(d.path(), |c| drop(c.as_object_mut().unwrap().remove("num_attention_heads")));
    assert_refused(d.path(), &["config.json", "num_attention_heads"]);
}

#[test]
fn an_unsupported_architecture_is_one_error_listing_the_supported_ones() {
    let d = broken_copy("xlm-roberta");
    edit_config(d.path(), |c| {
        c["architectures"] = serde_json::json!(["T5EncoderModel"]);
        c["model_type"] = "t5".into();
    });
    let out = bulkhead(&["embed", "--model", d.path().to_str().unwrap(), "hello"], &[("BULKHEAD_LOG", "off")]);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    for n in ["T5EncoderModel", "XLMRobertaModel", "ModernBertModel", "NomicBertModel", "NewModel", "Qwen3Model"] {
        assert!(e.contains(n), "`{n}` missing from: {e}");
    }
}
