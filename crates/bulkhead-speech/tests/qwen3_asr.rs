//! The Qwen3-ASR fixture (`tests/fixtures/speech/qwen3-asr-tiny-random`, a tiny random-weight
//! `Qwen3ASRForConditionalGeneration` made by `scripts/fixtures/make_qwen3_asr.py`) on `ort:cpu` against what the
//! `qwen-asr` package computed on it: the log-mel features of every input from its decoded audio (within 1e-4), the
//! audio encoder's output (cosine ≥ 0.9999), the prompt ids, and the greedy token ids, raw text, language and text
//! of every recorded case (identical); the package's output parsing and long-audio split on recorded cases; the
//! options it refuses. Tests skip with the reason when ONNX Runtime is absent.

use std::path::{Path, PathBuf};

use bulkhead_core::{Availability, Engine, Unit};
use bulkhead_ort::OrtEngine;
use bulkhead_speech::{parse_output, split_pieces, Qwen3AsrModel, RunLimits, SpeechError, Task, TranscribeOptions};
use bulkhead_testkit::cosine;
use serde_json::Value;

const MIN_COSINE: f64 = 0.9999;
const FEATURE_TOLERANCE: f32 = 1e-4;

fn folder() -> PathBuf {
    bulkhead_testkit::fixture("speech/qwen3-asr-tiny-random")
}

