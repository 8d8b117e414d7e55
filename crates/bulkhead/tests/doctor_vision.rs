//! `bulkhead doctor` and `bulkhead bench` on the vision tower of an image-text model (the tiny CLIP and SigLIP
//! fixtures), with real worker processes: the vision section with plausible numbers (positive, finite, the counts
//! asked for) beside the text tower's sections, the JSON against docs/doctor.md, the text and HTML renderings; a
//! worker that leaks per prediction (`BULKHEAD_FAULTS`) is the leak finding, per image, with the injected size; the
//! bench's images per second and single-image latency. Small counts keep it quick.

mod common;

use std::path::{Path, PathBuf};

use common::doctor_schema::assert_matches_schema;
use common::{bulkhead, embed_json, fixture, need, stderr, vectors, venv_python};
use serde_json::Value;

fn clip() -> PathBuf {
    fixture("vision/clip-tiny-random")
}

fn siglip() -> PathBuf {
    fixture("vision/siglip-tiny-random")
}

/// The project's ONNX Runtime, which runs both towers.
fn ready() -> bool {
    need(venv_python(), "the project's .venv with ONNX Runtime (scripts/setup.sh)").is_some()
}

/// `bulkhead doctor --json` on ort:cpu with `extra` options; the exit code and the report.
fn doctor(model: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Option<i32>, Value) {
    let mut args = vec!["doctor", "--json", "--model", model.to_str().unwrap(), "--compute-units", "ort:cpu"];
    args.extend(["--batch-sizes", "1,8", "--seq-lengths", "8,16"]);
    args.extend(extra);
    let out = bulkhead(&args, env);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stderr(&out)));
    (out.status.code(), report)
}

fn unit<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["units"].as_array().unwrap().iter().find(|u| u["unit"] == name).unwrap_or_else(|| panic!("{name}"))
}

/// A positive, finite number.
fn positive(v: &Value, what: &str) -> f64 {
    let x = v.as_f64().unwrap_or_else(|| panic!("{what}: not a number: {v}"));
    assert!(x.is_finite() && x > 0.0, "{what}: {x}");
    x
}

/// The width of the model's text vectors (`bulkhead embed`), which its image vectors share.
fn text_dimensions(model: &Path) -> usize {
    vectors(&embed_json(model, "ort:cpu", &["a photo of a cat".to_string()]))[0].len()
}

#[test]
fn doctor_measures_the_vision_tower_of_clip_and_siglip() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for model in [clip(), siglip()] {
        let name = model.file_name().unwrap().to_string_lossy().into_owned();
        let html = dir.path().join(format!("{name}.html"));
        let extra = ["--iterations", "6", "--predictions", "12", "--html", html.to_str().unwrap()];
        let (code, r) = doctor(&model, &extra, &[]);
        assert_eq!(code, Some(0), "{name}: {r}");
        assert_matches_schema(&r);
        assert_eq!(r["settings"]["kind"], "text", "{name}: the text tower is measured as before");
        let ort = unit(&r, "ort:cpu");
        assert_eq!(ort["verdict"], "ok", "{name}: {}", ort["evidence"]);
        assert!(ort["evidence"][0].as_str().unwrap().contains("images/s at batch 8"), "{}", ort["evidence"]);
        assert_eq!(ort["latency"].as_array().unwrap().len(), 2, "{name}: the text rows stay");
        let v = &ort["vision"];
        let s = &v["speed"];
        assert_eq!(s["image_sizes"], serde_json::json!(["32x32", "48x32", "32x64", "17x17"]), "{name}");
        assert_eq!(
            (&s["input_side"], &s["single_runs"], &s["batch"], &s["batch_runs"]),
            (&32.into(), &6.into(), &8.into(), &6.into())
        );
        for field in ["first_ms", "p50_ms", "p99_ms", "engine_p50_ms", "batch_p50_ms", "images_per_s"] {
            positive(&s[field], &format!("{name}: {field}"));
        }
        let (p50, p99) = (positive(&s["p50_ms"], "p50"), positive(&s["p99_ms"], "p99"));
        assert!(p99 >= p50, "{name}: p99 {p99} < p50 {p50}");
        assert!(
            positive(&s["engine_p50_ms"], "engine") <= p50,
            "{name}: the tower's own time is inside the round trip"
        );
        // Images per second are the batch's images over the mean round trip: a batch takes no less than p50 / 2.
        let per_s = positive(&s["images_per_s"], "images/s");
        assert!(per_s <= 8.0 * 1e3 / (0.5 * positive(&s["batch_p50_ms"], "batch p50")), "{name}: {per_s}");
        assert_eq!(v["dimensions"], text_dimensions(&model), "{name}: image vectors share the text space");
        assert_eq!(
            (&v["deterministic"], &v["agreement"]),
            (&Value::Bool(true), &Value::Null),
            "{name}: the first unit"
        );
        let m = &v["memory"];
        assert_eq!((m["predictions"].as_u64(), m["rss_bytes"].as_array().map(Vec::len)), (Some(12), Some(12)), "{m}");
        positive(&m["rss_end_bytes"], "rss");
        let findings = ort["findings"].as_array().unwrap();
        assert!(
            findings.iter().any(|f| f["branch"] == "3a"
                && f["severity"] == "info"
                && f["message"].as_str().unwrap().contains("flat over 12 images")),
            "{name}: {findings:?}"
        );

        // The same report as tables (without measuring again) and as a page.
        let saved = dir.path().join(format!("{name}.json"));
        std::fs::write(&saved, r.to_string()).unwrap();
        let out = bulkhead(&["doctor", "--from-json", saved.to_str().unwrap()], &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        for needle in
            ["Vision tower (", "32x32, 48x32, 32x64, 17x17", "images/s", "MiB/image", "Latency and throughput"]
        {
            assert!(text.contains(needle), "{name}: `{needle}` missing from:\n{text}");
        }
        let page = std::fs::read_to_string(&html).unwrap();
        for needle in ["Vision tower latency", "Vision tower (", "images/s", "ort:cpu"] {
            assert!(page.contains(needle), "{name}: `{needle}` missing from the page");
        }
    }
}

