//! Times a Whisper folder on `ort:cpu`: the encoder (seconds of audio per second, one 30 s window per run) and the
//! greedy decoder (tokens per second: one token per step over the key/value caches).
//!
//! `cargo run -p bulkhead-speech --example whisper_bench -- FOLDER [TOKENS] [ROUNDS] [THREADS]` (100 tokens, 3 rounds,
//! ONNX Runtime's default intra-op thread count when THREADS is 0 or absent) prints one JSON line.
//! `scripts/bench/whisper_bench.py` builds a random-weight folder with whisper-base's real config and runs this beside
//! transformers (torch) and faster-whisper (CTranslate2) on the same folder, and prints the table. The features are a
//! fixed deterministic pattern (the speed does not depend on them); `TOKENS` tokens are decoded per round unless the
//! model ends sooner (the count is printed).

use std::path::PathBuf;
use std::time::Instant;

use bulkhead_core::Unit;
use bulkhead_ort::{OrtEngine, OrtOptions};
use bulkhead_speech::{MelFeatures, TranscribeOptions, WhisperModel};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(folder) = args.first().map(PathBuf::from) else {
        eprintln!("usage: whisper_bench FOLDER [TOKENS] [ROUNDS] [THREADS]");
        std::process::exit(2);
    };
    let tokens: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3).max(1);
    let intra_threads: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(0);
    let engine = OrtEngine::new(OrtOptions { intra_threads, ..Default::default() });
    let unit: Unit = "ort:cpu".parse().expect("a known unit");
    let start = Instant::now();
    let mut model = WhisperModel::load(&folder, &engine, &unit).unwrap_or_else(|e| {
        eprintln!("{}: {e}", folder.display());
        std::process::exit(1);
    });
    let load_s = start.elapsed().as_secs_f64();
    let (mels, frames) = (model.config().mel_bins, model.config().frames());
    let data: Vec<f32> = (0..mels * frames).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    let features = MelFeatures::new(mels, frames, data).expect("sizes match");
    let opts = TranscribeOptions { language: Some("en".into()), max_new_tokens: Some(tokens), ..Default::default() };
    // Warm-up: the first runs allocate ONNX Runtime's buffers.
    model.encode(&features).expect("encode");
    let warm = TranscribeOptions { max_new_tokens: Some(4), ..opts.clone() };
    model.transcribe(&features, &warm).expect("transcribe");

    let mut encoder = vec![];
    let mut decoding = vec![];
    let mut generated = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        model.encode(&features).expect("encode");
        encoder.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let out = model.transcribe(&features, &opts).expect("transcribe");
        decoding.push(t.elapsed().as_secs_f64());
        generated = out.token_ids.len();
    }
    let encoder_s = bulkhead_core::stats::median(&encoder);
    // A transcription runs the encoder once more; the rest is the cross keys/values and the decoding steps.
    let decode_s = (bulkhead_core::stats::median(&decoding) - encoder_s).max(1e-9);
    let audio_s = frames as f64 / 100.0;
    println!(
        "{{\"engine\": \"bulkhead ort:cpu\", \"load_s\": {load_s:.3}, \"encoder_s\": {encoder_s:.4}, \
         \"encoder_audio_s_per_s\": {:.2}, \"tokens\": {generated}, \"decode_s\": {decode_s:.4}, \
         \"tokens_per_s\": {:.1}}}",
        audio_s / encoder_s,
        generated as f64 / decode_s
    );
}
