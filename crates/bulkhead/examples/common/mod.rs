//! What the benchmark examples share: the sentences, the engine registry, percentiles, and (in [`load`]) a server
//! process with a keep-alive load generator.
#![allow(dead_code)]

pub mod load;

use bulkhead_core::EngineKind;
use bulkhead_embed::Engines;

/// Single sentences of about 15 tokens.
pub const SENTENCES: [&str; 8] = [
    "The quick brown fox jumps over the lazy dog near the river.",
    "Which compute unit really computed this embedding today?",
    "Local inference should never lose a request to a crash.",
    "Embeddings map sentences to vectors that keep their meaning.",
    "A segmentation fault in a native runtime kills the process.",
    "Warm-up must prepare inputs exactly like live requests do.",
    "Batching concurrent requests keeps the cores busy and fast.",
    "Leaking workers are recycled before they run out of memory.",
];

/// Every CPU engine of this build.
pub fn engines() -> Engines {
    Engines::new(vec![
        (EngineKind::Ort, Box::new(bulkhead_ort::OrtEngine::default())),
        (EngineKind::Candle, Box::new(bulkhead_candle::CandleEngine)),
    ])
}

/// The `p` quantile (0..=1) of `v` (NaN when empty).
pub fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