#[test]
fn a_leak_per_image_is_the_leak_finding() {
    if !ready() {
        return;
    }
    let faults = r#"[{"unit":"ort:cpu","kind":"leak","mb":16}]"#;
    let extra = ["--batch-sizes", "1", "--iterations", "2", "--predictions", "10"];
    let (code, r) = doctor(&clip(), &extra, &[("BULKHEAD_FAULTS", faults)]);
    assert_eq!(code, Some(0), "{r}");
    let ort = unit(&r, "ort:cpu");
    assert_eq!(ort["verdict"], "leaks", "{}", ort["evidence"]);
    assert!(
        ort["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("per image through the vision tower")),
        "{}",
        ort["evidence"]
    );
    let m = &ort["vision"]["memory"];
    let slope = positive(&m["slope_mib_per_prediction"], "slope");
    assert!((slope - 16.0).abs() <= 4.0, "slope {slope} MiB/image, injected 16 per prediction of one image");
    assert!(m["recycle_every"].as_u64().is_some_and(|n| (12..=21).contains(&n)), "256 MiB / ~16 MiB: {m}");
    let leak = ort["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["branch"] == "3a" && f["severity"] == "warning" && f["message"].as_str().unwrap().contains("image"))
        .unwrap_or_else(|| panic!("no leak finding per image: {}", ort["findings"]));
    let message = leak["message"].as_str().unwrap();
    assert!(message.contains("MiB per image") && message.contains("serve with --recycle-growth-mb 256"), "{message}");
    let per_image: f64 = message.split('~').nth(1).and_then(|t| t.split(' ').next()).unwrap().parse().unwrap();
    assert!((per_image - 16.0).abs() <= 4.0, "{message}");
}

#[test]
fn bench_reports_images_per_second_and_single_image_latency() {
    if !ready() {
        return;
    }
    let run = |model: &Path, json: bool| {
        let mut a = vec!["bench", "--model", model.to_str().unwrap(), "--compute-units", "ort:cpu,candle:cpu"];
        a.extend(["--batch-sizes", "1", "--seconds", "0", "--iterations", "3"]);
        if json {
            a.push("--json");
        }
        let out = bulkhead(&a, &[]);
        assert!(out.status.success(), "{a:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for model in [clip(), siglip()] {
        let r: Value = serde_json::from_str(&run(&model, true)).unwrap();
        assert_eq!((&r["schema"], &r["kind"]), (&"bulkhead.bench/1".into(), &"text".into()));
        let ort = unit(&r, "ort:cpu");
        assert_eq!(ort["rows"].as_array().unwrap().len(), 1, "the text tower's row: {ort}");
        let v = &ort["vision"];
        assert!(v["single_runs"].as_u64().unwrap() >= 3 && v["batch_runs"].as_u64().unwrap() >= 3, "{v}");
        assert_eq!((&v["batch"], &v["input_side"]), (&8.into(), &32.into()));
        for field in ["p50_ms", "p99_ms", "engine_p50_ms", "batch_p50_ms", "images_per_s"] {
            positive(&v[field], field);
        }
        // candle runs no image-text model: the unit says why, and has no vision row.
        let candle = unit(&r, "candle:cpu");
        assert!(candle["error"].is_string() && candle["vision"].is_null(), "{candle}");
        let text = run(&model, false);
        for needle in ["vision tower", "images/s", "p99 ms", "ort:cpu", "inputs/s"] {
            assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
        }
    }
}
