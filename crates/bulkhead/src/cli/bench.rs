//! `bulkhead bench`: throughput and latency per unit and batch size, each unit in its own worker process (as
//! `bulkhead serve` runs it), as a table or `--json` (schema `bulkhead.bench/1`, docs/doctor.md).

use std::time::{Duration, Instant};

use bulkhead_core::{Availability, Chain};
use bulkhead_embed::Tokenizer;
use serde::{Deserialize, Serialize};

use super::common::{engines, open_model, parse_chain, require_embedding_model, UsageError, Weights};
use super::doctor::report::LatencyRow;
use super::doctor::worker::{self, Failure, Limits};
use super::doctor::{analyze, checks, progress::Progress, terminal, Batch};

/// Arguments of `bulkhead bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Model folder (Hugging Face layout), .onnx file, or hub id ORG/NAME[@REVISION] (cached or downloaded);
    /// default: all-MiniLM-L6-v2 installed by the set-up.
    #[arg(long, env = "BULKHEAD_MODEL", value_name = "PATH|ORG/NAME")]
    model: Option<String>,
    /// The units to measure, in order (units or the aliases ALL, CPU_AND_GPU, CPU_AND_NE, CPU_ONLY).
    #[arg(long, env = "BULKHEAD_COMPUTE_UNITS", default_value = Chain::DEFAULT, value_parser = parse_chain)]
    compute_units: Chain,
    /// Print one JSON object (schema `bulkhead.bench/1`) instead of a table.
    #[arg(long)]
    json: bool,
    /// Batch sizes to measure (inputs are the warm-up sentences, about 15 tokens each).
    #[arg(long, env = "BULKHEAD_BATCH_SIZES", default_value = "1,8,32", value_delimiter = ',')]
    batch_sizes: Vec<usize>,
    /// Seconds of timed predictions per unit and batch size.
    #[arg(long, env = "BULKHEAD_BENCH_SECONDS", default_value_t = 3.0)]
    seconds: f64,
    /// Timed predictions per unit and batch size, at least (even past --seconds).
    #[arg(long, env = "BULKHEAD_ITERATIONS", default_value_t = 10)]
    iterations: usize,
}

/// The bench's JSON.
#[derive(Debug, Serialize, Deserialize)]
pub struct BenchReport {
    /// Always `bulkhead.bench/1`.
    pub schema: String,
    pub bulkhead_version: String,
    pub model: String,
    pub machine: super::doctor::report::Machine,
    pub seconds: f64,
    pub units: Vec<BenchUnit>,
}

/// One unit's rows.
#[derive(Debug, Serialize, Deserialize)]
pub struct BenchUnit {
    pub unit: String,
    pub runtime: Option<String>,
    pub precision: Option<String>,
    /// Why the unit was not measured (or stopped), if so.
    pub error: Option<String>,
    pub rows: Vec<LatencyRow>,
}

