//! Prints a table of the time to compute the features of 30 s of audio (and to decode and resample the committed
//! clips), beside transformers' extractor timed by scripts/fixtures/make_audio.py on the same machine.
//!
//! `cargo run --release -p bulkhead-audio --example features_bench [RUNS]`

use std::time::{Duration, Instant};

use bulkhead_audio::{decode, FeatureConfig, FeatureExtractor, Limits, Padding};

fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let clips = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/speech/clips");
    let reference: serde_json::Value = std::fs::read_to_string(clips.join("reference.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let timing = &reference["timing_ms"];
    // The same input the fixture script times: 30 s of noise at 16 kHz (any signal costs the same).
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let audio: Vec<f32> = (0..480_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 0.2 - 0.1
        })
        .collect();

    println!("features of 30 s of 16 kHz audio, best of {runs} runs (ms)");
    println!("| config | bulkhead-audio | transformers numpy | transformers torch |");
    println!("|---|---:|---:|---:|");
    for (name, n_mels) in [("whisper-80", 80), ("qwen3-asr-128", 128)] {
        let fe = FeatureExtractor::new(FeatureConfig::whisper(n_mels)).expect("the Whisper defaults are valid");
        let ours = best_of(runs, || {
            std::hint::black_box(fe.extract(&audio, Padding::MaxLength));
        });
        let theirs = |path: &str| timing[format!("{name}/{path}")].as_f64().map_or("-".into(), |v| format!("{v:.2}"));
        println!("| {name} | {} | {} | {} |", ms(ours), theirs("numpy"), theirs("torch"));
    }
    let setup = best_of(runs, || {
        std::hint::black_box(FeatureExtractor::new(FeatureConfig::whisper(128)).ok());
    });
    println!("(making an extractor: {} ms, once per model)", ms(setup));

    println!();
    println!("decoding (and resampling to 16 kHz), best of {runs} runs (ms)");
    println!("| clip | audio s | decode | resample |");
    println!("|---|---:|---:|---:|");
    for name in
        ["speech.wav", "speech.flac", "speech.mp3", "speech.ogg", "speech.m4a", "stereo-44k.wav", "long-45s.mp3"]
    {
        let Ok(bytes) = std::fs::read(clips.join(name)) else { continue };
        let Ok(pcm) = decode(bytes.clone(), &Limits::default()) else { continue };
        let dec = best_of(runs, || {
            std::hint::black_box(decode(bytes.clone(), &Limits::default()).ok());
        });
        let res = best_of(runs, || {
            std::hint::black_box(pcm.clone().resampled(16000).ok());
        });
        println!("| {name} | {:.1} | {} | {} |", pcm.duration_s(), ms(dec), ms(res));
    }
}
