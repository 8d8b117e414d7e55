//! Speech to text end to end on the Whisper fixture (`tests/fixtures/speech/whisper-tiny-random`) and the audio
//! clips (`tests/fixtures/speech/clips`): `bulkhead serve` on port 0 with real worker processes, called with plain
//! HTTP multipart and with the official `openai` Python client in every response format; every transcript equals
//! `WhisperModel::transcribe` run in this process on the same file (decoded, resampled and featurised by
//! bulkhead-audio); bad files and options are 4xx JSON errors and the worker stays; a segfault mid-stream and a
//! leaking worker recycled under a stream of transcriptions lose no request; `bulkhead transcribe` prints the same
//! transcripts and exits 2 on a bad file.

mod common;

use std::path::{Path, PathBuf};

use bulkhead_audio::{FeatureConfig, FeatureExtractor, Limits, Padding};
use bulkhead_core::{Availability, Engine, Unit};
use bulkhead_ort::OrtEngine;
use bulkhead_speech::{Fallback, MelFeatures, Task, TranscribeOptions, WhisperModel};
use common::{bulkhead, need, stderr, venv_python, Server};

fn folder() -> PathBuf {
    common::fixture("speech/whisper-tiny-random")
}

fn clip(name: &str) -> PathBuf {
    common::fixture("speech/clips").join(name)
}

/// ONNX Runtime's CPU unit, or `None` (with the reason printed) where the library is absent.
fn ort_ready() -> Option<()> {
    let unit: Unit = "ort:cpu".parse().unwrap();
    match OrtEngine::default().availability(&unit) {
        Availability::Usable => Some(()),
        other => need(None, &format!("ONNX Runtime ({other:?})")),
    }
}

/// The Whisper fixture loaded in this process on `ort:cpu`, with its feature extractor.
struct Local {
    model: WhisperModel,
    extractor: FeatureExtractor,
    _cache: tempfile::TempDir,
}

impl Local {
    fn load() -> Local {
        let cache = tempfile::tempdir().unwrap();
        let unit: Unit = "ort:cpu".parse().unwrap();
        let model = WhisperModel::load_with_cache(&folder(), &OrtEngine::default(), &unit, cache.path()).unwrap();
        let config = FeatureConfig::from_file(&folder().join("preprocessor_config.json")).unwrap();
        Local { model, extractor: FeatureExtractor::new(config).unwrap(), _cache: cache }
    }

    /// The features of `file`, as the worker computes them.
    fn features(&self, file: &Path) -> MelFeatures {
        let bytes = std::fs::read(file).unwrap();
        let pcm = bulkhead_audio::load(bytes, &Limits::default(), self.extractor.sampling_rate()).unwrap();
        let f = self.extractor.extract(&pcm.samples, Padding::MaxLength);
        MelFeatures::new(f.n_mels, f.n_frames, f.data).unwrap()
    }

    /// What `WhisperModel::transcribe` gives for `file` with `task` and `timestamps`.
    fn transcribe(&mut self, file: &Path, task: Task, timestamps: Option<bool>) -> bulkhead_speech::Transcription {
        let features = self.features(file);
        // The served default (temperature 0): greedy decoding, then the fallback's schedule and checks.
        let fallback = Some(Fallback::default());
        let opts = TranscribeOptions { task: Some(task), timestamps, fallback, ..TranscribeOptions::default() };
        self.model.transcribe(&features, &opts).unwrap()
    }

    fn text(&mut self, file: &Path) -> String {
        self.transcribe(file, Task::Transcribe, None).text
    }
}

/// A response of [`multipart`]: status, headers, body.
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

    /// A 4xx with the JSON error body naming the problem (`expect` in its message).
    fn assert_error(&self, status: u16, expect: &str, what: &str) {
        assert_eq!(self.status, status, "{what}: {}", self.body);
        let v = self.json();
        let message = v["error"]["message"].as_str().unwrap_or_else(|| panic!("{what}: no message: {v}"));
        assert!(v["error"]["type"].is_string(), "{what}: no type: {v}");
        assert!(message.contains(expect), "{what}: `{message}` does not say `{expect}`");
    }
}

