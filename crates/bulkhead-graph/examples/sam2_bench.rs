//! SAM2 speed: the two graphs built from a `Sam2Model` folder on ONNX Runtime CPU against transformers (torch) on
//! the same weights with the same thread count.
//!
//! ```text
//! /work/fixture-venv/bin/python scripts/fixtures/bench_sam2.py --write /tmp/sam2-hiera-tiny-random
//! cargo run --release -p bulkhead-graph --example sam2_bench -- --model /tmp/sam2-hiera-tiny-random \
//!     [--threads 2] [--runs 5] [--clicks 30] [--python /work/fixture-venv/bin/python]
//! ```
//!
//! `--export DIR` writes the two graphs as self-contained files `DIR/vision_encoder.onnx` and
//! `DIR/prompt_encoder_mask_decoder.onnx` instead of measuring.
//!
//! The folder is a random-weight model with sam2.1-hiera-tiny's configuration (what the script writes). Prints one
//! table: graph build time, session creation, encoder latency on one 1024×1024 image (median and best of `--runs`
//! after a warm-up) and decoder throughput (one foreground point per click, `multimask_output`, on the kept
//! embeddings: clicks/s over `--clicks`), for the built graphs and for transformers run by
//! `scripts/fixtures/bench_sam2.py --time` (torch at benchmark time only; the row is skipped when that Python is
//! absent). The two rows run one after the other, so background load can favour either: repeat and compare.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use bulkhead_core::ModelFiles;
use bulkhead_graph::sam2::{build_sam2_cached, export_sam2, Sam2Graph, IMAGE_EMBEDDINGS};
use ort::session::SessionInputValue;
use ort::value::TensorRef;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model_dir = PathBuf::from(arg(&args, "--model").expect("--model DIR (see the example's documentation)"));
    let threads: usize = arg(&args, "--threads").map_or(2, |s| s.parse().expect("--threads N"));
    let runs: usize = arg(&args, "--runs").map_or(5, |s| s.parse().expect("--runs N"));
    let clicks: usize = arg(&args, "--clicks").map_or(30, |s| s.parse().expect("--clicks N"));
    let python = arg(&args, "--python").unwrap_or_else(|| "/work/fixture-venv/bin/python".into());

    let env = common::ort_env().expect("ONNX Runtime");
    let model = ModelFiles::open(&model_dir).expect("model folder");
    if let Some(dir) = arg(&args, "--export") {
        // Self-contained files, e.g. to compare with transformers from Python.
        let dir = PathBuf::from(dir);
        export_sam2(&model, Sam2Graph::VisionEncoder, &dir.join("vision_encoder.onnx")).unwrap();
        export_sam2(&model, Sam2Graph::PromptEncoderMaskDecoder, &dir.join("prompt_encoder_mask_decoder.onnx"))
            .unwrap();
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let enc = build_sam2_cached(&model, Sam2Graph::VisionEncoder, cache.path()).unwrap();
    let dec = build_sam2_cached(&model, Sam2Graph::PromptEncoderMaskDecoder, cache.path()).unwrap();
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let mut encoder = common::session(env, &enc.path, threads);
    let mut decoder = common::session(env, &dec.path, threads);
    let session_ms = t.elapsed().as_secs_f64() * 1e3;

    // A deterministic pseudo-random image in model input space.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let pixels: Vec<f32> = (0..3 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
        })
        .collect();
    let mut encode = || {
        let input = TensorRef::from_array_view(([1usize, 3, 1024, 1024], pixels.as_slice())).unwrap();
        let out = encoder.run(vec![("pixel_values".to_string(), SessionInputValue::from(input))]).unwrap();
        IMAGE_EMBEDDINGS.map(|n| {
            let (shape, data) = out[n].try_extract_tensor::<f32>().unwrap();
            (shape.iter().map(|&d| d as usize).collect::<Vec<_>>(), data.to_vec())
        })
    };
    let embeddings = encode();
    let mut times = vec![];
    for _ in 0..runs {
        let t = Instant::now();
        encode();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let (median, best) = (times[times.len() / 2], times[0]);

    let side = embeddings[0].0[2];
    let mask = vec![0f32; side * side];
    let mut click = |i: usize| {
        let e = |k: usize| TensorRef::from_array_view((embeddings[k].0.clone(), embeddings[k].1.as_slice())).unwrap();
        let points = [400.0 + i as f32, 650.0 + i as f32];
        let feed: Vec<(String, SessionInputValue<'_>)> = vec![
            (IMAGE_EMBEDDINGS[0].into(), e(0).into()),
            (IMAGE_EMBEDDINGS[1].into(), e(1).into()),
            (IMAGE_EMBEDDINGS[2].into(), e(2).into()),
            ("input_points".into(), TensorRef::from_array_view(([1usize, 1, 1, 2], &points[..])).unwrap().into()),
            ("input_labels".into(), TensorRef::from_array_view(([1usize, 1, 1], &[1i64][..])).unwrap().into()),
            ("input_boxes".into(), TensorRef::from_array_view(([1usize, 0, 4], &[] as &[f32])).unwrap().into()),
            (
                "input_masks".into(),
                TensorRef::from_array_view(([1usize, 1, side, side], mask.as_slice())).unwrap().into(),
            ),
            ("has_mask_input".into(), TensorRef::from_array_view(([1usize], &[0f32][..])).unwrap().into()),
        ];
        let out = decoder.run(feed).unwrap();
        out["pred_masks"].try_extract_tensor::<f32>().unwrap().1[0]
    };
    click(0);
    let t = Instant::now();
    for i in 0..clicks {
        click(i);
    }
    let clicks_per_s = clicks as f64 / t.elapsed().as_secs_f64();

    println!("SAM2 {} ({threads} threads, {runs} encoder runs, {clicks} clicks)", model_dir.display());
    println!("| engine | build ms | session ms | encoder ms (median) | encoder ms (best) | decoder clicks/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| built graphs, ONNX Runtime CPU | {build_ms:.0} | {session_ms:.0} | {median:.0} | {best:.0} | \
         {clicks_per_s:.1} |"
    );
    let torch = std::process::Command::new(&python)
        .args(["scripts/fixtures/bench_sam2.py", "--time"])
        .arg(&model_dir)
        .args(["--threads", &threads.to_string(), "--runs", &runs.to_string(), "--clicks", &clicks.to_string()])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output();
    match torch {
        Ok(o) if o.status.success() => {
            let line = String::from_utf8_lossy(&o.stdout);
            let v: serde_json::Value = serde_json::from_str(line.lines().last().unwrap_or("{}")).unwrap();
            let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "| transformers (torch eager) | – | – | {:.0} | {:.0} | {:.1} |",
                f("encoder_ms_median"),
                f("encoder_ms_best"),
                f("clicks_per_s")
            );
            println!(
                "built / torch: encoder latency {:.2}x, clicks/s {:.2}x",
                median / f("encoder_ms_median"),
                clicks_per_s / f("clicks_per_s")
            );
        }
        Ok(o) => {
            println!("transformers row skipped: {}", String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or(""))
        }
        Err(e) => println!("transformers row skipped: {python}: {e}"),
    }
}
