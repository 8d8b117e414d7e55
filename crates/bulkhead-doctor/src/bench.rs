//! `bulkhead bench`: throughput and latency per unit and batch size, each unit in its own worker process (as
//! `bulkhead serve` runs it), measured as the doctor measures its latency table ([`measure::latency`]); a table or
//! JSON (schema `bulkhead.bench/1`, docs/doctor.md). Speech-to-text and segmentation models: [`media`]; an image-text model's
//! vision tower, after its text rows: [`vision`].

pub mod media;
pub mod vision;

use std::time::Duration;

use bulkhead_core::{Availability, Chain, ModelFiles, Unit};
use bulkhead_embed::{Engines, Tokenizer};
use bulkhead_supervisor::{ClientError, FaultRule};
use serde::{Deserialize, Serialize};

use crate::measure::latency::{self, Timed};
use crate::measure::worker::{Start, Worker};
use crate::measure::{Batch, Encoder, Limits};
use crate::progress::Progress;
use crate::render::terminal::{self, Cell};
use crate::report::{CrashPhase, LatencyRow, Machine, ModelKind, SegmentSpeed, SpeechSpeed, VisionSpeed};
use crate::{checks, Error};

/// The schema identifier of the bench's JSON.
pub const SCHEMA: &str = "bulkhead.bench/1";

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// The units to measure, in order.
    pub chain: Chain,
    /// Batch sizes (inputs are the warm-up sentences; for a reranker, each the document of a pair with one query).
    pub batch_sizes: Vec<usize>,
    /// Timed predictions per unit and batch size, at least.
    pub iterations: usize,
    /// Seconds of timed predictions per unit and batch size, at least.
    pub seconds: f64,
    /// `BULKHEAD_FAULTS` rules handed to the workers.
    pub faults: Vec<FaultRule>,
    /// A memory ceiling for each measured worker (`--worker-memory-mb`), or none.
    pub worker_memory: Option<bulkhead_supervisor::MemoryCeiling>,
}

/// The bench's JSON.
#[derive(Debug, Serialize, Deserialize)]
pub struct BenchReport {
    /// Always [`SCHEMA`].
    pub schema: String,
    pub bulkhead_version: String,
    pub model: String,
    /// What the model takes: `text` (rows per batch size), `speech` or `segmentation` (their own speed per unit).
    #[serde(default)]
    pub kind: ModelKind,
    pub machine: Machine,
    pub seconds: f64,
    pub units: Vec<BenchUnit>,
}

/// One unit's rows.
#[derive(Debug, Serialize, Deserialize)]
pub struct BenchUnit {
    pub unit: String,
    pub runtime: Option<String>,
    pub precision: Option<bulkhead_core::Precision>,
    /// Why the unit was not measured (or stopped), if so.
    pub error: Option<String>,
    pub rows: Vec<LatencyRow>,
    /// A speech-to-text model: transcriptions of the synthetic clip.
    #[serde(default)]
    pub speech: Option<SpeechSpeed>,
    /// A segmentation model: the image encoder and clicks on a cached embedding.
    #[serde(default)]
    pub segmentation: Option<SegmentSpeed>,
    /// An image-text model: its vision tower on the synthetic images.
    #[serde(default)]
    pub vision: Option<VisionSpeed>,
}

impl BenchUnit {
    /// A unit not measured yet.
    fn new(unit: &Unit) -> BenchUnit {
        BenchUnit {
            unit: unit.to_string(),
            runtime: None,
            precision: None,
            error: None,
            rows: vec![],
            speech: None,
            segmentation: None,
            vision: None,
        }
    }

    /// Whether anything was measured.
    pub fn measured(&self) -> bool {
        !self.rows.is_empty() || self.speech.is_some() || self.segmentation.is_some() || self.vision.is_some()
    }
}

