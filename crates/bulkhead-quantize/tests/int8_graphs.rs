//! int8 graphs on real ONNX Runtime: the operators ONNX Runtime runs them with (counted in its optimised model),
//! the search's mechanics on every architecture the graph builder supports (tiny random-weight fixtures of
//! `tests/fixtures/arch/`, where accuracy targets mean little), and the floor nobody meets. Tests that need ONNX
//! Runtime print `skipping: ...` and pass when it is absent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bulkhead_core::ModelFiles;
use bulkhead_graph::{Int8Form, QuantPlan, Variant};
use bulkhead_quantize::{quantize, Evaluator, Manifest, QuantizeError, QuantizeOptions};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ort_ready() -> bool {
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        let lib = std::fs::read_dir(repo().join(".venv/lib")).ok().and_then(|mut d| d.next()).and_then(|e| e.ok());
        let so = lib.map(|l| l.path().join("site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1"));
        match so.filter(|p| p.is_file()) {
            // SAFETY: set once, before any thread reads the environment (the first test to get here).
            Some(p) => unsafe { std::env::set_var("ORT_DYLIB_PATH", p) },
            None => {
                bulkhead_testkit::skip("no ONNX Runtime library (run scripts/setup.sh or set ORT_DYLIB_PATH)");
                return false;
            }
        }
    }
    match bulkhead_ort::runtime() {
        Ok(_) => true,
        Err(e) => {
            bulkhead_testkit::skip(&format!("ONNX Runtime is unavailable: {e}"));
            false
        }
    }
}

fn fixture(name: &str) -> ModelFiles {
    ModelFiles::open(&repo().join("tests/fixtures/arch").join(name)).unwrap()
}

/// Operator counts of the model ONNX Runtime's CPU optimiser (level all) makes of `model`.
fn optimized_ops(model: &Path) -> BTreeMap<String, usize> {
    let rt = bulkhead_ort::runtime().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("optimized.onnx");
    let _session = ort::session::Session::builder(&rt.env)
        .unwrap()
        .with_optimized_model_path(&out)
        .unwrap()
        .commit_from_file(model)
        .unwrap();
    bulkhead_ort::onnx_info::read(&std::fs::read(&out).unwrap()).unwrap().op_types
}

fn small_calibration(dir: &Path) -> PathBuf {
    let texts = bulkhead_quantize::texts::builtin_calibration();
    let pick: Vec<&str> = texts.iter().step_by(9).map(String::as_str).collect();
    let p = dir.join("calibration.txt");
    std::fs::write(&p, pick.join("\n")).unwrap();
    p
}

#[test]
fn int8_layers_run_as_dynamic_quantize_matmul_in_both_forms() {
    if !ort_ready() {
        return;
    }
    let model = fixture("xlm-roberta");
    let ev = Evaluator::new(&model, 8, 1).unwrap();
    let groups = bulkhead_graph::linear_groups(&model, &Default::default()).unwrap();
    let layers: Vec<String> = groups.iter().flat_map(|g| g.layers.iter().map(|l| l.name.clone())).collect();
    assert_eq!(groups.len(), 8, "2 layers x (QKV, attention output, intermediate, output)");
    assert_eq!(layers.len(), 12);
    for form in [Int8Form::Fused, Int8Form::Standard] {
        let plan = QuantPlan { int8: layers.iter().cloned().collect(), form, ..QuantPlan::default() };
        let ops = optimized_ops(&ev.graph(Variant::Int8(&plan)).unwrap());
        // Every linear layer runs on MLAS's int8 GEMM with the float rescale and bias fused in. In the standard form
        // ONNX Runtime first merges the identical activation quantizations of Q, K and V (common subexpression
        // elimination), so those three share one DynamicQuantizeLinear and become MatMulIntegerToFloat; the
        // fused form quantizes the shared activation once per layer reading it. Nothing else is left of the standard form, and no
        // float MatMul of a linear layer remains: the four left are attention's
        // (Q·Kᵀ fused with its scale, and P·V, per layer). The attention fusion needs float Q/K/V MatMuls.
        let count = |op: &str| ops.get(op).copied().unwrap_or(0);
        let expect = match form {
            Int8Form::Fused => (12, 0, 0),
            Int8Form::Standard => (6, 6, 2),
        };
        let got = (count("DynamicQuantizeMatMul"), count("MatMulIntegerToFloat"), count("DynamicQuantizeLinear"));
        assert_eq!(got, expect, "{form:?}: {ops:?}");
        for gone in ["MatMulInteger", "Attention"] {
            assert_eq!(ops.get(gone), None, "{form:?}: {gone} left in {ops:?}");
        }
        assert_eq!((ops.get("FusedMatMul"), ops.get("MatMul")), (Some(&2), Some(&2)), "{form:?}: {ops:?}");
        assert_eq!((ops.get("Gelu"), ops.get("SkipLayerNormalization")), (Some(&2), Some(&5)), "{form:?}: {ops:?}");
    }
}

