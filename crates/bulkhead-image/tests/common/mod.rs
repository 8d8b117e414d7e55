//! Shared helpers of the integration tests: the fixture folder, its `reference.json`, hashing and statistics.
#![allow(dead_code)]

use std::path::PathBuf;

use bulkhead_image::{decode, Limits, RgbImage};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// `tests/fixtures/vision/images` (made by `scripts/fixtures/make_images.py`).
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vision/images")
}

/// The bytes of a fixture file.
pub fn read(name: &str) -> Vec<u8> {
    let path = fixtures().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run scripts/fixtures/make_images.py", path.display()))
}

/// The parsed `reference.json`.
pub fn reference() -> Value {
    serde_json::from_slice(&read("reference.json")).expect("reference.json is JSON")
}

/// A fixture image decoded with the default limits.
pub fn image(name: &str) -> RgbImage {
    decode(&read(name), Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}")).image
}

/// Lower-case hex SHA-256.
pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The little-endian bytes of `f32` values.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `f32` values from little-endian bytes.
pub fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Largest absolute difference.
pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Cosine similarity in f64 (the project's one definition).
#[allow(unused_imports)]
pub use bulkhead_core::stats::cosine;

/// (largest difference, mean difference, share of differing values) between two byte buffers.
pub fn byte_diff(a: &[u8], b: &[u8]) -> (u8, f64, f64) {
    assert_eq!(a.len(), b.len());
    let (mut max, mut sum, mut differing) = (0u8, 0u64, 0usize);
    for (&x, &y) in a.iter().zip(b) {
        let d = x.abs_diff(y);
        max = max.max(d);
        sum += u64::from(d);
        differing += usize::from(d != 0);
    }
    (max, sum as f64 / a.len() as f64, differing as f64 / a.len() as f64)
}