/// Measures `model` on every unit of the chain.
pub fn run(
    model: &ModelFiles,
    tokenizer: &Tokenizer,
    options: &Options,
    engines: &Engines,
) -> Result<BenchReport, Error> {
    let encoder = Encoder::new(tokenizer, model);
    let batches: Vec<(usize, Batch)> =
        options.batch_sizes.iter().map(|&b| Ok((b, encoder.of_probes(b)?))).collect::<Result<_, Error>>()?;
    let images = match model.task.takes_images() {
        true => Some(crate::measure::vision::Images::for_model(model).map_err(Error::Inputs)?),
        false => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut progress = Progress::new("bench");
    let mut units = vec![];
    for unit in options.chain.units() {
        let mut u = BenchUnit::new(unit);
        match engines.availability(unit) {
            Availability::Usable => {
                if let Err(e) = runtime.block_on(bench_unit(
                    model,
                    *unit,
                    &batches,
                    images.as_ref(),
                    options,
                    &mut u,
                    &mut progress,
                )) {
                    u.error = Some(describe(&e));
                }
            }
            Availability::NotCompiled(r) | Availability::Unusable(r) => u.error = Some(r),
        }
        units.push(u);
    }
    progress.finish();
    Ok(BenchReport {
        schema: SCHEMA.into(),
        bulkhead_version: env!("CARGO_PKG_VERSION").into(),
        model: model.name.clone(),
        kind: ModelKind::Text,
        machine: checks::machine(),
        seconds: options.seconds,
        units,
    })
}

/// One unit: a worker, then every batch size (then an image-text model's vision tower).
async fn bench_unit(
    model: &ModelFiles,
    unit: Unit,
    batches: &[(usize, Batch)],
    images: Option<&crate::measure::vision::Images>,
    options: &Options,
    u: &mut BenchUnit,
    progress: &mut Progress,
) -> Result<(), ClientError> {
    let mut worker = start_worker(model, unit, options, u, progress).await?;
    let timed = Timed { iterations: options.iterations, at_least: Duration::from_secs_f64(options.seconds) };
    for (size, batch) in batches {
        progress.phase(&u.unit, &format!("batch {size}"));
        let mut tick = |n: usize| progress.tick(n, options.iterations.max(n));
        let row = latency::latency_row(&mut worker, *size, batch, timed, &mut tick).await.map_err(|(_, e)| e)?;
        u.rows.push(row);
    }
    if let Some(images) = images {
        u.vision = Some(vision::speed(&mut worker, images, options, &u.unit.clone(), progress).await?);
    }
    worker.shutdown().await;
    Ok(())
}

/// Starts the unit's worker (as `bulkhead serve` does) and records what runs it.
async fn start_worker(
    model: &ModelFiles,
    unit: Unit,
    options: &Options,
    u: &mut BenchUnit,
    progress: &mut Progress,
) -> Result<Worker, ClientError> {
    progress.phase(&u.unit, "loading");
    let limits = Limits { load: Duration::from_secs(120), predict: Duration::from_secs(30) };
    let memory = options.worker_memory.as_ref();
    let start = Start { model, unit, generation: 0, faults: &options.faults, cache_dir: None, limits, memory };
    let (worker, ready) = Worker::start(start).await?;
    u.runtime = Some(ready.report.runtime.clone());
    u.precision = Some(ready.report.precision);
    Ok(worker)
}

/// Why a unit stopped, in one line.
pub(crate) fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Spawn(m) => m.clone(),
        ClientError::Run(e) => e.to_string(),
        ClientError::LoadFailed { kind, reason } => format!("load failed ({kind}): {reason}"),
        ClientError::Died { step, exit } => format!(
            "the worker {} while {}: {}",
            if e.hung() { "hung" } else { "died" },
            CrashPhase::from(*step).in_words(),
            exit.summary()
        ),
    }
}

/// The bench table.
pub fn render(r: &BenchReport, colour: bool) -> String {
    if r.kind != ModelKind::Text {
        return media::render(r, colour);
    }
    let mut out = format!(
        "bulkhead bench {}: {} on {} {} ({} CPUs), {} s per cell, round trip to a worker process\n",
        r.bulkhead_version, r.model, r.machine.os, r.machine.arch, r.machine.cpus, r.seconds
    );
    let mut rows = vec![];
    for u in &r.units {
        for l in &u.rows {
            rows.push(vec![
                Cell::from(u.unit.as_str()),
                Cell::from(u.precision.map(|p| p.to_string()).unwrap_or_default()),
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
    vision::render(&mut out, r, colour);
    for u in r.units.iter().filter(|u| u.error.is_some()) {
        out.push_str(&format!("  {}: not measured: {}\n", u.unit, u.error.as_deref().unwrap_or("")));
    }
    out
}