impl BenchArgs {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        if self.batch_sizes.is_empty() || self.batch_sizes.contains(&0) || self.iterations == 0 || self.seconds < 0.0 {
            return Err(UsageError(
                "--batch-sizes must be positive numbers (e.g. 1,8,32), --iterations at least 1, --seconds >= 0".into(),
            )
            .into());
        }
        let rules = bulkhead_supervisor::faults::from_env().map_err(|e| UsageError(e.to_string()))?;
        let model = open_model(self.model.as_deref(), None, Weights::Chain(&self.compute_units))?;
        require_embedding_model(&model, "bench", false)?;
        let tokenizer = Tokenizer::load(&model)?;
        let batches: Vec<(usize, Batch)> = self
            .batch_sizes
            .iter()
            .map(|&b| Ok((b, Batch::of_probes(&tokenizer, &model.task, b)?)))
            .collect::<anyhow::Result<_>>()?;
        let engines = engines();
        let limits = Limits { load: Duration::from_secs(120), predict: Duration::from_secs(30) };
        let budget = Duration::from_secs_f64(self.seconds);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let mut progress = Progress::new("bench");
        let mut units = vec![];
        for unit in self.compute_units.units() {
            let mut u = BenchUnit { unit: unit.to_string(), runtime: None, precision: None, error: None, rows: vec![] };
            match engines.availability(unit) {
                Availability::Usable => {}
                Availability::NotCompiled(r) | Availability::Unusable(r) => {
                    u.error = Some(r);
                    units.push(u);
                    continue;
                }
            }
            progress.phase(&u.unit, "loading");
            let result = runtime.block_on(async {
                let started = worker::start(&model, *unit, 0, &rules, None, limits).await?;
                u.runtime = Some(started.report.runtime.clone());
                u.precision = Some(checks::precision_name(started.report.precision));
                let mut w = started.worker;
                for (batch, b) in &batches {
                    progress.phase(&u.unit, &format!("batch {batch}"));
                    let first = w.predict(b).await?.wall_ms;
                    let (mut walls, mut engine) = (vec![], vec![]);
                    let t0 = Instant::now();
                    while walls.len() < self.iterations || t0.elapsed() < budget {
                        let p = w.predict(b).await?;
                        walls.push(p.wall_ms);
                        engine.push(p.timing.infer_ms + p.timing.post_ms);
                        progress.tick(walls.len(), self.iterations.max(walls.len()));
                    }
                    u.rows.push(analyze::latency_row(*batch, b.seq(), first, &walls, &engine));
                }
                w.shutdown().await;
                Ok::<(), Failure>(())
            });
            if let Err(f) = result {
                u.error = Some(match f {
                    Failure::Spawn(e) | Failure::PredictFailed(e) => e,
                    Failure::LoadFailed { kind, reason } => format!("load failed ({kind}): {reason}"),
                    Failure::Died { phase, exit, hung } => format!(
                        "the worker {} while {}: {}",
                        if hung { "hung" } else { "died" },
                        phase.replace('_', " "),
                        exit.summary()
                    ),
                });
            }
            units.push(u);
        }
        progress.finish();
        let report = BenchReport {
            schema: "bulkhead.bench/1".into(),
            bulkhead_version: env!("CARGO_PKG_VERSION").into(),
            model: model.name.clone(),
            machine: checks::machine(),
            seconds: self.seconds,
            units,
        };
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", render(&report, terminal::use_colour()));
        }
        if report.units.iter().all(|u| u.rows.is_empty()) {
            anyhow::bail!("no unit of the chain `{}` could be measured", self.compute_units);
        }
        Ok(())
    }
}

/// The bench table.
pub fn render(r: &BenchReport, colour: bool) -> String {
    use terminal::Cell;
    let mut out = format!(
        "bulkhead bench {}: {} on {} {} ({} CPUs), {} s per cell, round trip to a worker process\n",
        r.bulkhead_version, r.model, r.machine.os, r.machine.arch, r.machine.cpus, r.seconds
    );
    let mut rows = vec![];
    for u in &r.units {
        for l in &u.rows {
            rows.push(vec![
                Cell::from(u.unit.as_str()),
                Cell::from(u.precision.clone().unwrap_or_default()),
                Cell::from(l.batch.to_string()),
                Cell::from(l.seq.to_string()),
                Cell::from(l.iterations.to_string()),
                Cell::from(format!("{:.2}", l.p50_ms)),
                Cell::from(format!("{:.2}", l.p95_ms)),
                Cell::from(format!("{:.2}", l.engine_p50_ms)),
                Cell::from(format!("{:.0}", l.throughput_per_s)),
            ]);
        }
    }
    terminal::table(
        &mut out,
        &["unit", "precision", "batch", "tokens", "runs", "p50 ms", "p95 ms", "engine p50 ms", "inputs/s"],
        rows,
        colour,
    );
    for u in r.units.iter().filter(|u| u.error.is_some()) {
        out.push_str(&format!("  {}: not measured: {}\n", u.unit, u.error.as_deref().unwrap_or("")));
    }
    out
}