fn reference() -> Value {
    let path = folder().join("reference/reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn floats(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

/// A clip of tests/fixtures/speech/clips decoded by bulkhead-audio (16 kHz mono already).
fn clip(name: &str) -> Vec<f32> {
    let path = bulkhead_testkit::fixture("speech/clips").join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let pcm = bulkhead_audio::decode(bytes, &bulkhead_audio::Limits::default()).unwrap();
    assert_eq!(pcm.rate, 16000, "{name}");
    pcm.samples
}

/// The PCM of a recorded input, built as the fixture script builds it.
fn input_pcm(name: &str) -> Vec<f32> {
    match name {
        "speech" => clip("speech.wav"),
        "silence" => clip("silence.wav"),
        "tone" => clip("tone-440.wav"),
        "long" => [clip("speech.wav"), vec![0.0; 16000], clip("speech.wav"), clip("tone-440.wav")].concat(),
        other => panic!("unknown input {other}"),
    }
}

fn ort_cpu() -> Option<(OrtEngine, Unit)> {
    let engine = OrtEngine::default();
    let unit: Unit = "ort:cpu".parse().unwrap();
    match engine.availability(&unit) {
        Availability::Usable => Some((engine, unit)),
        other => bulkhead_testkit::need(None, &format!("ONNX Runtime ({other:?})")),
    }
}

fn load(cache: &Path) -> Option<Qwen3AsrModel> {
    let (engine, unit) = ort_cpu()?;
    Some(Qwen3AsrModel::load_with_cache(&folder(), &engine, &unit, cache).unwrap_or_else(|e| panic!("load: {e}")))
}

#[test]
fn features_encoder_and_greedy_ids_match_the_package() {
    let cache = tempfile::tempdir().unwrap();
    let Some(mut model) = load(cache.path()) else { return };
    let reference = reference();
    let eos = ids(&reference["eos_token_ids"]);
    let mut failures = vec![];
    println!(
        "{:<16} {:>7} {:>7} {:>12} {:>12} {:>10}",
        "input", "frames", "tokens", "feature Δmax", "cosine", "enc Δmax"
    );
    for input in reference["inputs"].as_array().unwrap() {
        let name = input["name"].as_str().unwrap();
        let pcm = input_pcm(name);
        assert_eq!(pcm.len() as u64, input["samples"].as_u64().unwrap(), "{name}: samples");
        let features = model.features(&pcm).unwrap();
        assert_eq!(features.frames as u64, input["frames"].as_u64().unwrap(), "{name}: frames");
        let frames: Vec<usize> =
            input["feature_frames"].as_array().unwrap().iter().map(|f| f.as_u64().unwrap() as usize).collect();
        let want = floats(&folder().join("reference").join(input["features"].as_str().unwrap()));
        let bins = features.mel_bins;
        assert_eq!(want.len(), frames.len() * bins, "{name}");
        let mut feature_diff = 0.0f32;
        for (k, &f) in frames.iter().enumerate() {
            for m in 0..bins {
                feature_diff = feature_diff.max((features.data[m * features.frames + f] - want[k * bins + m]).abs());
            }
        }
        let encoded = model.encode(&features).unwrap();
        let want = floats(&folder().join("reference").join(input["encoder"].as_str().unwrap()));
        assert_eq!(encoded.tokens as u64, input["audio_tokens"].as_u64().unwrap(), "{name}: audio tokens");
        assert_eq!(encoded.data.len(), want.len(), "{name}");
        let cos = cosine(&encoded.data, &want);
        let enc_diff = encoded.data.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        println!(
            "{name:<16} {:>7} {:>7} {feature_diff:>12.2e} {cos:>12.9} {enc_diff:>10.2e}",
            features.frames, encoded.tokens
        );
        if feature_diff > FEATURE_TOLERANCE {
            failures.push(format!("{name}: features differ by {feature_diff}"));
        }
        if cos < MIN_COSINE {
            failures.push(format!("{name}: encoder cosine {cos}"));
        }
    }

    for case in reference["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let input = case["input"].as_str().unwrap();
        let language = case["language"].as_str();
        let context = case["context"].as_str().unwrap();
        let opts = TranscribeOptions {
            language: language.map(str::to_string),
            prompt: (!context.is_empty()).then(|| context.to_string()),
            max_new_tokens: case["max_new_tokens"].as_u64().map(|n| n as usize),
            ..Default::default()
        };
        let pcm = input_pcm(input);
        let features = model.features(&pcm).unwrap();
        let tokens = model.config().audio_tokens(features.frames);
        let prompt = model.prompt_ids(context, language, tokens).unwrap();
        if prompt != ids(&case["prompt_ids"]) {
            failures.push(format!("{name}: prompt ids differ:\n  got  {prompt:?}\n  want {}", case["prompt_ids"]));
        }
        let got = model.transcribe_pcm(&pcm, &opts).unwrap();
        let mut want = ids(&case["token_ids"]);
        if want.last().is_some_and(|t| eos.contains(t)) {
            want.pop();
        }
        let raw = model.raw_text(&got.token_ids).unwrap();
        let calls = &got.decoder_calls;
        assert_eq!(calls[0].new_tokens, prompt.len(), "{name}: the prefill feeds the prompt");
        assert!(calls[1..].iter().all(|c| c.new_tokens == 1), "{name}: every later step feeds one token");
        let same = got.token_ids == want;
        println!("{name:<16} {} tokens, {}", got.token_ids.len(), if same { "identical" } else { "DIFFERENT" });
        if !same {
            failures.push(format!("{name}: token ids differ:\n  got  {:?}\n  want {want:?}", got.token_ids));
            continue;
        }
        let want_language = case["parsed_language"].as_str().unwrap();
        let checks = [
            ("raw text", raw.as_str(), case["raw"].as_str().unwrap()),
            ("text", got.text.as_str(), case["parsed_text"].as_str().unwrap()),
            ("language", got.language.as_deref().unwrap_or(""), want_language),
        ];
        for (what, g, w) in checks {
            if g != w {
                failures.push(format!("{name}: {what} differs: got {g:?}, want {w:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn output_parsing_and_long_audio_splits_match_the_package() {
    let reference = reference();
    for case in reference["parse_cases"].as_array().unwrap() {
        let raw = case["raw"].as_str().unwrap();
        let want = (case["language"].as_str().unwrap().to_string(), case["text"].as_str().unwrap().to_string());
        assert_eq!(parse_output(raw, None), want, "{raw:?}");
        let forced = &case["forced_french"];
        let want = (forced[0].as_str().unwrap().to_string(), forced[1].as_str().unwrap().to_string());
        assert_eq!(parse_output(raw, Some("French")), want, "{raw:?} with French forced");
    }
    let long = input_pcm("long");
    for case in reference["split_cases"].as_array().unwrap() {
        let pcm = match case["input"].as_str().unwrap() {
            "long" => long.clone(),
            "long[:35000]" => long[..35000].to_vec(),
            other => panic!("unknown split input {other}"),
        };
        let (max, expand) = (case["max_chunk_sec"].as_f64().unwrap(), case["search_expand_sec"].as_f64().unwrap());
        let pieces = split_pieces(&pcm, 16000, max, expand);
        let lengths: Vec<u64> = pieces.iter().map(|(_, p)| p.len() as u64).collect();
        let want: Vec<u64> = case["lengths"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(lengths, want, "{case}");
        let mut offset = 0.0f64;
        for ((start, piece), want) in pieces.iter().zip(case["offsets"].as_array().unwrap()) {
            assert!((offset - want.as_f64().unwrap()).abs() < 1e-9, "{case}: offset {offset}");
            assert_eq!(*start as f64 / 16000.0, offset, "{case}");
            offset += piece.len().min(pcm.len() - start) as f64 / 16000.0;
        }
    }
}

#[test]
fn refused_options_and_inputs_say_why() {
    let cache = tempfile::tempdir().unwrap();
    let Some(mut model) = load(cache.path()) else { return };
    let pcm = input_pcm("tone");
    let refuse = |model: &mut Qwen3AsrModel, opts: TranscribeOptions| match model.transcribe_pcm(&pcm, &opts) {
        Err(e) => e,
        Ok(t) => panic!("accepted {opts:?}: {t:?}"),
    };
    let e = refuse(&mut model, TranscribeOptions { task: Some(Task::Translate), ..Default::default() });
    assert!(matches!(e, SpeechError::Options(_)) && e.to_string().contains("translate"), "{e}");
    let e = refuse(&mut model, TranscribeOptions { timestamps: Some(true), ..Default::default() });
    assert!(e.to_string().contains("timestamps"), "{e}");
    let e = refuse(&mut model, TranscribeOptions { language: Some("Klingon".into()), ..Default::default() });
    assert!(matches!(e, SpeechError::Language(_)) && e.to_string().contains("English"), "{e}");
    let e = refuse(&mut model, TranscribeOptions { max_new_tokens: Some(1 << 20), ..Default::default() });
    assert!(e.to_string().contains("max_position_embeddings"), "{e}");
    // Whisper's temperature fallback is not Qwen3-ASR's: a first temperature above 0 is refused, 0 is greedy.
    let warm = Some(bulkhead_speech::Fallback::starting_at(0.4));
    let e = refuse(&mut model, TranscribeOptions { fallback: warm, ..Default::default() });
    assert!(e.to_string().contains("temperature 0.4: Qwen3-ASR decodes greedily"), "{e}");
    let greedy = model.transcribe_pcm(&pcm, &TranscribeOptions::default()).unwrap();
    let fallback = Some(bulkhead_speech::Fallback::default());
    let zero = model.transcribe_pcm(&pcm, &TranscribeOptions { fallback, ..Default::default() }).unwrap();
    assert_eq!(zero.token_ids, greedy.token_ids);
    let ok = model.transcribe_pcm(&pcm, &TranscribeOptions { language: Some("en".into()), ..Default::default() });
    assert_eq!(ok.unwrap().language.as_deref(), Some("English"));
    assert!(model.features(&[0.0; 100]).unwrap_err().to_string().contains("no feature frame"));
    let bad = bulkhead_speech::MelFeatures::new(80, 10, vec![0.0; 800]).unwrap();
    assert!(model.encode(&bad).unwrap_err().to_string().contains("mel bins"));
}

#[test]
fn a_folder_without_tokenizer_json_builds_it_from_vocab_and_merges() {
    let Some((engine, unit)) = ort_cpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(folder()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && path.file_name().unwrap() != "tokenizer.json" {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let cache = tempfile::tempdir().unwrap();
    let mut model = Qwen3AsrModel::load_with_cache(dir.path(), &engine, &unit, cache.path()).unwrap();
    let reference = reference();
    for case in reference["cases"].as_array().unwrap() {
        let (context, language) = (case["context"].as_str().unwrap(), case["language"].as_str());
        let tokens = model.features(&input_pcm(case["input"].as_str().unwrap())).unwrap().frames;
        let tokens = model.config().audio_tokens(tokens);
        assert_eq!(model.prompt_ids(context, language, tokens).unwrap(), ids(&case["prompt_ids"]), "{}", case["name"]);
        let raw = model.raw_text(&ids(&case["token_ids"])).unwrap();
        assert_eq!(raw, case["raw"].as_str().unwrap(), "{}", case["name"]);
    }
    let text = "language German<asr_text>Guten Morgen, wie geht es dir heute? 2026-12-07";
    let built = model.prompt_ids(text, Some("English"), 1).unwrap();
    let Some(mut original) = load(cache.path()) else { return };
    assert_eq!(original.prompt_ids(text, Some("English"), 1).unwrap(), built);
    let pcm = input_pcm("tone");
    let opts = TranscribeOptions { max_new_tokens: Some(8), ..Default::default() };
    // The same transcription, timings aside (they are measured, not computed).
    let untimed = |mut t: bulkhead_speech::Transcription| {
        (t.encode_ms, t.features_ms) = (0.0, 0.0);
        t
    };
    assert_eq!(
        untimed(model.transcribe_pcm(&pcm, &opts).unwrap()),
        untimed(original.transcribe_pcm(&pcm, &opts).unwrap())
    );
    std::fs::remove_file(dir.path().join("vocab.json")).unwrap();
    let e = Qwen3AsrModel::load_with_cache(dir.path(), &engine, &unit, cache.path()).err().expect("no tokenizer");
    assert!(e.to_string().contains("vocab.json"), "{e}");
}

#[test]
fn one_window_per_encoder_run_and_short_prefill_runs_give_the_same_ids() {
    let cache = tempfile::tempdir().unwrap();
    let Some(mut model) = load(cache.path()) else { return };
    model.set_run_limits(RunLimits { encoder_chunks: 1, prefill_tokens: 16 }).unwrap();
    assert!(model.set_run_limits(RunLimits { encoder_chunks: 0, prefill_tokens: 16 }).is_err());
    let reference = reference();
    let eos = ids(&reference["eos_token_ids"]);
    for input in reference["inputs"].as_array().unwrap() {
        let name = input["name"].as_str().unwrap();
        let encoded = model.encode(&model.features(&input_pcm(name)).unwrap()).unwrap();
        let want = floats(&folder().join("reference").join(input["encoder"].as_str().unwrap()));
        let cos = cosine(&encoded.data, &want);
        assert!(cos >= MIN_COSINE, "{name}: encoder cosine {cos} with one window per run");
    }
    for case in reference["cases"].as_array().unwrap() {
        let context = case["context"].as_str().unwrap();
        let opts = TranscribeOptions {
            language: case["language"].as_str().map(str::to_string),
            prompt: (!context.is_empty()).then(|| context.to_string()),
            max_new_tokens: case["max_new_tokens"].as_u64().map(|n| n as usize),
            ..Default::default()
        };
        let got = model.transcribe_pcm(&input_pcm(case["input"].as_str().unwrap()), &opts).unwrap();
        let mut want = ids(&case["token_ids"]);
        if want.last().is_some_and(|t| eos.contains(t)) {
            want.pop();
        }
        assert_eq!(got.token_ids, want, "{}", case["name"]);
        let prompt = ids(&case["prompt_ids"]).len();
        let prefill_runs = prompt.div_ceil(16);
        assert!(got.decoder_calls[..prefill_runs].iter().all(|c| c.new_tokens <= 16), "{}", case["name"]);
        assert_eq!(got.decoder_calls[prefill_runs].past, prompt, "{}", case["name"]);
    }
}