#[test]
fn outlier_channels_run_in_float32_beside_the_int8_product() {
    if !ort_ready() {
        return;
    }
    let model = fixture("xlm-roberta");
    let ev = Evaluator::new(&model, 8, 1).unwrap();
    let groups = bulkhead_graph::linear_groups(&model, &Default::default()).unwrap();
    let texts: Vec<String> = bulkhead_quantize::texts::builtin_calibration().into_iter().take(8).collect();
    let rows = ev.tokenize(&texts).unwrap();
    let float = ev.embed(Variant::Float, &rows).unwrap();
    let layer = &groups[2].layers[0];
    let plan = |outliers: Vec<usize>| QuantPlan {
        int8: [layer.name.clone()].into(),
        outliers: [(layer.name.clone(), outliers)].into_iter().filter(|(_, o)| !o.is_empty()).collect(),
        ..QuantPlan::default()
    };
    // Every input channel an outlier: the int8 product is all zeros and the float32 one the whole layer, so the
    // embeddings are float32's up to summation order.
    let all = ev.embed(Variant::Int8(&plan((0..layer.din).collect())), &rows).unwrap();
    let diff = all.iter().flatten().zip(float.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff < 1e-5, "max difference {diff}");
    // A few channels: one Gather and one float MatMul beside the int8 layer, which stays DynamicQuantizeMatMul.
    let count = |plan: &QuantPlan, op: &str| {
        optimized_ops(&ev.graph(Variant::Int8(plan)).unwrap()).get(op).copied().unwrap_or(0)
    };
    let (none, some) = (plan(vec![]), plan(vec![0, 5, 7]));
    assert_eq!(count(&some, "Gather"), count(&none, "Gather") + 1);
    assert_eq!((count(&none, "DynamicQuantizeMatMul"), count(&some, "DynamicQuantizeMatMul")), (1, 1));
    // A channel past the layer's inputs is refused with the layer's name.
    let err = ev.graph(Variant::Int8(&plan(vec![layer.din]))).unwrap_err().to_string();
    assert!(err.contains(&layer.name) && err.contains("past its"), "{err}");
}

#[test]
fn the_search_runs_on_every_architecture() {
    if !ort_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let calibration = small_calibration(dir.path());
    for name in ["xlm-roberta", "gte", "nomic-bert", "modernbert", "qwen3", "qwen3-bf16", "qwen2"] {
        let model = fixture(name);
        let out = dir.path().join(name);
        let opts = QuantizeOptions {
            min_cosine: 0.5,
            calibration: Some(calibration.clone()),
            batch: 8,
            threads: 1,
            // SmoothQuant is off by default; on here so that its path runs on every architecture too.
            smooth_alpha: Some(bulkhead_quantize::DEFAULT_SMOOTH_ALPHA),
            ..QuantizeOptions::default()
        };
        let done = quantize(&model, &opts, &out).unwrap_or_else(|e| panic!("{name}: {e}"));
        let m = Manifest::read(&out).unwrap().expect("the manifest");
        assert_eq!(m.record.int8_layers, done.manifest.record.int8_layers);
        // Every field of the file is read, and nothing else: the typed manifest is the file's JSON.
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(bulkhead_quantize::MANIFEST_FILE)).unwrap())
                .unwrap();
        assert_eq!(serde_json::to_value(&m).unwrap(), file, "{name}");
        assert!(m.meets_target && !m.record.int8_layers.is_empty(), "{name}: {m:?}");
        assert!(
            m.record.sensitivity.iter().all(|s| s.smoothed.is_some()),
            "{name}: every group tried with SmoothQuant"
        );
        // What other readers (the doctor, `--precision int8`) read of it.
        let shared = bulkhead_core::quantized::Manifest::<()>::read(&out).unwrap().expect("the manifest");
        assert_eq!((shared.precision, shared.heldout), (bulkhead_core::Precision::Int8, m.heldout.clone()), "{name}");
        // The folder serves like the original: same tokenizer, pooling and dimensions; int8 weights reported.
        let q = ModelFiles::open(&out).unwrap();
        assert!(q.onnx.is_some() && q.safetensors.is_none() && q.tokenizer.is_some(), "{name}");
        assert_eq!((q.pooling, q.normalize), (model.pooling, model.normalize), "{name}");
        let info = bulkhead_ort::onnx_info::read(&std::fs::read(q.onnx.unwrap()).unwrap()).unwrap();
        assert_eq!(
            info.op_types.get("DynamicQuantizeMatMul").copied().unwrap_or(0),
            m.record.int8_layers.len(),
            "{name}"
        );
    }
}

#[test]
fn a_floor_nobody_meets_writes_nothing_unless_forced() {
    if !ort_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("xlm-roberta");
    let out = dir.path().join("int8");
    let opts = QuantizeOptions {
        min_cosine: 1.0,
        calibration: Some(small_calibration(dir.path())),
        smooth_alpha: None,
        batch: 8,
        threads: 1,
        ..QuantizeOptions::default()
    };
    let e = quantize(&model, &opts, &out).unwrap_err();
    assert!(matches!(e, QuantizeError::Unmet { groups: 8, .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("closest") && msg.contains("nothing was written") && msg.contains("--force"), "{msg}");
    assert!(!out.exists(), "nothing may be written");
    let forced = quantize(&model, &QuantizeOptions { force: true, ..opts.clone() }, &out).unwrap();
    let m = Manifest::read(&out).unwrap().expect("the manifest");
    assert!(!m.meets_target && m.min_cosine_target == 1.0, "{m:?}");
    let best = forced.search.path.iter().map(|s| s.calibration.min_cosine).fold(0.0, f64::max);
    assert!((m.calibration.accuracy.min_cosine - best).abs() < 1e-12, "--force writes the closest configuration");
    // The output must be new or empty.
    let again = quantize(&model, &QuantizeOptions { force: true, ..opts.clone() }, &out).unwrap_err().to_string();
    assert!(again.contains("not empty"), "{again}");
    let bad = QuantizeOptions { min_cosine: 1.5, ..opts };
    assert!(quantize(&model, &bad, &dir.path().join("x")).unwrap_err().to_string().contains("outside (0, 1]"));
}
