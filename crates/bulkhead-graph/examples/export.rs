//! Builds the ONNX graph of a safetensors model folder.
//!
//! `cargo run --release -p bulkhead-graph --example export -- MODEL_DIR OUT.onnx [--static BATCH SEQ] [--opset N]`
//! writes a self-contained file; with `--cache DIR` instead of `OUT.onnx` it goes through the cache and prints the
//! entry.

use std::path::PathBuf;

use bulkhead_graph::{BuildOptions, ShapeMode};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: export MODEL_DIR (OUT.onnx | --cache DIR) [--static BATCH SEQ] [--opset N]";
    let model_dir = PathBuf::from(args.first().ok_or(usage)?);
    let mut opts = BuildOptions::default();
    let mut out = None;
    let mut cache = None;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--static" => {
                let batch = args.get(i + 1).ok_or(usage)?.parse()?;
                let seq = args.get(i + 2).ok_or(usage)?.parse()?;
                opts.shape = ShapeMode::Static { batch, seq };
                i += 3;
            }
            "--opset" => {
                opts.opset = args.get(i + 1).ok_or(usage)?.parse()?;
                i += 2;
            }
            "--cache" => {
                cache = Some(PathBuf::from(args.get(i + 1).ok_or(usage)?));
                i += 2;
            }
            other => {
                out = Some(PathBuf::from(other));
                i += 1;
            }
        }
    }
    let model = bulkhead_core::ModelFiles::open(&model_dir)?;
    if let Some(dir) = cache {
        let built = bulkhead_graph::build_cached(&model, &opts, &dir)?;
        println!("{built:?}");
    } else {
        let out = out.ok_or(usage)?;
        let t = std::time::Instant::now();
        bulkhead_graph::export(&model, &opts, &out)?;
        println!("wrote {} in {:.1} ms", out.display(), t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(())
}
