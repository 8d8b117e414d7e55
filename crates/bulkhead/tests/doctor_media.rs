//! `bulkhead doctor` and `bulkhead bench` on a speech-to-text model (the Whisper fixture) and a segmentation model
//! (the SAM2 fixture), with real worker processes: the speech and segmentation sections with plausible numbers
//! (positive, finite) under the right unit names, the JSON against docs/doctor.md, the text and HTML renderings; a
//! worker that leaks per transcription (`BULKHEAD_FAULTS`) is the leak finding; a first unit that crashes is
//! reported and the next one measured; a crash while predicting names the prediction. Small counts keep it quick.

mod common;

use std::path::{Path, PathBuf};

use common::doctor_schema::assert_matches_schema;
use common::{bulkhead, fixture, need, stderr, venv_python};
use serde_json::Value;

fn whisper() -> PathBuf {
    fixture("speech/whisper-tiny-random")
}

fn sam2() -> PathBuf {
    fixture("vision/sam2-tiny-random")
}

/// The project's ONNX Runtime, which runs both fixtures.
fn ready() -> bool {
    need(venv_python(), "the project's .venv with ONNX Runtime (scripts/setup.sh)").is_some()
}

/// `bulkhead doctor --json` with `extra` options; the exit code and the report.
fn doctor(model: &Path, units: &str, extra: &[&str], env: &[(&str, &str)]) -> (Option<i32>, Value) {
    let mut args = vec!["doctor", "--json", "--model", model.to_str().unwrap(), "--compute-units", units];
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

/// candle does not run SAM2: a load error of kind `unsupported` (5a), never a crash.
fn assert_candle_refuses(report: &Value) {
    let candle = unit(report, "candle:cpu");
    assert_eq!(candle["verdict"], "unusable", "{}", candle["evidence"]);
    assert_eq!((&candle["load_error"]["kind"], &candle["load_error"]["branch"]), (&"unsupported".into(), &"5a".into()));
}

#[test]
fn speech_doctor_measures_transcriptions_per_unit_in_every_format() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("speech.html");
    let extra = ["--predictions", "6", "--html", html.to_str().unwrap()];
    let (code, r) = doctor(&whisper(), "ort:cpu,candle:cpu", &extra, &[]);
    assert_eq!(code, Some(0), "{r}");
    assert_matches_schema(&r);
    assert_eq!(r["settings"]["kind"], "speech");
    let ort = unit(&r, "ort:cpu");
    assert_eq!(ort["verdict"], "ok", "{}", ort["evidence"]);
    assert!(ort["evidence"][0].as_str().unwrap().contains("x real time"), "{}", ort["evidence"]);
    let s = &ort["speech"];
    let speed = &s["speed"];
    assert_eq!(speed["transcriptions"], 6);
    assert_eq!(positive(&speed["clip_seconds"], "clip"), 4.0);
    for field in ["first_ms", "p50_ms", "p95_ms", "features_p50_ms", "encode_p50_ms", "generate_p50_ms"] {
        positive(&speed[field], field);
    }
    // The real-time factor is the clip's seconds per second of the round trip; each stage is faster than the whole.
    let rtf = positive(&speed["rtf"], "rtf");
    assert!((rtf - 4000.0 / positive(&speed["p50_ms"], "p50")).abs() < 1e-6 * rtf);
    for stage in ["rtf_features", "rtf_encode", "rtf_generate"] {
        assert!(positive(&speed[stage], stage) > rtf, "{stage} {} vs {rtf}", speed[stage]);
    }
    let tokens = speed["tokens"].as_u64().unwrap();
    assert!(tokens > 0 && s["token_ids"].as_array().unwrap().len() as u64 == tokens, "{s}");
    positive(&speed["decoder_tokens_per_s"], "decoder tokens/s");
    assert_eq!((&s["deterministic"], &s["agreement"]), (&Value::Bool(true), &Value::Null), "the first unit");
    assert_eq!(ort["memory"]["rss_bytes"].as_array().unwrap().len(), 6);
    let findings = ort["findings"].as_array().unwrap();
    assert!(findings.iter().any(|f| f["branch"] == "3a" && f["severity"] == "info"), "{findings:?}");
    // candle runs Whisper too: the second unit is measured and agrees with the first, token for token.
    let candle = unit(&r, "candle:cpu");
    assert_eq!(candle["verdict"], "ok", "{}", candle["evidence"]);
    let agreement = &candle["speech"]["agreement"];
    assert_eq!((&agreement["reference_unit"], &agreement["identical"]), (&"ort:cpu".into(), &Value::Bool(true)));
    assert_eq!(agreement["tokens"], tokens);
    assert!(candle["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["branch"] == "4a" && f["message"].as_str().unwrap().contains("token ids identical to ort:cpu's")));
    // Both serve: the faster first, the other as its fallback.
    let chain = r["recommendation"]["compute_units"].as_str().unwrap();
    assert!(chain == "ort:cpu,candle:cpu" || chain == "candle:cpu,ort:cpu", "{}", r["recommendation"]);
    assert!(r["recommendation"]["notes"][0].as_str().unwrap().contains("x real time"), "{}", r["recommendation"]);

    // The same report as tables (without measuring again) and as a page.
    let saved = dir.path().join("speech.json");
    std::fs::write(&saved, r.to_string()).unwrap();
    let out = bulkhead(&["doctor", "--from-json", saved.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["Speech (", "real time", "decoder tokens/s", "reference", "ort:cpu", "candle:cpu", "Memory (3a)"] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
    assert!(!text.contains("Input lengths") && !text.contains("Accuracy ("), "text sections stay out:\n{text}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && !page.to_ascii_lowercase().contains("<script"));
    for needle in ["Real-time factor per stage", "Resident memory over predictions", "decoder tokens/s", "ort:cpu"] {
        assert!(page.contains(needle), "`{needle}` missing from the page");
    }
}

#[test]
fn a_leak_per_transcription_is_the_leak_finding() {
    if !ready() {
        return;
    }
    let faults = r#"[{"unit":"ort:cpu","kind":"leak","mb":16}]"#;
    let (code, r) = doctor(&whisper(), "ort:cpu", &["--predictions", "10"], &[("BULKHEAD_FAULTS", faults)]);
    assert_eq!(code, Some(0), "{r}");
    let ort = unit(&r, "ort:cpu");
    assert_eq!(ort["verdict"], "leaks", "{}", ort["evidence"]);
    let slope = positive(&ort["memory"]["slope_mib_per_prediction"], "slope");
    assert!((slope - 16.0).abs() <= 4.0, "slope {slope} MiB/transcription, injected 16");
    let leak = ort["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["branch"] == "3a" && f["severity"] == "warning")
        .unwrap_or_else(|| panic!("no leak finding: {}", ort["findings"]));
    let message = leak["message"].as_str().unwrap();
    assert!(
        message.contains("MiB per transcription") && message.contains("serve with --recycle-growth-mb 256"),
        "{message}"
    );
}

#[test]
fn a_first_unit_that_crashes_is_reported_and_the_next_one_measured() {
    if !ready() {
        return;
    }
    let faults = r#"[{"unit":"candle:cpu","kind":"load_crash"}]"#;
    let (code, r) = doctor(&whisper(), "candle:cpu,ort:cpu", &["--predictions", "3"], &[("BULKHEAD_FAULTS", faults)]);
    assert_eq!(code, Some(0), "{r}");
    assert_matches_schema(&r);
    let candle = unit(&r, "candle:cpu");
    assert_eq!(candle["verdict"], "crashes", "{}", candle["evidence"]);
    assert_eq!((&candle["crash"]["signal"], &candle["crash"]["phase"]), (&"SIGSEGV".into(), &"loading".into()));
    assert!(candle["crash"]["stderr_tail"].as_str().unwrap().contains("load_crash"));
    assert!(candle["speech"].is_null());
    // The next unit is measured, and is the one the others would be compared with.
    let ort = unit(&r, "ort:cpu");
    assert_eq!(ort["verdict"], "ok", "{}", ort["evidence"]);
    assert!(ort["speech"]["agreement"].is_null());
    positive(&ort["speech"]["speed"]["rtf"], "rtf");
    assert_eq!(r["recommendation"]["compute_units"], "ort:cpu");
}

#[test]
fn segmentation_doctor_measures_the_encoder_and_clicks_per_unit() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("sam2.html");
    let extra = ["--iterations", "4", "--predictions", "20", "--html", html.to_str().unwrap()];
    let (code, r) = doctor(&sam2(), "ort:cpu,candle:cpu", &extra, &[]);
    assert_eq!(code, Some(0), "{r}");
    assert_matches_schema(&r);
    assert_eq!(r["settings"]["kind"], "segmentation");
    assert!(
        !r["model"]["findings"].as_array().unwrap().iter().any(|f| f["severity"] == "problem"),
        "a SAM2 folder needs no tokenizer: {}",
        r["model"]["findings"]
    );
    let ort = unit(&r, "ort:cpu");
    assert_eq!(ort["verdict"], "ok", "{}", ort["evidence"]);
    let seg = &ort["segmentation"];
    assert_eq!(seg["speed"]["input_side"], 128);
    for (step, runs) in [("encoder", 4), ("clicks", 20)] {
        let s = &seg["speed"][step];
        assert_eq!(s["runs"], runs, "{step}");
        for field in ["first_ms", "p50_ms", "p95_ms", "engine_p50_ms", "per_s"] {
            positive(&s[field], &format!("{step}.{field}"));
        }
    }
    // A click on a cached embedding skips the image encoder.
    let encoder = positive(&seg["speed"]["encoder"]["engine_p50_ms"], "encoder");
    let decoder = positive(&seg["speed"]["clicks"]["engine_p50_ms"], "decoder");
    assert!(decoder < encoder, "decoder {decoder} ms vs encoder {encoder} ms");
    assert_eq!(seg["embedding_reused"], true);
    assert_eq!(seg["masks"], 3);
    let iou = seg["iou_scores"].as_array().unwrap();
    assert!(iou.len() == 3 && iou.iter().all(|x| x.as_f64().unwrap().is_finite()), "{iou:?}");
    assert!(seg["foreground"].as_array().unwrap().iter().all(|x| (0.0..=1.0).contains(&x.as_f64().unwrap())));
    assert!(seg["agreement"].is_null(), "the first unit");
    assert_eq!(ort["memory"]["rss_bytes"].as_array().unwrap().len(), 20);
    assert_candle_refuses(&r);
    assert!(r["recommendation"]["notes"][0].as_str().unwrap().contains("clicks/s"), "{}", r["recommendation"]);

    let page = std::fs::read_to_string(&html).unwrap();
    for needle in ["Latency p50 per step", "Segmentation (", "clicks/s", "ort:cpu"] {
        assert!(page.contains(needle), "`{needle}` missing from the page");
    }
}

#[test]
fn a_crash_while_segmenting_names_the_prediction() {
    if !ready() {
        return;
    }
    let faults = r#"[{"unit":"ort:cpu","kind":"segv","after":3,"generations":[0]}]"#;
    let (code, r) =
        doctor(&sam2(), "ort:cpu", &["--iterations", "4", "--predictions", "4"], &[("BULKHEAD_FAULTS", faults)]);
    assert_eq!(code, Some(1), "no unit can serve: {r}");
    let ort = unit(&r, "ort:cpu");
    assert_eq!(ort["verdict"], "crashes", "{}", ort["evidence"]);
    assert_eq!((&ort["crash"]["signal"], &ort["crash"]["phase"]), (&"SIGSEGV".into(), &"predicting".into()));
    assert!(ort["crash"]["during"].as_str().unwrap().contains("image 4 through the encoder"), "{}", ort["crash"]);
    assert!(ort["segmentation"].is_null());
}

#[test]
fn bench_reports_real_time_factor_and_clicks_per_second() {
    if !ready() {
        return;
    }
    let args = |model: &Path, json: bool| {
        let mut a: Vec<String> = vec!["bench".into(), "--model".into(), model.to_str().unwrap().into()];
        a.extend(["--compute-units", "ort:cpu,candle:cpu", "--seconds", "0", "--iterations", "3"].map(String::from));
        if json {
            a.push("--json".into());
        }
        a
    };
    let run = |a: Vec<String>| {
        let out = bulkhead(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
        assert!(out.status.success(), "{a:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let r: Value = serde_json::from_str(&run(args(&whisper(), true))).unwrap();
    assert_eq!((&r["schema"], &r["kind"]), (&"bulkhead.bench/1".into(), &"speech".into()));
    let s = &unit(&r, "ort:cpu")["speech"];
    assert!(s["transcriptions"].as_u64().unwrap() >= 3, "{s}");
    for field in ["rtf", "rtf_encode", "rtf_generate", "decoder_tokens_per_s", "p50_ms"] {
        positive(&s[field], field);
    }
    positive(&unit(&r, "candle:cpu")["speech"]["rtf"], "candle rtf");
    let text = run(args(&whisper(), false));
    for needle in ["real time", "decoder tokens/s", "ort:cpu", "candle:cpu"] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }

    let r: Value = serde_json::from_str(&run(args(&sam2(), true))).unwrap();
    assert_eq!(r["kind"], "segmentation");
    let s = &unit(&r, "ort:cpu")["segmentation"];
    for step in ["encoder", "clicks"] {
        assert!(s[step]["runs"].as_u64().unwrap() >= 3, "{s}");
        positive(&s[step]["per_s"], step);
        positive(&s[step]["engine_p50_ms"], step);
    }
    assert!(unit(&r, "candle:cpu")["error"].as_str().unwrap().contains("does not run SAM2"));
    let text = run(args(&sam2(), false));
    for needle in ["images/s", "clicks/s", "ort:cpu"] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
}
