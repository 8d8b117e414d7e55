//! What process isolation costs and how fast it recovers, measured side by side in one run on the default model:
//!
//! 1. overhead: single-sentence latency (p50, p99) and batch-32 throughput through the supervisor with
//!    `--isolation process` vs `--isolation none` (same unit, same requests, alternating blocks with pauses);
//! 2. recovery: a sequential client runs while the worker is `kill -9`ed; the time from the kill to the next answer,
//!    and how the new worker's load and warm-up split it;
//! 3. recycle pause: a sequential client runs while the worker is recycled every N predictions; the worst latency
//!    around a recycle vs the steady p50 (the replacement warms up before the old worker drains).
//!
//! `cargo build --release -p bulkhead && cargo run --release -p bulkhead --example isolation_bench [-- --unit ort:cpu]`

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_core::{Chain, ModelFiles, Platform};
use bulkhead_embed::Tokenizer;
use bulkhead_supervisor::{Isolation, Job, Supervisor, SupervisorConfig, WorkerCommand};

struct Ctx {
    model: ModelFiles,
    chain: Chain,
    single: Vec<i64>,
    batch: Vec<Vec<i64>>,
    bin: std::path::PathBuf,
}

impl Ctx {
    fn config(&self, isolation: Isolation) -> SupervisorConfig {
        SupervisorConfig {
            isolation,
            worker_command: WorkerCommand { program: self.bin.clone(), args: vec!["worker".into()] },
            restart_backoff: Duration::from_millis(1),
            // The recovery runs kill the worker on purpose; do not quarantine the unit for it.
            quarantine_crashes: 1000,
            ..SupervisorConfig::default()
        }
    }

    async fn start(&self, cfg: SupervisorConfig) -> anyhow::Result<Supervisor> {
        let sup = Supervisor::start(self.model.clone(), &self.chain, Arc::new(common::engines()), cfg);
        sup.wait_ready().await?;
        Ok(sup)
    }

