//! Whisper served on `candle:cpu` end to end (`tests/fixtures/speech/whisper-tiny-random`): candle's `WhisperModel`
//! on transformers' own features of `speech-en.wav` gives transformers' token ids (the recorded `generate()` call at
//! the default length); `bulkhead serve --compute-units candle:cpu` with real worker processes answers, token for
//! token, what that model gives in this process on the features bulkhead-audio computes from the file (and ONNX
//! Runtime's model gives the same ids on them), says `candle:cpu` in `x-bulkhead-unit` and `/units`; the chain
//! `ort:cpu,candle:cpu` falls back to candle when ONNX Runtime's worker is killed (`BULKHEAD_FAULTS`), with the same
//! transcript; and Qwen3-ASR on candle is refused with the reason.

mod common;

use std::path::{Path, PathBuf};

use bulkhead_audio::{FeatureConfig, FeatureExtractor, Limits, Padding};
use bulkhead_candle::CandleEngine;
use bulkhead_core::{Availability, Engine, Unit};
use bulkhead_ort::OrtEngine;
use bulkhead_speech::{MelFeatures, TranscribeOptions, WhisperModel};
use common::{bulkhead, need, stderr, Server};

fn folder() -> PathBuf {
    common::fixture("speech/whisper-tiny-random")
}

fn clip(name: &str) -> PathBuf {
    common::fixture("speech/clips").join(name)
}

/// A response of [`transcribe`]: status, headers, body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// POSTs `file` and `fields` as a multipart form to `/v1/audio/transcriptions` over a fresh connection.
fn transcribe(server: &Server, file: &Path, fields: &[(&str, &str)]) -> Reply {
    use std::io::{Read, Write};
    let boundary = "bulkhead-test-boundary-3c9a";
    let mut body = vec![];
    for (k, v) in fields {
        body.extend(format!("--{boundary}\r\ncontent-disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").bytes());
    }
    let name = file.file_name().unwrap().to_str().unwrap();
    body.extend(
        format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
             content-type: application/octet-stream\r\n\r\n"
        )
        .bytes(),
    );
    body.extend_from_slice(&std::fs::read(file).unwrap());
    body.extend(format!("\r\n--{boundary}--\r\n").bytes());
    let addr = &server.addr;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(120))).unwrap();
    let head = format!(
        "POST /v1/audio/transcriptions HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: \
         multipart/form-data; boundary={boundary}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let mut raw = vec![];
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))).collect();
    Reply { status, headers, body: rest.to_string() }
}

/// Serves the fixture as `whisper` on `chain`.
fn serve(chain: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let model = format!("whisper={}", folder().display());
    let mut args = vec!["--model", model.as_str(), "--compute-units", chain];
    args.extend_from_slice(extra);
    Server::start(&args, env)
}

/// The `/units` entry of `unit` for the model `whisper`, and the unit serving it.
fn unit_view(server: &Server, unit: &str) -> (serde_json::Value, serde_json::Value) {
    let u = server.request("GET", "/units", &[], None).json()["models"]["whisper"].clone();
    let view = u["units"].as_array().unwrap().iter().find(|v| v["unit"] == unit).cloned();
    (view.unwrap_or_else(|| panic!("{unit}: {u}")), u["serving"].clone())
}

/// The token ids of a `verbose_json` transcript: its segments' tokens in order.
fn token_ids(v: &serde_json::Value) -> Vec<i64> {
    let segments = v["segments"].as_array().unwrap_or_else(|| panic!("no segments: {v}"));
    segments.iter().flat_map(|s| s["tokens"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap())).collect()
}

/// The features bulkhead-audio computes for `file` (what the server computes), one window.
fn audio_features(file: &Path) -> MelFeatures {
    let config = FeatureConfig::from_file(&folder().join("preprocessor_config.json")).unwrap();
    let extractor = FeatureExtractor::new(config).unwrap();
    let pcm = bulkhead_audio::load(std::fs::read(file).unwrap(), &Limits::default(), 16000).unwrap();
    let f = extractor.extract(&pcm.samples, Padding::MaxLength);
    MelFeatures::new(f.n_mels, f.n_frames, f.data).unwrap()
}

