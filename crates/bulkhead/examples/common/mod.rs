//! What the benchmark examples share: the sentences, the engine registry, percentiles, and (in [`load`]) a server
//! process with a keep-alive load generator.
#![allow(dead_code, unused_imports)]

pub mod load;

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

pub use bulkhead_testkit::engines;

/// The `p` quantile (0..=1) of `v` by nearest rank (NaN when empty).
pub fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        bulkhead_testkit::percentile(v, p)
    }
}
