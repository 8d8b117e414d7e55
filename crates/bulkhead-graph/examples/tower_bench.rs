//! Time of the vision tower graph built from a CLIP/SigLIP folder on ONNX Runtime CPU, per image.
//!
//! `cargo run --release -p bulkhead-graph --example tower_bench -- --model DIR [--batch N] [--seconds S]
//! [--threads T] [--warmup W] [--min-runs R] [--json]`
//!
//! Builds the vision tower (into a temporary cache), creates one session (ONNX Runtime's default optimisation
//! level, `T` intra-op threads, all cores by default), warms it up (`W` runs, 3 by default), then runs batches of `N`
//! random images (the folder's image size) for `S` seconds and at least `R` runs (5 by default), and prints the build
//! time, the session creation time, and the median and 90th percentile of the milliseconds per image over the runs;
//! `--json` prints them as one JSON line instead (what `scripts/bench/clip_bench.py` and
//! `scripts/bench/image_embed_bench.py` read, next to transformers' time for the same model).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use bulkhead_graph::{build_tower_cached, tower_model_files, tower_spec, BuildOptions, Tower};
use ort::session::SessionInputValue;
use ort::value::TensorRef;

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(model) = arg::<PathBuf>(&args, "--model") else {
        eprintln!(
            "usage: tower_bench --model DIR [--batch N] [--seconds S] [--threads T] [--warmup W] [--min-runs R] [--json]"
        );
        std::process::exit(2);
    };
    let batch: usize = arg(&args, "--batch").unwrap_or(1);
    let seconds: f64 = arg(&args, "--seconds").unwrap_or(5.0);
    let threads: usize =
        arg(&args, "--threads").unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let warmup: usize = arg(&args, "--warmup").unwrap_or(3);
    let min_runs: usize = arg(&args, "--min-runs").unwrap_or(5).max(1);
    let json = args.iter().any(|a| a == "--json");

    let files = tower_model_files(&model).unwrap_or_else(|e| panic!("{e}"));
    let spec = tower_spec(&files).unwrap_or_else(|e| panic!("{e}"));
    let cache = tempfile::tempdir().unwrap();
    let built = build_tower_cached(&files, Tower::Vision, &BuildOptions::default(), cache.path())
        .unwrap_or_else(|e| panic!("{e}"));
    let env = common::ort_env().unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let mut session = common::session(env, &built.path, threads);
    let session_ms = t.elapsed().as_secs_f64() * 1e3;

    // Deterministic pseudo-random pixels in [-2, 2) (a normalised image's range).
    let shape = [batch, spec.channels, spec.image_size, spec.image_size];
    let n: usize = shape.iter().product();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let pixels: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
        })
        .collect();
    let mut run = || {
        let input = TensorRef::from_array_view((shape, pixels.as_slice())).unwrap();
        let t = Instant::now();
        let out = session.run(vec![("pixel_values", SessionInputValue::from(input))]).unwrap();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        drop(out);
        ms / batch as f64
    };
    for _ in 0..warmup {
        run();
    }
    let start = Instant::now();
    let mut per_image = vec![];
    while start.elapsed().as_secs_f64() < seconds || per_image.len() < min_runs {
        per_image.push(run());
    }
    let p50 = common::percentile(&per_image, 0.5);
    let p90 = common::percentile(&per_image, 0.9);
    if json {
        println!(
            "{{\"engine\":\"bulkhead-graph ort:cpu\",\"batch\":{batch},\"threads\":{threads},\"runs\":{},\
             \"ms_per_image_p50\":{p50:.3},\"ms_per_image_p90\":{p90:.3},\"build_ms\":{:.1},\
             \"session_ms\":{session_ms:.1}}}",
            per_image.len(),
            built.build_ms
        );
    } else {
        println!(
            "{}: vision tower {}x{} px, batch {batch}, {threads} threads: {p50:.2} ms/image (p90 {p90:.2}) over {} \
             runs; graph built in {:.1} ms, session created in {session_ms:.0} ms",
            model.display(),
            spec.image_size,
            spec.image_size,
            per_image.len(),
            built.build_ms
        );
    }
}