/// The features transformers computed for the reference input `name` (recorded beside the reference): `fill`
/// everywhere but the stored runs of frames.
fn reference_features(reference: &serde_json::Value, name: &str) -> MelFeatures {
    let input = reference["inputs"].as_array().unwrap().iter().find(|i| i["name"] == name).unwrap();
    // whisper-tiny-random's `num_mel_bins`.
    let (frames, data) = bulkhead_testkit::whisper_reference_features(&folder(), input, 80);
    MelFeatures::new(80, frames, data).unwrap()
}

fn segment_ids(t: &bulkhead_speech::Transcription) -> Vec<i64> {
    t.segments.iter().flat_map(|s| s.token_ids.iter().copied()).collect()
}

/// The form fields that turn the temperature fallback's checks off: greedy decoding, as transformers' `generate`.
const GREEDY: [(&str, &str); 3] =
    [("compression_ratio_threshold", "none"), ("logprob_threshold", "none"), ("no_speech_threshold", "none")];

#[test]
fn candle_serves_whisper_with_the_transformers_token_ids() {
    let server = serve("candle:cpu", &[], &[]);
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder().join("reference/reference.json")).unwrap()).unwrap();
    let case = reference["cases"].as_array().unwrap().iter().find(|c| c["name"] == "speech-en/default-length").unwrap();
    let want: Vec<i64> = case["token_ids"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap()).collect();
    let english = TranscribeOptions { language: Some("en".into()), ..TranscribeOptions::default() };

    // The model in this process on transformers' own features of speech-en.wav: transformers' token ids.
    let cache = tempfile::tempdir().unwrap();
    let mut local = WhisperModel::load_with_cache(&folder(), &CandleEngine, &Unit::CANDLE_CPU, cache.path()).unwrap();
    let got = local.transcribe(&reference_features(&reference, "speech-en"), &english).unwrap();
    eprintln!(
        "candle:cpu on transformers' features: {} token ids, identical: {}",
        got.token_ids.len(),
        got.token_ids == want
    );
    assert_eq!(got.token_ids, want, "the token ids of transformers' generate()");
    assert_eq!(got.text, case["text"].as_str().unwrap());

    // Served on candle:cpu: the server computes its own features (bulkhead-audio) from the file; the transcript is
    // the model's in this process on those features (the reference's text here), and with `verbose_json` (timestamps
    // on) the same token ids as the model with timestamps.
    let wav = folder().join("reference/speech-en.wav");
    let here = local.transcribe(&audio_features(&wav), &english).unwrap();
    let r = transcribe(&server, &wav, &[&[("model", "whisper"), ("language", "en")][..], &GREEDY].concat());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-bulkhead-unit"), Some("candle:cpu"));
    assert_eq!(r.json()["text"], here.text.as_str());
    // bulkhead-audio's features of this clip are close enough to transformers' for the same greedy decoding.
    assert_eq!(r.json()["text"], case["text"], "the served text is transformers' generate() text");
    let verbose = [("model", "whisper"), ("language", "en"), ("response_format", "verbose_json")];
    let r = transcribe(&server, &wav, &[&verbose[..], &GREEDY].concat());
    assert_eq!(r.status, 200, "{}", r.body);
    let timed = TranscribeOptions { timestamps: Some(true), ..english.clone() };
    let with_timestamps = local.transcribe(&audio_features(&wav), &timed).unwrap();
    assert_eq!(token_ids(&r.json()), segment_ids(&with_timestamps), "served token ids (timestamps on)");
    let timing = r.header("server-timing").unwrap_or_default();
    for stage in ["features", "encode", "generate"] {
        assert!(timing.contains(&format!("{stage};dur=")), "Server-Timing lacks {stage}: {timing}");
    }
    // ONNX Runtime's model in this process on the same features: the same token ids (the engines agree).
    let ort: Unit = "ort:cpu".parse().unwrap();
    if OrtEngine::default().availability(&ort) == Availability::Usable {
        let mut on_ort = WhisperModel::load_with_cache(&folder(), &OrtEngine::default(), &ort, cache.path()).unwrap();
        let there = on_ort.transcribe(&audio_features(&wav), &english).unwrap();
        eprintln!(
            "served candle:cpu vs ort:cpu in process: identical token ids: {}",
            here.token_ids == there.token_ids
        );
        assert_eq!(here.token_ids, there.token_ids, "candle:cpu and ort:cpu on the same features");
    }

    // Other clips and options: the served transcript is candle's WhisperModel in this process.
    for (name, language) in [("speech.wav", None), ("tone-440.wav", Some("de")), ("speech.mp3", Some("en"))] {
        let mut fields = vec![("model", "whisper")];
        fields.extend(language.map(|l| ("language", l)));
        fields.extend(GREEDY);
        let r = transcribe(&server, &clip(name), &fields);
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        assert_eq!(r.header("x-bulkhead-unit"), Some("candle:cpu"), "{name}");
        let opts = TranscribeOptions { language: language.map(str::to_string), ..TranscribeOptions::default() };
        let here = local.transcribe(&audio_features(&clip(name)), &opts).unwrap();
        assert_eq!(r.json()["text"], here.text.as_str(), "{name}");
    }
    let (candle, serving) = unit_view(&server, "candle:cpu");
    assert_eq!(serving, "candle:cpu", "{candle}");
    assert_eq!(candle["state"], "serving", "{candle}");
}

