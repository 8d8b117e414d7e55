//! Whisper's temperature fallback on the committed random-weight fixture (`tests/fixtures/speech/whisper-tiny-random`)
//! on `ort:cpu`, with transformers' recorded features as input: random weights repeat tokens, so greedy decoding
//! fails the default compression-ratio check and the window is decoded again at the next temperatures; the same
//! seed gives the same text; with every check off, and at a tiny temperature, the result is greedy decoding's token
//! for token; a window that is improbable and probably silent is skipped. Prints one line per case (temperature
//! kept, its compression ratio and average log-probability). Tests skip with the reason when ONNX Runtime is absent.

use std::path::{Path, PathBuf};

use bulkhead_core::{Availability, Engine, Unit};
use bulkhead_ort::OrtEngine;
use bulkhead_speech::{compression_ratio, Fallback, MelFeatures, TranscribeOptions, Transcription, WhisperModel};
use serde_json::Value;

const MEL_BINS: usize = 80;

fn folder() -> PathBuf {
    bulkhead_testkit::fixture("speech/whisper-tiny-random")
}

fn reference() -> Value {
    let path = folder().join("reference/reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The recorded features of the reference input `name`: `fill` everywhere but the stored runs of frames.
fn features(name: &str) -> MelFeatures {
    let reference = reference();
    let input = reference["inputs"].as_array().unwrap().iter().find(|i| i["name"] == name).unwrap();
    let (frames, data) = bulkhead_testkit::whisper_reference_features(&folder(), input, MEL_BINS);
    MelFeatures::new(MEL_BINS, frames, data).unwrap()
}

/// The fixture on `ort:cpu`, or `None` (with the reason printed) when ONNX Runtime is absent.
fn model(cache: &Path) -> Option<WhisperModel> {
    let engine = OrtEngine::default();
    let unit: Unit = "ort:cpu".parse().unwrap();
    match engine.availability(&unit) {
        Availability::Usable => {}
        other => return bulkhead_testkit::need(None, &format!("ONNX Runtime ({other:?})")),
    }
    Some(WhisperModel::load_with_cache(&folder(), &engine, &unit, cache).unwrap())
}

fn english(fallback: Option<Fallback>) -> TranscribeOptions {
    TranscribeOptions { language: Some("en".into()), fallback, ..TranscribeOptions::default() }
}

/// Fallback with every check off.
fn unchecked(temperatures: Vec<f32>) -> Fallback {
    Fallback {
        temperatures,
        compression_ratio_threshold: None,
        logprob_threshold: None,
        no_speech_threshold: None,
        ..Fallback::default()
    }
}

fn report(case: &str, t: &Transcription) {
    for s in &t.segments {
        let d = s.decoding.expect("a Whisper segment says how it was decoded");
        eprintln!(
            "{case:28} {:5.1}-{:5.1} s: {} attempt(s), kept T={}, compression ratio {:.3}, avg logprob {:.3}, \
             no-speech {:?}",
            s.start, s.end, d.attempts, d.temperature, d.compression_ratio, d.avg_logprob, d.no_speech_prob
        );
    }
}

#[test]
fn repetitive_greedy_output_falls_back_reproducibly() {
    let cache = tempfile::tempdir().unwrap();
    let Some(mut m) = model(cache.path()) else { return };
    let f = features("speech-en");
    let greedy = m.transcribe(&f, &english(None)).unwrap();
    report("greedy", &greedy);
    // The greedy window's own scores, as transformers computes them (end of text included when it was reached).
    let g = greedy.segments[0].decoding.unwrap();
    let eos = m.generation().eot();
    let window: Vec<i64> = greedy.token_ids.iter().copied().chain([eos]).collect();
    assert_eq!((g.temperature, g.attempts), (0.0, 1));
    assert!(
        g.compression_ratio > 2.4,
        "the fixture's greedy output should repeat itself (compression ratio {:.3} <= 2.4): {:?}",
        g.compression_ratio,
        greedy.text
    );
    assert!(
        (compression_ratio(&window, m.config().vocab) - g.compression_ratio).abs() < 1e-12
            || (compression_ratio(&greedy.token_ids, m.config().vocab) - g.compression_ratio).abs() < 1e-12
    );

    let fallback = m.transcribe(&f, &english(Some(Fallback::default()))).unwrap();
    report("default fallback", &fallback);
    let d = fallback.segments[0].decoding.unwrap();
    assert!(d.attempts > 1 && d.temperature > 0.0, "the fallback did not trigger: {d:?}");
    let schedule = Fallback::default().temperatures;
    assert_eq!(d.temperature, schedule[d.attempts - 1], "{d:?}");
    let passed = d.compression_ratio <= 2.4 && d.avg_logprob >= -1.0;
    assert!(passed || d.attempts == schedule.len(), "stopped at a failing temperature before the last: {d:?}");
    assert!(d.no_speech_prob.is_some_and(|p| (0.0..=1.0).contains(&p)), "{d:?}");
    // Every window's decoder runs: the no-speech run of the input up to <|startoftranscript|>, then each attempt.
    assert!(fallback.decoder_calls.len() > greedy.decoder_calls.len());

    // With the compression-ratio check alone, the first temperature whose output passes it is kept.
    let ratio_only = Fallback { logprob_threshold: None, ..Fallback::default() };
    let r = m.transcribe(&f, &english(Some(ratio_only))).unwrap();
    report("compression-ratio check only", &r);
    let rd = r.segments[0].decoding.unwrap();
    assert_eq!(rd.temperature, schedule[rd.attempts - 1], "{rd:?}");
    assert!(rd.attempts > 1 && (rd.compression_ratio <= 2.4 || rd.attempts == schedule.len()), "{rd:?}");

    // The same request twice (same seed): the same tokens; the result differs from greedy decoding.
    let again = m.transcribe(&f, &english(Some(Fallback::default()))).unwrap();
    assert_eq!(again.token_ids, fallback.token_ids);
    assert_eq!(again.segments[0].decoding, fallback.segments[0].decoding);
    assert_ne!(fallback.token_ids, greedy.token_ids);
    // A start above 0 skips greedy decoding; the temperature kept is on its schedule.
    let warm = m.transcribe(&f, &english(Some(Fallback::starting_at(0.5)))).unwrap();
    report("fallback from 0.5", &warm);
    let w = warm.segments[0].decoding.unwrap();
    assert_eq!(w.temperature, Fallback::starting_at(0.5).temperatures[w.attempts - 1]);
}

#[test]
fn long_audio_falls_back_window_by_window() {
    let cache = tempfile::tempdir().unwrap();
    let Some(mut m) = model(cache.path()) else { return };
    let f = features("long");
    let opts = TranscribeOptions { timestamps: Some(true), ..english(Some(Fallback::default())) };
    let t = m.transcribe(&f, &opts).unwrap();
    report("long, timestamps", &t);
    assert!(t.windows >= 2, "{} window(s)", t.windows);
    assert!(t.segments.iter().all(|s| s.decoding.is_some_and(|d| d.attempts >= 1)));
    assert_eq!(m.transcribe(&f, &opts).unwrap().token_ids, t.token_ids);
    // Each temperature alone, checks off: the scores the schedule walks through.
    let one = features("speech-en");
    for temperature in Fallback::default().temperatures {
        let t = m.transcribe(&one, &english(Some(unchecked(vec![temperature])))).unwrap();
        report(&format!("speech-en, T={temperature} alone"), &t);
    }
}

#[test]
fn without_checks_or_at_a_tiny_temperature_it_is_greedy() {
    let cache = tempfile::tempdir().unwrap();
    let Some(mut m) = model(cache.path()) else { return };
    for name in ["speech-en", "tone"] {
        let f = features(name);
        let greedy = m.transcribe(&f, &english(None)).unwrap();
        let off = m.transcribe(&f, &english(Some(unchecked(Fallback::default().temperatures)))).unwrap();
        assert_eq!(off.token_ids, greedy.token_ids, "{name}: checks off");
        assert_eq!(off.text, greedy.text, "{name}");
        assert_eq!(off.segments[0].decoding.unwrap().attempts, 1);
        let tiny = m.transcribe(&f, &english(Some(unchecked(vec![1e-5])))).unwrap();
        report(&format!("{name} at T=1e-5"), &tiny);
        assert_eq!(tiny.token_ids, greedy.token_ids, "{name}: tiny temperature");
        // Timestamped decoding too (the timestamp rules come before the temperature).
        let timed = TranscribeOptions { timestamps: Some(true), ..english(None) };
        let greedy = m.transcribe(&f, &timed).unwrap();
        let tiny = m.transcribe(&f, &TranscribeOptions { fallback: Some(unchecked(vec![1e-5])), ..timed }).unwrap();
        assert_eq!(tiny.token_ids, greedy.token_ids, "{name}: timestamps, tiny temperature");
    }
}

#[test]
fn improbable_silent_windows_are_skipped_and_bad_schedules_refused() {
    let cache = tempfile::tempdir().unwrap();
    let Some(mut m) = model(cache.path()) else { return };
    let f = features("silence");
    // Every window is "improbable" (log-probabilities are below 0) and "silent" (any probability is above -1).
    let skip_all = Fallback { logprob_threshold: Some(0.0), no_speech_threshold: Some(-1.0), ..Fallback::default() };
    let t = m.transcribe(&f, &english(Some(skip_all))).unwrap();
    assert!(t.segments.is_empty() && t.token_ids.is_empty() && t.text.is_empty(), "{t:?}");
    assert_eq!(t.windows, 1);
    // A silent-looking window with probable text is kept.
    let keep = Fallback { logprob_threshold: Some(-1e9), no_speech_threshold: Some(-1.0), ..Fallback::default() };
    let t = m.transcribe(&f, &english(Some(keep))).unwrap();
    assert_eq!(t.segments.len(), 1);

    for (bad, what) in [
        (Fallback { temperatures: vec![], ..Fallback::default() }, "empty"),
        (Fallback { temperatures: vec![0.0, -0.2], ..Fallback::default() }, "-0.2"),
        (Fallback { compression_ratio_threshold: Some(f64::NAN), ..Fallback::default() }, "compression_ratio"),
    ] {
        let e = m.transcribe(&f, &english(Some(bad))).unwrap_err().to_string();
        assert!(e.contains(what), "{e}");
    }
}
