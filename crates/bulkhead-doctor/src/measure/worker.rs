//! One measurement worker, through the supervisor crate's [`WorkerClient`]: the hidden `bulkhead worker` process,
//! one per unit, so that a crash, an abort or a hang of a native runtime is a finding, never the doctor's end. Every
//! step has a deadline; a worker that misses it is killed and its error says it hung ([`ClientError::hung`]).

use std::path::Path;
use std::time::Duration;

use bulkhead_core::{ModelFiles, Unit};
use bulkhead_embed::StageTiming;
use bulkhead_supervisor::{
    Answer, ClientError, FaultRule, MemoryCeiling, Payload, Ran, Ready, RunError, WorkerClient, WorkerCommand,
    WorkerSpec,
};

use super::Batch;

/// Deadlines of a worker's steps.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Spawn to `Ready` (load and warm-up).
    pub load: Duration,
    /// One prediction.
    pub predict: Duration,
}

/// One answered prediction.
pub struct Prediction {
    /// One output row per input: an embedding, or a cross-encoder's logits.
    pub vectors: Vec<Vec<f32>>,
    /// Stage timing inside the worker.
    pub timing: StageTiming,
    /// Resident memory after the prediction.
    pub rss_bytes: u64,
    /// Round trip as the caller sees it, in milliseconds.
    pub wall_ms: f64,
}

impl Prediction {
    /// Forward pass and pooling inside the worker, in milliseconds.
    pub fn engine_ms(&self) -> f64 {
        self.timing.infer_ms + self.timing.post_ms
    }
}

/// A live, ready worker.
pub struct Worker {
    client: WorkerClient,
    limits: Limits,
}

/// What to start: the model on a unit, its lifetime (for fault rules) and the rules.
pub struct Start<'a> {
    pub model: &'a ModelFiles,
    pub unit: Unit,
    pub generation: u32,
    pub faults: &'a [FaultRule],
    /// A private compiled-model cache (`BULKHEAD_CACHE_DIR` of the worker), for cold and cached loads.
    pub cache_dir: Option<&'a Path>,
    pub limits: Limits,
    /// A memory ceiling for the worker process (`--worker-memory-mb`), or none.
    pub memory: Option<&'a MemoryCeiling>,
}

/// The worker program; with `cache_dir`, run under `env BULKHEAD_CACHE_DIR=...` so that the worker's
/// compiled-model cache is a private one (`env` execs, so the pid and process group stay the worker's).
fn command(cache_dir: Option<&Path>) -> WorkerCommand {
    let base = WorkerCommand::default();
    match cache_dir {
        None => base,
        Some(dir) => {
            let mut args = vec![format!("BULKHEAD_CACHE_DIR={}", dir.display()), base.program.display().to_string()];
            args.extend(base.args);
            WorkerCommand { program: "env".into(), args }
        }
    }
}

impl Worker {
    /// Spawns a worker and waits until it is ready (loaded and warmed up).
    pub async fn start(s: Start<'_>) -> Result<(Worker, Ready), ClientError> {
        let spec = WorkerSpec {
            command: command(s.cache_dir),
            model: s.model.clone(),
            unit: s.unit,
            generation: s.generation,
            faults: s.faults.to_vec(),
            threads: None,
            warmup_iterations: bulkhead_supervisor::worker::WARMUP_ITERATIONS,
            memory: s.memory.cloned(),
        };
        let (client, ready) = WorkerClient::start(&spec, s.limits.load).await?;
        Ok((Worker { client, limits: s.limits }, ready))
    }

    /// Runs one prediction of `batch` (its texts go along, for fault rules that match on text): one output row per
    /// input, an embedding or a cross-encoder's logits.
    pub async fn predict(&mut self, batch: &Batch) -> Result<Prediction, ClientError> {
        let ran = self.client.run(batch.payload.clone(), &batch.texts, self.limits.predict).await?;
        let vectors = match ran.answer {
            Answer::Vectors(v) | Answer::Scores(v) if v.len() == batch.len() => v,
            other => {
                let got = match other {
                    Answer::Tensors(_) => "named tensors".to_string(),
                    rows => format!("{} rows", rows.rows()),
                };
                let want = batch.len();
                return Err(ClientError::Run(RunError::Engine(format!(
                    "expected one output row per input ({want}), got {got}"
                ))));
            }
        };
        Ok(Prediction { vectors, timing: ran.timing, rss_bytes: ran.rss_bytes, wall_ms: ran.wall_ms })
    }

    /// Runs one prediction of a payload that carries no texts (audio, a segmentation job): the answer as the
    /// worker gave it, for the caller to check.
    pub async fn run(&mut self, payload: &Payload) -> Result<Ran, ClientError> {
        self.client.run(payload.clone(), &[], self.limits.predict).await
    }

    /// Asks the worker to exit and waits for it (killing it if it does not go).
    pub async fn shutdown(self) {
        self.client.shutdown().await;
    }
}
