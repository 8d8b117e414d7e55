//! The Whisper fixture (`tests/fixtures/speech/whisper-tiny-random`, a tiny random-weight
//! `WhisperForConditionalGeneration` made by `scripts/fixtures/make_whisper.py`) on `ort:cpu` against what
//! transformers computed on it: the encoder output of every input (cosine ≥ 0.9999), the greedy token ids and text
//! of every recorded `generate()` call (identical), the same with the weights stored in float16, and the cost of a
//! decoding step. The mel features are transformers' own (recorded beside the reference), so this checks the model
//! and the decoding, not the feature extraction. Tests skip with the reason when ONNX Runtime is absent.

use std::path::{Path, PathBuf};

use bulkhead_core::{Availability, Engine, Unit};
use bulkhead_ort::OrtEngine;
use bulkhead_speech::{MelFeatures, Task, TranscribeOptions, WhisperModel};
use bulkhead_testkit::cosine;
use serde_json::Value;

const MIN_COSINE: f64 = 0.9999;
const MEL_BINS: usize = 80;

fn folder() -> PathBuf {
    bulkhead_testkit::fixture("speech/whisper-tiny-random")
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn floats(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// The recorded features of `input`: `fill` everywhere but the stored runs of frames.
fn features(input: &Value) -> MelFeatures {
    let (frames, data) = bulkhead_testkit::whisper_reference_features(&folder(), input, MEL_BINS);
    MelFeatures::new(MEL_BINS, frames, data).unwrap()
}

/// ONNX Runtime's engine and `ort:cpu`, or `None` (with the reason printed) when the library is absent.
fn ort_cpu() -> Option<(OrtEngine, Unit)> {
    let engine = OrtEngine::default();
    let unit: Unit = "ort:cpu".parse().unwrap();
    match engine.availability(&unit) {
        Availability::Usable => Some((engine, unit)),
        other => bulkhead_testkit::need(None, &format!("ONNX Runtime ({other:?})")),
    }
}

fn load(dir: &Path, cache: &Path) -> WhisperModel {
    let (engine, unit) = ort_cpu().expect("checked by the caller");
    WhisperModel::load_with_cache(dir, &engine, &unit, cache).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// The cosine of the encoder output at the recorded rows against the reference rows, and the largest difference.
fn encoder_agreement(model: &mut WhisperModel, input: &Value, rows: &[usize], want: &[f32]) -> (f64, f32) {
    let got = model.encode(&features(input)).unwrap();
    let w = got.width;
    let picked: Vec<f32> = rows.iter().flat_map(|&r| got.data[r * w..(r + 1) * w].to_vec()).collect();
    assert_eq!(picked.len(), want.len());
    let diff = picked.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    (cosine(&picked, want), diff)
}

fn options(case: &Value) -> TranscribeOptions {
    TranscribeOptions {
        language: case["language"].as_str().map(str::to_string),
        task: case["task"].as_str().map(|t| if t == "translate" { Task::Translate } else { Task::Transcribe }),
        timestamps: case["return_timestamps"].as_bool(),
        prompt: case["prompt"].as_str().map(str::to_string),
        max_new_tokens: case["max_new_tokens"].as_u64().map(|n| n as usize),
        fallback: None,
    }
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

/// A copy of the fixture's files in a fresh folder, with `replace` (name, source) swapped in.
fn folder_with(replace: &[(&str, PathBuf)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
        .into_iter()
        .chain(["preprocessor_config.json"])
    {
        let src = replace.iter().find(|(n, _)| *n == f).map(|(_, p)| p.clone()).unwrap_or_else(|| folder().join(f));
        std::fs::copy(&src, dir.path().join(f)).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    }
    dir
}

/// Runs every case of `reference` on the model of `dir` (the English-only ones on a copy with their generation
/// config) and asserts identical token ids and text; prints one line per case.
fn check_cases(dir: &Path, reference: &Value, inputs: &Value) {
    let cache = tempfile::tempdir().unwrap();
    let mut model = load(dir, cache.path());
    let english = folder_with(&[
        ("generation_config.json", folder().join("reference/generation_config.en.json")),
        ("model.safetensors", dir.join("model.safetensors")),
    ]);
    let mut english_model = None;
    let mut failures = vec![];
    for case in reference["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let input = inputs.as_array().unwrap().iter().find(|i| i["name"] == case["input"]).unwrap();
        let m = if case["generation_config"].is_string() {
            english_model.get_or_insert_with(|| load(english.path(), cache.path()))
        } else {
            &mut model
        };
        let got = m.transcribe(&features(input), &options(case)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = ids(&case["token_ids"]);
        let same = got.token_ids == want && got.text == case["text"].as_str().unwrap();
        eprintln!(
            "{name:32} {} tokens, {} window(s): token ids match: {}",
            want.len(),
            got.windows,
            if same { "yes" } else { "NO" }
        );
        if !same {
            failures.push(format!(
                "{name}:\n  got  {:?} {:?}\n  want {want:?} {:?}",
                got.token_ids, got.text, case["text"]
            ));
        }
    }
    assert!(failures.is_empty(), "token ids differ from transformers':\n{}", failures.join("\n"));
}

#[test]
fn encoder_matches_transformers() {
    let Some(_) = ort_cpu() else { return };
    let cache = tempfile::tempdir().unwrap();
    let mut model = load(&folder(), cache.path());
    let reference = json(&folder().join("reference/reference.json"));
    let rows: Vec<usize> =
        reference["encoder_rows"].as_array().unwrap().iter().map(|r| r.as_u64().unwrap() as usize).collect();
    for input in reference["inputs"].as_array().unwrap().iter().filter(|i| i["encoder"].is_string()) {
        let name = input["name"].as_str().unwrap();
        let want = floats(&folder().join("reference").join(input["encoder"].as_str().unwrap()));
        let (cos, diff) = encoder_agreement(&mut model, input, &rows, &want);
        eprintln!("encoder {name:10} cosine {cos:.7} max abs diff {diff:.2e}");
        assert!(cos >= MIN_COSINE, "{name}: encoder cosine {cos} < {MIN_COSINE}");
    }
}

#[test]
fn greedy_decoding_matches_transformers_token_for_token() {
    let Some(_) = ort_cpu() else { return };
    let reference = json(&folder().join("reference/reference.json"));
    check_cases(&folder(), &reference, &reference["inputs"]);
}

#[test]
fn language_detection_matches_transformers() {
    let Some(_) = ort_cpu() else { return };
    let cache = tempfile::tempdir().unwrap();
    let mut model = load(&folder(), cache.path());
    let reference = json(&folder().join("reference/reference.json"));
    for input in reference["inputs"].as_array().unwrap() {
        let (code, _) = model.detect_language(&features(input)).unwrap();
        assert_eq!(format!("<|{code}|>"), input["detected_language"].as_str().unwrap(), "{}", input["name"]);
    }
}

/// The float16 copy against the float32 model of the same (rounded) weights.
#[test]
fn float16_weights_match_the_fp32_model_of_the_same_weights() {
    let Some(_) = ort_cpu() else { return };
    let half = folder().join("fp16");
    let dir = folder_with(&[
        ("config.json", half.join("config.json")),
        ("generation_config.json", half.join("generation_config.json")),
        ("model.safetensors", half.join("model.safetensors")),
    ]);
    let main = json(&folder().join("reference/reference.json"));
    let reference = json(&half.join("reference.json"));
    let rows: Vec<usize> =
        main["encoder_rows"].as_array().unwrap().iter().map(|r| r.as_u64().unwrap() as usize).collect();
    let cache = tempfile::tempdir().unwrap();
    let mut model = load(dir.path(), cache.path());
    for name in reference["inputs"].as_array().unwrap() {
        let input = main["inputs"].as_array().unwrap().iter().find(|i| i["name"] == *name).unwrap();
        let want = floats(&half.join(format!("{}.encoder.bin", name.as_str().unwrap())));
        let (cos, diff) = encoder_agreement(&mut model, input, &rows, &want);
        eprintln!("fp16 encoder {name:10} cosine {cos:.7} max abs diff {diff:.2e}");
        assert!(cos >= MIN_COSINE, "{name}: encoder cosine {cos} < {MIN_COSINE}");
    }
    drop(model);
    check_cases(dir.path(), &reference, &main["inputs"]);
}

#[test]
fn each_decoder_step_feeds_one_token_after_the_prefix() {
    let Some(_) = ort_cpu() else { return };
    let cache = tempfile::tempdir().unwrap();
    let mut model = load(&folder(), cache.path());
    let reference = json(&folder().join("reference/reference.json"));
    let input = &reference["inputs"][0];
    let opts = TranscribeOptions { language: Some("en".into()), max_new_tokens: Some(30), ..Default::default() };
    let got = model.transcribe(&features(input), &opts).unwrap();
    let calls = &got.decoder_calls;
    // <|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|>, then one token per step over a growing cache.
    assert_eq!((calls[0].new_tokens, calls[0].past), (4, 0));
    for (i, pair) in calls.windows(2).enumerate() {
        assert_eq!(pair[1].new_tokens, 1, "step {}", i + 1);
        assert_eq!(pair[1].past, pair[0].past + pair[0].new_tokens, "step {}", i + 1);
    }
    // 30 tokens generated: the prefix run and 29 single-token runs (the last token needs no run after it).
    assert_eq!((got.windows, calls.len()), (1, 30));
}

#[test]
fn config_errors_name_the_file_and_the_field() {
    let Some((engine, unit)) = ort_cpu() else { return };
    let cache = tempfile::tempdir().unwrap();
    let edit = |file: &str, from: &str, to: &str| {
        let text = std::fs::read_to_string(folder().join(file)).unwrap();
        assert!(text.contains(from), "{file} has no {from}");
        let dir = folder_with(&[]);
        std::fs::write(dir.path().join(file), text.replacen(from, to, 1)).unwrap();
        let err = WhisperModel::load_with_cache(dir.path(), &engine, &unit, cache.path()).err().expect("refused");
        (dir, err.to_string())
    };
    let (dir, e) = edit("config.json", "\"d_model\"", "\"d_model_renamed\"");
    assert!(
        e.contains(&dir.path().join("config.json").display().to_string()) && e.contains("`d_model` is missing"),
        "{e}"
    );
    let (dir, e) = edit("generation_config.json", "\"suppress_tokens\": [", "\"suppress_tokens\": [\"x\", ");
    assert!(e.contains(&dir.path().join("generation_config.json").display().to_string()), "{e}");
    assert!(e.contains("`suppress_tokens`"), "{e}");
    let (_, e) = edit("generation_config.json", "\"decoder_start_token_id\": 513", "\"decoder_start_token_id\": 99999");
    assert!(e.contains("`decoder_start_token_id` names token 99999"), "{e}");
    let (_, e) = edit("preprocessor_config.json", "\"feature_size\": 80", "\"feature_size\": 128");
    assert!(e.contains("preprocessor_config.json") && e.contains("`feature_size`"), "{e}");
}

#[test]
fn bad_options_and_features_are_refused() {
    let Some(_) = ort_cpu() else { return };
    let cache = tempfile::tempdir().unwrap();
    let mut model = load(&folder(), cache.path());
    let reference = json(&folder().join("reference/reference.json"));
    let f = features(&reference["inputs"][0]);
    fn err(model: &mut WhisperModel, f: &MelFeatures, opts: TranscribeOptions) -> String {
        model.transcribe(f, &opts).expect_err("refused").to_string()
    }
    let e = err(&mut model, &f, TranscribeOptions { language: Some("klingon".into()), ..Default::default() });
    assert!(e.contains("unknown language `klingon`"), "{e}");
    let e = err(&mut model, &f, TranscribeOptions { max_new_tokens: Some(446), ..Default::default() });
    assert!(e.contains("max_target_positions"), "{e}");
    let e = err(&mut model, &f, TranscribeOptions { prompt: Some("hi <|en|>".into()), ..Default::default() });
    assert!(e.contains("special token <|en|>"), "{e}");
    let wrong = MelFeatures::new(128, 10, vec![0.0; 1280]).unwrap();
    let e = err(&mut model, &wrong, TranscribeOptions::default());
    assert!(e.contains("128 mel bins"), "{e}");
}

#[test]
fn the_graphs_are_built_once_then_found_in_the_cache() {
    let Some(_) = ort_cpu() else { return };
    let cache = tempfile::tempdir().unwrap();
    let first = load(&folder(), cache.path());
    let g = first.graphs().expect("ort:cpu runs the built graphs");
    assert!(!g.encoder.cache_hit && !g.cross_kv.cache_hit && !g.decoder.cache_hit);
    let keys = [&g.encoder.key, &g.cross_kv.key, &g.decoder.key];
    assert!(keys[0] != keys[1] && keys[1] != keys[2], "one cache entry per graph");
    let second = load(&folder(), cache.path());
    let h = second.graphs().expect("ort:cpu runs the built graphs");
    assert!(h.encoder.cache_hit && h.cross_kv.cache_hit && h.decoder.cache_hit);
    assert_eq!([&h.encoder.key, &h.cross_kv.key, &h.decoder.key], keys);
    assert_eq!(second.report().unit.to_string(), "ort:cpu");
}