    async fn one(&self, sup: &Supervisor) -> anyhow::Result<f64> {
        let t = Instant::now();
        sup.embed(vec![self.single.clone()], vec![]).await?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let unit =
        args.iter().position(|a| a == "--unit").and_then(|i| args.get(i + 1)).cloned().unwrap_or("ort:cpu".into());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bin = root.join("target/release/bulkhead");
    anyhow::ensure!(bin.is_file(), "build the worker binary first: cargo build --release -p bulkhead");
    let folder = bulkhead_testkit::minilm_folder()
        .ok_or_else(|| anyhow::anyhow!("the default model is not installed; run scripts/setup.sh"))?;
    let model = ModelFiles::open(&folder)?;
    let tok = Tokenizer::load(&model)?;
    let texts: Vec<String> =
        (0..32).map(|i| format!("Sentence number {i} about crash-safe local inference.")).collect();
    let rows = tok.encode(&texts)?;
    let ctx =
        Ctx { model, chain: Chain::parse(&unit, &Platform::detect())?, single: rows[0].clone(), batch: rows, bin };
    println!("isolation benchmark on {unit}, all-MiniLM-L6-v2, {} tokens per sentence\n", ctx.single.len());
    overhead(&ctx).await?;
    recovery(&ctx).await?;
    recycle_pause(&ctx).await
}

/// Overhead (part 1): alternating blocks, with a pause between blocks so that ONNX Runtime's spinning threads of one
/// mode (they spin for tens of ms after each run) do not slow the other mode's block.
async fn overhead(ctx: &Ctx) -> anyhow::Result<()> {
    let proc_sup = ctx.start(ctx.config(Isolation::Process)).await?;
    let none_sup = ctx.start(ctx.config(Isolation::None)).await?;
    let (mut lat_p, mut lat_n) = (vec![], vec![]);
    let (mut thr_p, mut thr_n) = (vec![], vec![]);
    for round in 0..6 {
        for (sup, lat, thr) in [(&proc_sup, &mut lat_p, &mut thr_p), (&none_sup, &mut lat_n, &mut thr_n)] {
            tokio::time::sleep(Duration::from_millis(150)).await;
            for i in 0..70 {
                let ms = ctx.one(sup).await?;
                if i >= 10 && round > 0 {
                    lat.push(ms);
                }
            }
            for _ in 0..3 {
                let t = Instant::now();
                let r = sup.predict(vec![Job::tokens(ctx.batch.clone(), vec![])]).await;
                r.into_iter().next().unwrap()?;
                if round > 0 {
                    thr.push(32.0 / t.elapsed().as_secs_f64());
                }
            }
        }
    }
    let (p50p, p99p, p50n, p99n) =
        (common::pct(&lat_p, 0.5), common::pct(&lat_p, 0.99), common::pct(&lat_n, 0.5), common::pct(&lat_n, 0.99));
    let (tp, tn) = (common::pct(&thr_p, 0.5), common::pct(&thr_n, 0.5));
    println!("| measure | --isolation process | --isolation none | overhead |");
    println!("|---|---:|---:|---:|");
    println!("| single sentence p50 | {p50p:.2} ms | {p50n:.2} ms | {:+.2} ms |", p50p - p50n);
    println!("| single sentence p99 | {p99p:.2} ms | {p99n:.2} ms | {:+.2} ms |", p99p - p99n);
    println!("| batch-32 throughput | {tp:.0} sent/s | {tn:.0} sent/s | {:.3}x |", tp / tn);
    none_sup.shutdown().await;
    proc_sup.shutdown().await;
    Ok(())
}

/// Recovery after kill -9 (part 2): from the kill to the next answer, and how the new worker's load and warm-up split it.
async fn recovery(ctx: &Ctx) -> anyhow::Result<()> {
    let proc_sup = ctx.start(ctx.config(Isolation::Process)).await?;
    let mut recoveries = vec![];
    let mut splits = vec![];
    for _ in 0..3 {
        for _ in 0..20 {
            ctx.one(&proc_sup).await?;
        }
        let v = proc_sup.units();
        let pid = v.units[0].pid.ok_or_else(|| anyhow::anyhow!("no worker pid"))?;
        let t0 = Instant::now();
        std::process::Command::new("kill").args(["-9", &pid.to_string()]).status()?;
        ctx.one(&proc_sup).await?;
        recoveries.push(t0.elapsed().as_secs_f64() * 1e3);
        let u = &proc_sup.units().units[0];
        splits.push((u.load_ms.unwrap_or(0.0), u.warmup_ms.unwrap_or(0.0)));
    }
    let r50 = common::pct(&recoveries, 0.5);
    let (load, warm) = splits[splits.len() / 2];
    println!("\n| recovery after kill -9 (3 runs) | ms |");
    println!("|---|---:|");
    println!("| worker death -> next answer (median) | {r50:.0} |");
    println!("| of which: new worker start + model load | {load:.0} |");
    println!("| of which: warm-up (3 shapes, 1 iteration each for a replacement) | {warm:.0} |");
    println!("| all runs | {} |", recoveries.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "));
    proc_sup.shutdown().await;
    Ok(())
}

/// Recycle pause (part 3): recycle every 150 predictions under a sequential client.
async fn recycle_pause(ctx: &Ctx) -> anyhow::Result<()> {
    let cfg = SupervisorConfig { recycle_after: Some(150), ..ctx.config(Isolation::Process) };
    let sup = ctx.start(cfg).await?;
    let mut lat = vec![];
    for _ in 0..700 {
        lat.push(ctx.one(&sup).await?);
    }
    let recycles = sup.units().units[0].recycles;
    let worst = lat.iter().cloned().fold(0.0, f64::max);
    let p50 = common::pct(&lat, 0.5);
    let p99 = common::pct(&lat, 0.99);
    println!("\n| recycle every 150 predictions, 700 sequential requests | value |");
    println!("|---|---:|");
    println!("| recycles | {recycles} |");
    println!("| failed requests | 0 |");
    println!("| latency p50 / p99 / worst | {p50:.2} / {p99:.2} / {worst:.2} ms |");
    println!("| recycle pause (worst - p50) | {:.2} ms |", worst - p50);
    sup.shutdown().await;
    Ok(())
}
