//! candle's Whisper against ONNX Runtime's on one folder, side by side: the encoder (seconds of audio per second,
//! one 30 s window per run) and the greedy decoder (tokens per second, one token per step over the key/value
//! caches), both through `bulkhead-speech`'s `WhisperModel` (the same decoding), and whether both decoded the same
//! token ids.
//!
//! `cargo run --release -p bulkhead-candle --example whisper_speed -- FOLDER [TOKENS] [ROUNDS]` (100 tokens, 3
//! rounds) prints a markdown table and the load average. The units are interleaved round by round; the features are
//! a fixed deterministic pattern (the speed does not depend on them); `TOKENS` tokens are decoded per round unless
//! the model ends sooner (the count is printed). `scripts/bench/whisper_bench.py` builds a random-weight folder with
//! whisper-base's real config for this (see its `--folder-only`); `load s` of `ort:cpu` includes building its graphs
//! when they are not in bulkhead's graph cache yet.

use std::path::PathBuf;
use std::time::Instant;

use bulkhead_candle::CandleEngine;
use bulkhead_core::{Engine, Unit};
use bulkhead_ort::OrtEngine;
use bulkhead_speech::{MelFeatures, TranscribeOptions, WhisperModel};

struct Row {
    unit: Unit,
    model: WhisperModel,
    load_s: f64,
    encoder: Vec<f64>,
    decoding: Vec<f64>,
    tokens: Vec<i64>,
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(folder) = args.first().map(PathBuf::from) else {
        eprintln!("usage: whisper_speed FOLDER [TOKENS] [ROUNDS]");
        std::process::exit(2);
    };
    let tokens: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3).max(1);
    let load_before = load_average();
    let ort = OrtEngine::default();
    let engines: [(&dyn Engine, Unit); 2] =
        [(&ort, "ort:cpu".parse().expect("a unit")), (&CandleEngine, Unit::CANDLE_CPU)];
    let mut rows = vec![];
    for (engine, unit) in engines {
        let t = Instant::now();
        let model = WhisperModel::load(&folder, engine, &unit).unwrap_or_else(|e| {
            eprintln!("{unit}: {}: {e}", folder.display());
            std::process::exit(1);
        });
        rows.push(Row {
            unit,
            model,
            load_s: t.elapsed().as_secs_f64(),
            encoder: vec![],
            decoding: vec![],
            tokens: vec![],
        });
    }
    let (mels, frames) = (rows[0].model.config().mel_bins, rows[0].model.config().frames());
    let data: Vec<f32> = (0..mels * frames).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    let features = MelFeatures::new(mels, frames, data).expect("sizes match");
    let opts = TranscribeOptions { language: Some("en".into()), max_new_tokens: Some(tokens), ..Default::default() };
    let warm = TranscribeOptions { max_new_tokens: Some(4), ..opts.clone() };
    for row in &mut rows {
        row.model.encode(&features).expect("encode");
        row.model.transcribe(&features, &warm).expect("transcribe");
    }
    for _ in 0..rounds {
        for row in &mut rows {
            let t = Instant::now();
            row.model.encode(&features).expect("encode");
            row.encoder.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let out = row.model.transcribe(&features, &opts).expect("transcribe");
            row.decoding.push(t.elapsed().as_secs_f64());
            row.tokens = out.token_ids;
        }
    }
    let audio_s = frames as f64 / 100.0;
    let c = rows[0].model.config();
    println!(
        "\n{} (d_model {}, {} + {} layers, vocab {}), {rounds} rounds, medians\n",
        folder.display(),
        c.d_model,
        c.encoder_layers,
        c.decoder_layers,
        c.vocab
    );
    println!("| unit | load s | encoder s / 30 s window | encoder audio-s/s | tokens | decoder s | decoder tokens/s |");
    println!("|---|---|---|---|---|---|---|");
    for row in &rows {
        let encoder_s = bulkhead_core::stats::median(&row.encoder);
        // A transcription runs the encoder once more; the rest is the cross keys/values and the decoding steps.
        let decode_s = (bulkhead_core::stats::median(&row.decoding) - encoder_s).max(1e-9);
        // A decoding that ended after a token or two times nothing but noise: no rate for it.
        let rate = if row.tokens.len() < 10 {
            "- (ended early)".to_string()
        } else {
            format!("{:.1}", row.tokens.len() as f64 / decode_s)
        };
        println!(
            "| {} | {:.2} | {encoder_s:.4} | {:.1} | {} | {decode_s:.4} | {rate} |",
            row.unit,
            row.load_s,
            audio_s / encoder_s,
            row.tokens.len(),
        );
    }
    println!(
        "\nsame token ids on both units: {}; load average before {load_before}, after {}",
        if rows[0].tokens == rows[1].tokens { "yes" } else { "NO" },
        load_average()
    );
}
