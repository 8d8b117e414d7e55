//! The graph of each architecture fixture (`tests/fixtures/arch/`, tiny random-weight models made by
//! `scripts/fixtures/make_architectures.py`) against the sentence-transformers outputs recorded beside it, on ONNX
//! Runtime CPU, fed sentence-transformers' own token ids (the tokenizer is checked elsewhere); and the operators ONNX
//! Runtime fuses in each. Tests that need the ONNX Runtime library skip with the reason when it is absent.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bulkhead_core::ModelFiles;
use bulkhead_graph::{build_cached, export, BuildOptions, ShapeMode, ORT_CPU_DISABLED_OPTIMIZERS};
use common::{compare, op_types, optimized_op_types, ort_env};
use ort::session::Session;
use ort::value::TensorRef;

const MIN_COS: f32 = 0.9999;
const MAX_DIFF: f32 = 1e-4;

/// Every fixture folder.
const FIXTURES: &[&str] = &["xlm-roberta", "gte", "nomic-bert", "modernbert", "qwen3", "qwen3-bf16", "qwen2"];

fn fixture(name: &str) -> PathBuf {
    bulkhead_testkit::fixture("arch").join(name)
}

struct Reference {
    token_ids: Vec<Vec<i64>>,
    pooling: String,
    normalize: bool,
    embeddings: Vec<Vec<f32>>,
}

fn reference(folder: &Path) -> Reference {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("reference.json")).unwrap()).unwrap();
    let rows = |k: &str| -> Vec<Vec<f64>> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
            .collect()
    };
    Reference {
        token_ids: rows("token_ids").into_iter().map(|r| r.into_iter().map(|x| x as i64).collect()).collect(),
        pooling: v["pooling"].as_str().unwrap().to_string(),
        normalize: v["normalize"].as_bool().unwrap(),
        embeddings: rows("embeddings").into_iter().map(|r| r.into_iter().map(|x| x as f32).collect()).collect(),
    }
}

/// Runs `session` on `rows` right-padded with `pad` and pools as sentence-transformers does.
fn embed(session: &mut Session, rows: &[Vec<i64>], pad: i64, pooling: &str, normalize: bool) -> Vec<Vec<f32>> {
    let seq = rows.iter().map(Vec::len).max().unwrap();
    let b = rows.len();
    let (mut ids, mut mask) = (vec![pad; b * seq], vec![0i64; b * seq]);
    for (i, r) in rows.iter().enumerate() {
        ids[i * seq..i * seq + r.len()].copy_from_slice(r);
        mask[i * seq..i * seq + r.len()].iter_mut().for_each(|m| *m = 1);
    }
    let types = vec![0i64; b * seq];
    let names: Vec<String> = session.inputs().iter().map(|i| i.name().to_string()).collect();
    let mut inputs: Vec<(String, ort::session::SessionInputValue<'_>)> = vec![];
    for n in &names {
        let data = match n.as_str() {
            "input_ids" => &ids,
            "attention_mask" => &mask,
            "token_type_ids" => &types,
            other => panic!("unexpected input {other}"),
        };
        inputs.push((n.clone(), TensorRef::from_array_view(([b, seq], data.as_slice())).unwrap().into()));
    }
    let out = session.run(inputs).unwrap();
    let (shape, h) = out["last_hidden_state"].try_extract_tensor::<f32>().unwrap();
    let hidden = shape[2] as usize;
    (0..b)
        .map(|i| {
            let n = rows[i].len();
            let tok = |j: usize| &h[(i * seq + j) * hidden..(i * seq + j + 1) * hidden];
            let mut v = match pooling {
                "cls" => tok(0).to_vec(),
                "lasttoken" => tok(n - 1).to_vec(),
                "mean" => {
                    let mut acc = vec![0f32; hidden];
                    (0..n).for_each(|j| acc.iter_mut().zip(tok(j)).for_each(|(a, x)| *a += x));
                    acc.iter_mut().for_each(|a| *a /= n as f32);
                    acc
                }
                other => panic!("pooling {other}"),
            };
            if normalize {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|x| *x /= norm);
            }
            v
        })
        .collect()
}

fn session(path: &Path, disabled: &str) -> Session {
    common::session_without(ort_env().unwrap(), path, 2, disabled)
}

fn ready() -> bool {
    if let Err(e) = ort_env() {
        bulkhead_testkit::skip(&format!("ONNX Runtime is unavailable: {e}"));
        return false;
    }
    true
}

#[test]
fn every_architecture_matches_sentence_transformers() {
    if !ready() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let folder = fixture(name);
        let model = ModelFiles::open(&folder).unwrap();
        let r = reference(&folder);
        let built = build_cached(&model, &BuildOptions::default(), cache.path()).unwrap();
        for disabled in ["", ORT_CPU_DISABLED_OPTIMIZERS] {
            let mut s = session(&built.path, disabled);
            let got = embed(&mut s, &r.token_ids, model.pad_token_id, &r.pooling, r.normalize);
            let (min_cos, max_diff) = compare(&got, &r.embeddings);
            eprintln!("{name} (disabled: {disabled:?}): min cosine {min_cos:.7}, max abs diff {max_diff:.2e}");
            assert!(min_cos >= MIN_COS && max_diff <= MAX_DIFF, "{name}: {min_cos} {max_diff}");
            // One row at a time gives the same vectors as the padded batch.
            let single: Vec<Vec<f32>> = r
                .token_ids
                .iter()
                .map(|row| {
                    embed(&mut s, std::slice::from_ref(row), model.pad_token_id, &r.pooling, r.normalize).remove(0)
                })
                .collect();
            let (c, d) = compare(&single, &got);
            assert!(c >= 0.99999 && d <= 1e-5, "{name}: batch vs one by one: {c} {d}");
        }
    }
}