/// POSTs a multipart form (`fields`, then `file` when given as (file name, bytes)) over a fresh connection.
fn multipart(addr: &str, path: &str, fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> Reply {
    use std::io::{Read, Write};
    let boundary = "bulkhead-test-boundary-7d1f";
    let mut body = vec![];
    for (k, v) in fields {
        body.extend(format!("--{boundary}\r\ncontent-disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").bytes());
    }
    if let Some((name, bytes)) = file {
        body.extend(
            format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                 content-type: application/octet-stream\r\n\r\n"
            )
            .bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").bytes());
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(120))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: multipart/form-data; \
         boundary={boundary}\r\ncontent-length: {}\r\n\r\n",
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

fn transcribe(server: &Server, file: &Path, fields: &[(&str, &str)]) -> Reply {
    let bytes = std::fs::read(file).unwrap();
    let name = file.file_name().unwrap().to_str().unwrap();
    multipart(&server.addr, "/v1/audio/transcriptions", fields, Some((name, &bytes)))
}

/// Serves the fixture as `whisper` on `chain`.
fn serve(chain: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let model = format!("whisper={}", folder().display());
    let mut args = vec!["--model", model.as_str(), "--compute-units", chain];
    args.extend_from_slice(extra);
    Server::start(&args, env)
}

/// The `/units` view of the model.
fn units(server: &Server) -> serde_json::Value {
    server.request("GET", "/units", &[], None).json()["models"]["whisper"].clone()
}

/// The `/units` entry of `unit`.
fn unit_view(server: &Server, unit: &str) -> serde_json::Value {
    let u = units(server);
    u["units"].as_array().unwrap().iter().find(|v| v["unit"] == unit).unwrap_or_else(|| panic!("{unit}: {u}")).clone()
}

fn worker_pid(server: &Server) -> u64 {
    let v = unit_view(server, "ort:cpu");
    v["pid"].as_u64().unwrap_or_else(|| panic!("no worker pid: {v}"))
}

#[test]
fn served_transcripts_equal_in_process_ones_in_every_format_and_the_openai_client_reads_them() {
    if ort_ready().is_none() {
        return;
    }
    // (Whisper on candle:cpu is tested in speech_candle.rs.)
    let server = serve("ort:cpu", &[], &[]);
    let speech = clip("speech.wav");
    let mut local = Local::load();
    let plain = local.transcribe(&speech, Task::Transcribe, None);
    let timed = local.transcribe(&speech, Task::Transcribe, Some(true));
    let translated = local.transcribe(&speech, Task::Translate, None);

    // Plain HTTP: the transcript, who computed it and where the time went.
    let r = transcribe(&server, &speech, &[("model", "whisper")]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["text"], plain.text.as_str(), "the served transcript is the in-process one");
    assert_eq!(r.header("x-bulkhead-unit"), Some("ort:cpu"));
    let timing = r.header("server-timing").unwrap_or_default();
    for stage in ["decode", "queue", "infer", "features", "encode", "generate"] {
        assert!(timing.contains(&format!("{stage};dur=")), "Server-Timing lacks {stage}: {timing}");
    }
    // Every container of the clip decodes to a transcript (lossy ones to their own PCM).
    for name in ["speech.flac", "speech.mp3", "speech.ogg", "speech.m4a", "stereo-44k.wav"] {
        let r = transcribe(&server, &clip(name), &[]);
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        assert_eq!(r.json()["text"], local.text(&clip(name)).as_str(), "{name}");
    }
    assert_eq!(units(&server)["serving"], "ort:cpu");

    let Some(python) = need(venv_python(), "the project's .venv") else { return };
    let has_openai = std::process::Command::new(&python).args(["-c", "import openai"]).status();
    if !has_openai.is_ok_and(|s| s.success()) {
        bulkhead_testkit::skip("the openai package is absent (run scripts/setup.sh --test)");
        return;
    }
    let out = std::process::Command::new(python)
        .arg(common::repo().join("tests/python/openai_audio.py"))
        .args([format!("{}/v1", server.url()), "whisper".into(), speech.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "openai client: {}", stderr(&out));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["json"], plain.text.as_str());
    assert_eq!(got["text"].as_str().unwrap().trim_end(), plain.text.trim_end());
    assert_eq!(got["translation"], translated.text.as_str());
    let verbose = &got["verbose_json"];
    assert_eq!(verbose["text"], timed.text.as_str());
    let pcm = bulkhead_audio::load(std::fs::read(&speech).unwrap(), &Limits::default(), 16000).unwrap();
    assert!((verbose["duration"].as_f64().unwrap() - pcm.duration_s()).abs() < 1e-9, "{verbose}");
    assert_eq!(verbose["language"].as_str(), plain.language.as_deref().and_then(bulkhead_speech::language_name));
    let segments = verbose["segments"].as_array().unwrap();
    assert_eq!(segments.len(), timed.segments.len(), "{verbose}");
    for (g, w) in segments.iter().zip(&timed.segments) {
        assert_eq!((g["start"].as_f64().unwrap(), g["end"].as_f64().unwrap()), (w.start, w.end));
        assert_eq!(g["text"], w.text.as_str());
    }
    let cues = timed.segments.len();
    let srt = got["srt"].as_str().unwrap();
    assert_eq!(srt.matches(" --> ").count(), cues, "{srt}");
    let vtt = got["vtt"].as_str().unwrap();
    assert!(vtt.starts_with("WEBVTT") && vtt.matches(" --> ").count() == cues, "{vtt}");
    if let Some(first) = timed.segments.first() {
        assert!(srt.starts_with("1\n") && srt.contains(first.text.trim()), "{srt}");
    }
}

#[test]
fn bad_files_and_options_are_4xx_naming_the_problem_and_the_worker_stays() {
    if ort_ready().is_none() {
        return;
    }
    let server = serve("ort:cpu", &["--max-audio-s", "10"], &[]);
    let pid = worker_pid(&server);
    let speech = clip("speech.wav");
    // (clip, form fields, status, what the message must say)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], u16, &'a str);
    let cases: &[Case] = &[
        ("bad-png.wav", &[], 400, "not an audio file"),
        ("bad-empty.wav", &[], 400, "empty"),
        ("bad-opus.ogg", &[], 400, "unsupported audio codec"),
        ("bad-random.wav", &[], 400, "bad-random.wav"),
        ("bad-truncated.wav", &[], 400, "bad-truncated.wav"),
        ("long-45s.mp3", &[], 413, "--max-audio-s"),
        ("speech.wav", &[("response_format", "xml")], 422, "response_format `xml`"),
        ("speech.wav", &[("language", "klingon")], 422, "unknown language `klingon`"),
        ("speech.wav", &[("language", "yue")], 422, "<|yue|> is not one of the model's languages"),
        ("speech.wav", &[("temperature", "1.5")], 422, "temperature 1.5 is out of range"),
        ("speech.wav", &[("temperature", "hot")], 422, "temperature `hot`"),
        ("speech.wav", &[("seed", "-1")], 422, "seed `-1`"),
        ("speech.wav", &[("logprob_threshold", "low")], 422, "logprob_threshold `low`"),
        ("speech.wav", &[("timestamp_granularities[]", "word")], 422, "word"),
        ("speech.wav", &[("model", "nope")], 404, "nope"),
    ];
    for (file, fields, status, expect) in cases {
        let r = transcribe(&server, &clip(file), fields);
        r.assert_error(*status, expect, &format!("{file} {fields:?}"));
    }
    let r = multipart(&server.addr, "/v1/audio/transcriptions", &[("model", "whisper")], None);
    r.assert_error(400, "no `file` field", "a form without file");
    let r = server.request("POST", "/v1/audio/transcriptions", &[("content-type", "application/json")], Some("{}"));
    let r = Reply { status: r.status, headers: r.headers, body: r.body };
    r.assert_error(400, "multipart", "a JSON body");
    assert_eq!(worker_pid(&server), pid, "no bad input reached or killed the worker");
    let r = transcribe(&server, &speech, &[]);
    assert_eq!(r.status, 200, "still serving: {}", r.body);
}

#[test]
fn a_segfault_mid_stream_and_a_leaking_worker_lose_no_transcription() {
    if ort_ready().is_none() {
        return;
    }
    let speech = clip("speech.wav");
    let want = Local::load().text(&speech);
    // A segfault on the 4th transcription of the first worker: the request is retried on a fresh one.
    let segv = r#"[{"unit": "ort:cpu", "kind": "segv", "after": 3, "generations": [0]}]"#;
    let server = serve("ort:cpu", &[], &[("BULKHEAD_FAULTS", segv)]);
    for i in 0..6 {
        let r = transcribe(&server, &speech, &[]);
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        assert_eq!(r.json()["text"], want.as_str(), "request {i}");
    }
    let ort = unit_view(&server, "ort:cpu");
    assert!(ort["crashes"].as_u64().unwrap() >= 1, "the segfault happened: {ort}");
    drop(server);

    // 40 MiB kept per transcription, recycled past 150 MiB of growth: about every 4th request starts a new worker.
    let leak = r#"[{"unit": "ort:cpu", "kind": "leak", "mb": 40}]"#;
    let server = serve("ort:cpu", &["--recycle-growth-mb", "150"], &[("BULKHEAD_FAULTS", leak)]);
    for i in 0..20 {
        let r = transcribe(&server, &speech, &[]);
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        assert_eq!(r.json()["text"], want.as_str(), "request {i}");
    }
    let ort = unit_view(&server, "ort:cpu");
    assert!(ort["recycles"].as_u64().unwrap() >= 1, "the leaking worker was recycled: {ort}");
    assert_eq!(ort["crashes"].as_u64().unwrap(), 0, "{ort}");
}

#[test]
fn the_transcribe_command_prints_json_lines_and_refuses_a_bad_file_with_exit_2() {
    if ort_ready().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let model = folder();
    let (speech, tone) = (clip("speech.wav"), clip("tone-440.wav"));
    let mut local = Local::load();
    let args = ["transcribe", "--format", "json", "--compute-units", "ort:cpu", "--model", model.to_str().unwrap()];
    let files = [speech.to_str().unwrap(), tone.to_str().unwrap()];
    let out = bulkhead(&[&args[..], &files[..]].concat(), &[("BULKHEAD_STATE_DIR", state)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for (line, file) in lines.iter().zip([&speech, &tone]) {
        assert_eq!(line["text"], local.text(file).as_str(), "{line}");
        assert_eq!(line["unit"], "ort:cpu", "{line}");
    }

    let bad = clip("bad-png.wav");
    let out = bulkhead(&[&args[..], &[bad.to_str().unwrap()]].concat(), &[("BULKHEAD_STATE_DIR", state)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("bad-png.wav") && err.contains("not an audio file"), "{err}");
    let out = bulkhead(&["transcribe", "--model", model.to_str().unwrap(), "--language", "klingon", files[0]], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// Qwen3-ASR (`tests/fixtures/speech/qwen3-asr-tiny-random`) served by the same routes: each transcript equals
/// `Qwen3AsrModel::transcribe_pcm` in this process on the same decoded audio, a language is checked against its
/// `support_languages` before any worker runs, and translation and unknown languages are 422.
#[test]
fn qwen3_asr_is_served_by_the_same_routes_and_equals_the_model_in_process() {
    if ort_ready().is_none() {
        return;
    }
    let qwen = common::fixture("speech/qwen3-asr-tiny-random");
    let cache = tempfile::tempdir().unwrap();
    let unit: Unit = "ort:cpu".parse().unwrap();
    let mut local =
        bulkhead_speech::Qwen3AsrModel::load_with_cache(&qwen, &OrtEngine::default(), &unit, cache.path()).unwrap();
    let model = format!("qwen={}", qwen.display());
    let server = Server::start(&["--model", model.as_str(), "--compute-units", "ort:cpu"], &[]);
    for (name, language) in [("speech.wav", None), ("tone-440.wav", None), ("speech.mp3", Some("English"))] {
        let bytes = std::fs::read(clip(name)).unwrap();
        let pcm = bulkhead_audio::load(bytes, &Limits::default(), local.sampling_rate()).unwrap();
        let opts = TranscribeOptions { language: language.map(str::to_string), ..TranscribeOptions::default() };
        let want = local.transcribe_pcm(&pcm.samples, &opts).unwrap();
        let mut fields = vec![("model", "qwen"), ("response_format", "verbose_json")];
        if let Some(l) = language {
            fields.push(("language", l));
        }
        let r = transcribe(&server, &clip(name), &fields);
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        assert_eq!(r.header("x-bulkhead-unit"), Some("ort:cpu"));
        let v = r.json();
        assert_eq!(v["text"].as_str(), Some(want.text.as_str()), "{name}");
        assert_eq!(v["segments"].as_array().map(Vec::len), Some(want.segments.len()), "{name}: {v}");
        let timing = r.header("server-timing").unwrap_or_default();
        for stage in ["features", "encode", "generate"] {
            assert!(timing.contains(stage), "{name}: {timing}");
        }
    }
    // Plain text and SRT: its pieces are the segments.
    let srt = transcribe(&server, &clip("speech.wav"), &[("model", "qwen"), ("response_format", "srt")]);
    assert_eq!(srt.status, 200, "{}", srt.body);
    assert!(srt.body.starts_with("1\n00:00:00,000 --> "), "{}", srt.body);
    // Refused before any worker: a language it lacks, and translation.
    transcribe(&server, &clip("speech.wav"), &[("model", "qwen"), ("language", "Klingon")]).assert_error(
        422,
        "Klingon",
        "a language Qwen3-ASR lacks",
    );
    let bytes = std::fs::read(clip("speech.wav")).unwrap();
    multipart(&server.addr, "/v1/audio/translations", &[("model", "qwen")], Some(("speech.wav", &bytes))).assert_error(
        422,
        "does not translate",
        "translation on Qwen3-ASR",
    );
    // Whisper's temperature fallback is not Qwen3-ASR's: a temperature above 0 is refused by the worker, which stays.
    let r = transcribe(&server, &clip("speech.wav"), &[("model", "qwen"), ("temperature", "0.4")]);
    assert!(
        (400..500).contains(&r.status) && r.body.contains("Qwen3-ASR decodes greedily"),
        "{}: {}",
        r.status,
        r.body
    );
}

/// Whisper's temperature fallback through the API and the CLI: the default request (temperature 0) falls back on the
/// fixture's repetitive greedy output and its `verbose_json` segments say which temperature was kept, with their
/// scores, as the model in this process with the same seed; the same request twice gives the same text; with every
/// check `none` the answer is greedy decoding's; `bulkhead transcribe` takes the same options.
#[test]
fn temperature_fallback_is_served_reproducibly_and_reported_per_segment() {
    if ort_ready().is_none() {
        return;
    }
    let server = serve("ort:cpu", &[], &[]);
    let speech = clip("speech.wav");
    let mut local = Local::load();
    let features = local.features(&speech);
    let run = |local: &mut Local, fallback: Option<Fallback>| {
        let opts = TranscribeOptions { timestamps: Some(true), fallback, ..TranscribeOptions::default() };
        local.model.transcribe(&features, &opts).unwrap()
    };
    let greedy = run(&mut local, None);
    let g = greedy.segments[0].decoding.unwrap();
    eprintln!("greedy, timestamps: {g:?}");
    assert!(g.compression_ratio > 2.4 || g.avg_logprob < -1.0, "the fixture's greedy output fails a check: {g:?}");
    let want = run(&mut local, Some(Fallback::default()));
    let verbose = [("response_format", "verbose_json")];
    let r = transcribe(&server, &speech, &verbose);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let segments = v["segments"].as_array().unwrap();
    assert_eq!(segments.len(), want.segments.len(), "{v}");
    for (got, w) in segments.iter().zip(&want.segments) {
        let d = w.decoding.unwrap();
        eprintln!("served segment: {got}");
        assert_eq!(got["temperature"].as_f64().unwrap(), f64::from(d.temperature), "{got}");
        // (JSON keeps 17 significant digits: equal to the last bits or so.)
        let close =
            |field: &str, want: f64| (got[field].as_f64().unwrap() - want).abs() <= 1e-12 * want.abs().max(1e-9);
        assert!(close("avg_logprob", d.avg_logprob), "{got} vs {d:?}");
        assert!(close("compression_ratio", d.compression_ratio), "{got} vs {d:?}");
        assert!(close("no_speech_prob", d.no_speech_prob.unwrap()), "{got} vs {d:?}");
    }
    assert!(segments.iter().any(|s| s["temperature"].as_f64().unwrap() > 0.0), "the fallback triggered: {v}");
    assert_eq!(v["text"], want.text.as_str());
    let again = transcribe(&server, &speech, &verbose);
    assert_eq!(again.json()["text"], v["text"], "the same request gives the same text");
    // Another seed: the model in this process with that seed.
    let seeded = run(&mut local, Some(Fallback { seed: 7, ..Fallback::default() }));
    let r = transcribe(&server, &speech, &[("response_format", "verbose_json"), ("seed", "7")]);
    assert_eq!(r.json()["text"], seeded.text.as_str());
    // Every check off: greedy decoding, token for token.
    let off = [("compression_ratio_threshold", "none"), ("logprob_threshold", "none"), ("no_speech_threshold", "none")];
    let r = transcribe(&server, &speech, &[&verbose[..], &off[..]].concat());
    assert_eq!(r.json()["text"], greedy.text.as_str());
    assert!(r.json()["segments"].as_array().unwrap().iter().all(|s| s["temperature"] == 0.0), "{}", r.body);
    // A start above 0: the schedule from there.
    let r = transcribe(&server, &speech, &[("response_format", "verbose_json"), ("temperature", "0.5")]);
    assert_eq!(r.status, 200, "{}", r.body);
    let warm = run(&mut local, Some(Fallback::starting_at(0.5)));
    assert_eq!(r.json()["text"], warm.text.as_str());
    for s in r.json()["segments"].as_array().unwrap() {
        let t = s["temperature"].as_f64().unwrap() as f32;
        assert!(Fallback::starting_at(0.5).temperatures.contains(&t), "{s}");
    }
    drop(server);

    // The CLI: the same options, the same answers.
    let dir = tempfile::tempdir().unwrap();
    let env = [("BULKHEAD_STATE_DIR", dir.path().to_str().unwrap())];
    let model = folder();
    let base =
        ["transcribe", "--format", "verbose_json", "--compute-units", "ort:cpu", "--model", model.to_str().unwrap()];
    let cli = |extra: &[&str]| {
        let out = bulkhead(&[&base[..], extra, &[speech.to_str().unwrap()]].concat(), &env);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let line = cli(&["--seed", "7"]);
    assert_eq!(line["text"], seeded.text.as_str(), "{line}");
    assert!(line["segments"][0]["compression_ratio"].is_number(), "{line}");
    let line =
        cli(&["--compression-ratio-threshold", "none", "--logprob-threshold", "none", "--no-speech-threshold", "none"]);
    assert_eq!(line["text"], greedy.text.as_str(), "{line}");
    let out = bulkhead(
        &["transcribe", "--model", model.to_str().unwrap(), "--temperature", "-1", speech.to_str().unwrap()],
        &env,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--temperature -1: give a number >= 0"), "{}", stderr(&out));
}