#[test]
fn the_chain_falls_back_to_candle_when_the_ort_worker_is_killed() {
    let ort: Unit = "ort:cpu".parse().unwrap();
    if let other @ (Availability::NotCompiled(_) | Availability::Unusable(_)) = OrtEngine::default().availability(&ort)
    {
        need::<()>(None, &format!("ONNX Runtime ({other:?})"));
        return;
    }
    // ONNX Runtime's worker segfaults on every transcription after its first; one crash quarantines the unit.
    let faults = r#"[{"unit": "ort:cpu", "kind": "segv", "after": 1}]"#;
    let server = serve("ort:cpu,candle:cpu", &["--quarantine-crashes", "1"], &[("BULKHEAD_FAULTS", faults)]);
    let speech = clip("speech.wav");
    let first = transcribe(&server, &speech, &[]);
    assert_eq!(first.status, 200, "{}", first.body);
    let mut answers = vec![first.header("x-bulkhead-unit").unwrap_or_default().to_string()];
    let mut texts = vec![first.json()["text"].clone()];
    while answers.last().map(String::as_str) != Some("candle:cpu") && answers.len() < 4 {
        let r = transcribe(&server, &speech, &[]);
        assert_eq!(r.status, 200, "request {}: {}\n{}", answers.len(), r.body, server.stderr());
        answers.push(r.header("x-bulkhead-unit").unwrap_or_default().to_string());
        texts.push(r.json()["text"].clone());
    }
    assert_eq!(answers.last().map(String::as_str), Some("candle:cpu"), "answered by {answers:?}");
    assert!(texts.windows(2).all(|w| w[0] == w[1]), "one transcript on both units: {texts:?}");
    let (ort, serving) = unit_view(&server, "ort:cpu");
    assert!(ort["crashes"].as_u64().unwrap_or_default() >= 1, "the segfault happened: {ort}");
    assert_eq!(serving, "candle:cpu", "{ort}");
    // Served on candle from now on.
    let r = transcribe(&server, &speech, &[]);
    assert_eq!((r.status, r.header("x-bulkhead-unit")), (200, Some("candle:cpu")), "{}", r.body);
    assert_eq!(r.json()["text"], texts[0]);
}

#[test]
fn qwen3_asr_on_candle_is_refused_with_the_reason() {
    let qwen = common::fixture("speech/qwen3-asr-tiny-random");
    let dir = tempfile::tempdir().unwrap();
    let speech = clip("speech.wav");
    let args =
        ["transcribe", "--compute-units", "candle:cpu", "--model", qwen.to_str().unwrap(), speech.to_str().unwrap()];
    let out = bulkhead(&args, &[("BULKHEAD_STATE_DIR", dir.path().to_str().unwrap())]);
    assert!(!out.status.success(), "Qwen3-ASR ran on candle:cpu");
    let err = stderr(&out);
    assert!(err.contains("candle:cpu") && err.contains("does not run Qwen3-ASR"), "{err}");
}
