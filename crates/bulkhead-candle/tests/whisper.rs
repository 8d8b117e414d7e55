//! candle's Whisper (`bulkhead_candle`'s `whisper` module, through `bulkhead-speech`'s decoding) on `candle:cpu`
//! against what transformers computed on the committed random-weight fixture
//! (`tests/fixtures/speech/whisper-tiny-random`, made by `scripts/fixtures/make_whisper.py`): the encoder output of
//! every recorded input (largest absolute difference and cosine), the greedy token ids and text of every recorded
//! `generate()` call (identical; the English-only cases on a copy with the `.en` generation config), the float16
//! copy of the weights, the language detection, and the refusal of a speech model candle does not run. The mel
//! features are transformers' own (recorded beside the reference), so this checks the model, not the features.

use std::path::{Path, PathBuf};

use bulkhead_candle::CandleEngine;
use bulkhead_core::{Engine, EngineError, ModelFiles, Unit};
use bulkhead_speech::{MelFeatures, Task, TranscribeOptions, WhisperModel};
use bulkhead_testkit::cosine;
use serde_json::Value;

const MIN_COSINE: f64 = 0.9999;
/// Largest absolute difference allowed between candle's encoder output and transformers' (float32 on both sides).
const MAX_ENCODER_DIFF: f32 = 1e-4;
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

fn load(dir: &Path) -> WhisperModel {
    let cache = tempfile::tempdir().unwrap();
    let model = WhisperModel::load_with_cache(dir, &CandleEngine, &Unit::CANDLE_CPU, cache.path())
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    assert!(model.graphs().is_none(), "candle runs its own Whisper, no graphs");
    assert!(std::fs::read_dir(cache.path()).unwrap().next().is_none(), "nothing written to the graph cache");
    model
}

/// The cosine and largest difference of the encoder output at `rows` against the reference rows.
fn encoder_agreement(model: &mut WhisperModel, input: &Value, rows: &[usize], want: &[f32]) -> (f64, f32) {
    let got = model.encode(&features(input)).unwrap();
    let w = got.width;
    let picked: Vec<f32> = rows.iter().flat_map(|&r| got.data[r * w..(r + 1) * w].to_vec()).collect();
    assert_eq!(picked.len(), want.len());
    let diff = picked.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    (cosine(&picked, want), diff)
}

fn rows(reference: &Value) -> Vec<usize> {
    reference["encoder_rows"].as_array().unwrap().iter().map(|r| r.as_u64().unwrap() as usize).collect()
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

/// Runs every case of `reference` on the model of `dir` and asserts identical token ids and text.
fn check_cases(dir: &Path, reference: &Value, inputs: &Value) {
    let mut model = load(dir);
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
            english_model.get_or_insert_with(|| load(english.path()))
        } else {
            &mut model
        };
        let got = m.transcribe(&features(input), &options(case)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = ids(&case["token_ids"]);
        let same = got.token_ids == want && got.text == case["text"].as_str().unwrap();
        eprintln!(
            "{name:32} {} tokens, {} window(s): identical: {}",
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
        for pair in got.decoder_calls.windows(2) {
            assert!(pair[1].new_tokens == 1 || pair[1].past == 0, "{name}: a step after the prefix fed several tokens");
        }
    }
    assert!(failures.is_empty(), "token ids differ from transformers':\n{}", failures.join("\n"));
}

#[test]
fn encoder_matches_transformers() {
    let mut model = load(&folder());
    assert_eq!(model.report().unit, Unit::CANDLE_CPU);
    let reference = json(&folder().join("reference/reference.json"));
    for input in reference["inputs"].as_array().unwrap().iter().filter(|i| i["encoder"].is_string()) {
        let name = input["name"].as_str().unwrap();
        let want = floats(&folder().join("reference").join(input["encoder"].as_str().unwrap()));
        let (cos, diff) = encoder_agreement(&mut model, input, &rows(&reference), &want);
        eprintln!("candle encoder {name:10} cosine {cos:.7} max abs diff {diff:.2e}");
        assert!(cos >= MIN_COSINE, "{name}: encoder cosine {cos} < {MIN_COSINE}");
        assert!(diff <= MAX_ENCODER_DIFF, "{name}: encoder max abs diff {diff:.2e} > {MAX_ENCODER_DIFF:.0e}");
    }
}

#[test]
fn greedy_decoding_matches_transformers_token_for_token() {
    let reference = json(&folder().join("reference/reference.json"));
    check_cases(&folder(), &reference, &reference["inputs"]);
}

#[test]
fn language_detection_matches_transformers() {
    let mut model = load(&folder());
    let reference = json(&folder().join("reference/reference.json"));
    for input in reference["inputs"].as_array().unwrap() {
        let (code, _) = model.detect_language(&features(input)).unwrap();
        assert_eq!(format!("<|{code}|>"), input["detected_language"].as_str().unwrap(), "{}", input["name"]);
    }
}

/// The float16 copy, widened to float32 when loaded, against transformers' float32 model of the same weights.
#[test]
fn float16_weights_match_the_fp32_model_of_the_same_weights() {
    let half = folder().join("fp16");
    let dir = folder_with(&[
        ("config.json", half.join("config.json")),
        ("generation_config.json", half.join("generation_config.json")),
        ("model.safetensors", half.join("model.safetensors")),
    ]);
    let main = json(&folder().join("reference/reference.json"));
    let reference = json(&half.join("reference.json"));
    let mut model = load(dir.path());
    assert_eq!(model.report().precision.to_string(), "fp16");
    for name in reference["inputs"].as_array().unwrap() {
        let input = main["inputs"].as_array().unwrap().iter().find(|i| i["name"] == *name).unwrap();
        let want = floats(&half.join(format!("{}.encoder.bin", name.as_str().unwrap())));
        let (cos, diff) = encoder_agreement(&mut model, input, &rows(&main), &want);
        eprintln!("candle fp16 encoder {name:10} cosine {cos:.7} max abs diff {diff:.2e}");
        assert!(cos >= MIN_COSINE, "{name}: encoder cosine {cos} < {MIN_COSINE}");
    }
    drop(model);
    check_cases(dir.path(), &reference, &main["inputs"]);
}

#[test]
fn a_speech_model_candle_does_not_run_is_refused_with_the_reason() {
    let qwen = bulkhead_testkit::fixture("speech/qwen3-asr-tiny-random");
    let files = ModelFiles::open(&qwen).unwrap();
    let err = CandleEngine.load_whisper(&files, &Unit::CANDLE_CPU).expect("candle answers for speech").err().unwrap();
    assert!(matches!(err, EngineError::Unsupported { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("not a Whisper checkpoint") && text.contains("WhisperForConditionalGeneration"), "{text}");
}
