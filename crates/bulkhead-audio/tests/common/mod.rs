//! The committed clips and their references (tests/fixtures/speech/clips, written by
//! scripts/fixtures/make_audio.py): the index `reference.json`, float32 little-endian feature and PCM files, and the
//! comparison of stored frames.
#![allow(dead_code)]

use std::path::PathBuf;

use bulkhead_audio::{decode, FeatureConfig, FeatureExtractor, Features, Limits, Pcm};
use serde_json::Value;

/// The clips folder.
pub fn clips() -> PathBuf {
    bulkhead_testkit::fixture("speech/clips")
}

/// A clip's bytes.
pub fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(clips().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A clip decoded with the default limits.
pub fn decoded(name: &str) -> Pcm {
    decode(bytes(name), &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `reference.json`.
pub fn index() -> Value {
    let text = std::fs::read_to_string(clips().join("reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("reference.json is JSON")
}

/// The index entry of clip `name`.
pub fn clip(name: &str) -> Value {
    index()["clips"].as_array().unwrap().iter().find(|c| c["file"] == name).cloned().expect("clip in the index")
}

/// A float32 little-endian file of the fixture.
pub fn f32s(name: &str) -> Vec<f32> {
    bytes(name).chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// The extractor of a committed configuration (`whisper-80`, `qwen3-asr-128`), read from its JSON file.
pub fn extractor(config: &str) -> FeatureExtractor {
    let cfg = FeatureConfig::from_file(&clips().join(format!("{config}.json"))).expect("config parses");
    FeatureExtractor::new(cfg).expect("config is valid")
}

/// The largest |ours - reference| over the stored frames of a features entry (`frames` and `file`): every value
/// of every stored frame, padding frames included.
pub fn max_diff(ours: &Features, entry: &Value) -> f32 {
    let frames: Vec<usize> = entry["frames"].as_array().unwrap().iter().map(|f| f.as_u64().unwrap() as usize).collect();
    let want = f32s(entry["file"].as_str().unwrap());
    assert_eq!(want.len(), frames.len() * ours.n_mels, "{}: stored size", entry["file"]);
    let mut worst = 0f32;
    for (i, &frame) in frames.iter().enumerate() {
        assert!(frame < ours.n_frames, "stored frame {frame} past our {} frames", ours.n_frames);
        for mel in 0..ours.n_mels {
            worst = worst.max((ours.at(mel, frame) - want[i * ours.n_mels + mel]).abs());
        }
    }
    worst
}
