//! Decode + preprocess time per image and processor, next to transformers' processor time recorded by
//! `scripts/fixtures/make_images.py` for the same image (PIL image in, tensors out; `load_image` separately).
//!
//! Run optimised: `cargo run --release -p bulkhead-image --example speed`.

use std::path::PathBuf;
use std::time::Instant;

use bulkhead_image::{decode, Limits, Preprocessor};
use serde_json::Value;

fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vision/images");
    let reference: Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).expect("run make_images.py first"))
            .expect("reference.json is JSON");
    println!("one thread; median of 15 runs; transformers times from the fixture script on its machine");
    println!();
    println!(
        "| processor | image | decode ms | preprocess ms | total ms | transformers load_image ms | transformers processor ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for name in ["clip", "siglip", "sam2"] {
        let config = std::fs::read_to_string(dir.join(format!("configs/{name}.json"))).expect("config");
        let pre = Preprocessor::from_json(&config).expect("valid config");
        for (image_name, case) in reference["processors"][name]["images"].as_object().expect("images") {
            let bytes = std::fs::read(dir.join(image_name)).expect("image");
            let decode_ms = median_ms(15, || {
                decode(&bytes, Limits::default()).expect("decodes");
            });
            let image = decode(&bytes, Limits::default()).expect("decodes").image;
            let pre_ms = median_ms(15, || {
                pre.preprocess(&image).expect("preprocesses");
            });
            let load_ms = reference["images"][image_name]["load_image_ms"].as_f64().unwrap_or(f64::NAN);
            let theirs = case["transformers_ms"].as_f64().unwrap_or(f64::NAN);
            println!(
                "| {name} | {image_name} ({}x{}) | {decode_ms:.3} | {pre_ms:.3} | {:.3} | {load_ms:.3} | {theirs:.3} |",
                image.width(),
                image.height(),
                decode_ms + pre_ms
            );
        }
    }
}