#[test]
fn static_shapes_and_self_contained_exports_match_too() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for name in ["xlm-roberta", "modernbert", "qwen3"] {
        let folder = fixture(name);
        let model = ModelFiles::open(&folder).unwrap();
        let r = reference(&folder);
        let seq = r.token_ids.iter().map(Vec::len).max().unwrap();
        let out = dir.path().join(format!("{name}.onnx"));
        let shape = ShapeMode::Static { batch: r.token_ids.len(), seq };
        export(&model, &BuildOptions { shape, ..Default::default() }, &out).unwrap();
        let mut s = session(&out, "");
        let got = embed(&mut s, &r.token_ids, model.pad_token_id, &r.pooling, r.normalize);
        let (min_cos, max_diff) = compare(&got, &r.embeddings);
        eprintln!("{name} static export: min cosine {min_cos:.7}, max abs diff {max_diff:.2e}");
        assert!(min_cos >= MIN_COS && max_diff <= MAX_DIFF, "{name}: {min_cos} {max_diff}");
    }
}

/// Node counts per operator after ONNX Runtime's CPU optimiser (level all), per fixture.
fn fused(name: &str, disabled: &str) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let cache = tempfile::tempdir().unwrap();
    let model = ModelFiles::open(&fixture(name)).unwrap();
    let built = build_cached(&model, &BuildOptions::default(), cache.path()).unwrap();
    let before = op_types(&std::fs::read(&built.path).unwrap());
    let after = optimized_op_types(ort_env().unwrap(), &built.path, &cache.path().join("opt.onnx"), disabled);
    (before, after)
}

#[test]
fn onnx_runtime_fusions_per_architecture() {
    if !ready() {
        return;
    }
    let n = |m: &BTreeMap<String, usize>, k: &str| m.get(k).copied().unwrap_or(0);
    let all: Vec<_> = ["xlm-roberta", "gte", "nomic-bert", "modernbert", "qwen3"]
        .into_iter()
        .map(|name| {
            let (before, after) = fused(name, "");
            let (_, cpu) = fused(name, ORT_CPU_DISABLED_OPTIMIZERS);
            eprintln!(
                "{name}: built {before:?}\n  optimised: {after:?}\n  without {ORT_CPU_DISABLED_OPTIMIZERS}: {cpu:?}"
            );
            (name, after)
        })
        .collect();
    for (name, after) in all {
        let layers = match name {
            "modernbert" => 3,
            _ => 2,
        };
        let fused_matmul = n(&after, "com.microsoft:FusedMatMul");
        match name {
            // BERT's encoder: attention, GELU and every residual + layer norm (the embeddings' sum too) fuse; the
            // position ids (a CumSum over non-padding tokens) keep EmbedLayerNormalization from matching.
            "xlm-roberta" => {
                assert_eq!(n(&after, "com.microsoft:Attention"), layers, "{after:?}");
                assert_eq!(n(&after, "com.microsoft:SkipLayerNormalization"), 2 * layers + 1, "{after:?}");
                assert_eq!(n(&after, "com.microsoft:BiasGelu"), layers, "{after:?}");
            }
            // Rotary encoders: the scaled Q·Kᵀ becomes FusedMatMul and the exact GELU Gelu; ONNX Runtime has no
            // CPU fusion of attention with rotary embeddings.
            "gte" | "modernbert" => {
                assert_eq!((n(&after, "com.microsoft:Gelu"), fused_matmul), (layers, layers), "{name}: {after:?}");
                assert_eq!(n(&after, "Erf"), 0, "{name}: GELU left unfused: {after:?}");
            }
            // SwiGLU's SiLU (x · sigmoid(x)) becomes QuickGelu.
            "nomic-bert" => {
                assert_eq!((n(&after, "com.microsoft:QuickGelu"), fused_matmul), (layers, layers), "{after:?}");
                assert_eq!(n(&after, "Sigmoid"), 0, "{after:?}");
            }
            // Decoders: every RMSNorm (input, post-attention, q and k per layer, final) becomes
            // SimplifiedLayerNormalization; the SiLU QuickGelu.
            "qwen3" => {
                assert_eq!(n(&after, "SimplifiedLayerNormalization"), 4 * layers + 1, "{after:?}");
                assert_eq!(n(&after, "Pow") + n(&after, "ReduceMean") + n(&after, "Sqrt"), 0, "{after:?}");
                assert_eq!((n(&after, "com.microsoft:QuickGelu"), fused_matmul), (layers, layers), "{after:?}");
            }
            _ => unreachable!(),
        }
    }
}
