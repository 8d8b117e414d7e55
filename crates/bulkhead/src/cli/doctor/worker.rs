//! Driving one measurement worker: the hidden `bulkhead worker` process of `bulkhead-supervisor`, one per unit, so
//! that a crash, an abort or a hang of a native runtime is a finding of the doctor, never its end. Every step has a
//! deadline; a worker that misses it is killed and reported as hung.

use std::path::Path;
use std::time::{Duration, Instant};

use bulkhead_core::{ModelFiles, SessionReport, Unit};
use bulkhead_embed::StageTiming;
use bulkhead_supervisor::protocol::{Request, Response, WarmupShape};
use bulkhead_supervisor::{
    Answer, FaultRule, KillReason, Payload, TypedRow, WorkerCommand, WorkerEvent, WorkerExit, WorkerLink,
};

use super::report::LoadTiming;

/// Deadlines of a worker's steps.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Spawn to `Ready` (load and warm-up).
    pub load: Duration,
    /// One prediction.
    pub predict: Duration,
}

/// Why a step did not complete.
#[derive(Debug)]
pub enum Failure {
    /// The worker could not be started at all.
    Spawn(String),
    /// The engine refused the model on this unit (the worker said so and exited).
    LoadFailed { kind: String, reason: String },
    /// The worker died (a signal or an exit) or hung and was killed.
    Died { phase: &'static str, exit: WorkerExit, hung: bool },
    /// The engine returned an error for a prediction (the worker is still alive).
    PredictFailed(String),
}

/// A worker that is loaded, warmed up and ready.
pub struct Started {
    pub worker: Worker,
    pub report: SessionReport,
    pub warmup: Vec<WarmupShape>,
    pub rss_bytes: u64,
    pub timing: LoadTiming,
}

/// One answered prediction.
pub struct Prediction {
    pub vectors: Vec<Vec<f32>>,
    pub timing: StageTiming,
    pub rss_bytes: u64,
    /// Round trip as the caller sees it: request written to answer read, in milliseconds.
    pub wall_ms: f64,
}

/// A live worker.
pub struct Worker {
    link: WorkerLink,
    next_id: u64,
    limits: Limits,
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Drains a dying worker's events until its exit (a worker that does not end is killed).
async fn exit_of(link: &mut WorkerLink) -> WorkerExit {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, link.events.recv()).await {
            Ok(Some(WorkerEvent::Exited(exit))) => return exit,
            Ok(Some(WorkerEvent::Message(_))) => {}
            Ok(None) => return WorkerExit::default(),
            Err(_) => link.kill(KillReason::Client("doctor: the worker did not exit".into())),
        }
    }
}

/// Spawns a worker for `unit` and waits until it is ready (loaded and warmed up).
pub async fn start(
    model: &ModelFiles,
    unit: Unit,
    generation: u32,
    rules: &[FaultRule],
    cache_dir: Option<&Path>,
    limits: Limits,
) -> Result<Started, Failure> {
    let t0 = Instant::now();
    let mut link = WorkerLink::spawn(&command(cache_dir), model, unit, generation, rules)
        .map_err(|e| Failure::Spawn(format!("cannot start a worker process: {e}")))?;
    let deadline = tokio::time::Instant::now() + limits.load;
    let (mut hello, mut loaded) = (None, None);
    loop {
        let phase = if loaded.is_some() { "warming_up" } else { "loading" };
        let event = match tokio::time::timeout_at(deadline, link.events.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => return Err(Failure::Died { phase, exit: WorkerExit::default(), hung: false }),
            Err(_) => {
                link.kill(KillReason::Client(format!(
                    "doctor: no answer within {} s while {phase}",
                    limits.load.as_secs()
                )));
                let exit = exit_of(&mut link).await;
                return Err(Failure::Died { phase, exit, hung: true });
            }
        };
        match event {
            WorkerEvent::Message(Response::Hello { .. }) => hello = Some(t0.elapsed()),
            WorkerEvent::Message(Response::Loaded { .. }) => loaded = Some(t0.elapsed()),
            WorkerEvent::Message(Response::Ready { report, warmup, rss_bytes, .. }) => {
                let total = t0.elapsed();
                let hello = hello.unwrap_or_default();
                let loaded = loaded.unwrap_or(hello);
                let timing = LoadTiming {
                    process_ms: ms(hello),
                    session_ms: ms(loaded.saturating_sub(hello)),
                    warmup_ms: ms(total.saturating_sub(loaded)),
                    total_ms: ms(total),
                };
                let worker = Worker { link, next_id: 1, limits };
                return Ok(Started { worker, report, warmup, rss_bytes, timing });
            }
            WorkerEvent::Message(Response::LoadFailed { reason, kind }) => {
                exit_of(&mut link).await;
                return Err(Failure::LoadFailed { kind: kind.to_string(), reason });
            }
            WorkerEvent::Message(_) => {}
            WorkerEvent::Exited(exit) => return Err(Failure::Died { phase, exit, hung: false }),
        }
    }
}

impl Worker {
    /// Runs one prediction of the batch's rows (with their texts, for fault rules that match on text): token rows, or
    /// the typed rows of a cross-encoder (whose answer is one row of logits per row).
    pub async fn predict(&mut self, b: &super::Batch) -> Result<Prediction, Failure> {
        let id = self.next_id;
        self.next_id += 1;
        let t0 = Instant::now();
        let payload = if b.type_ids.is_empty() {
            Payload::Tokens(b.rows.clone())
        } else {
            Payload::Pairs(
                b.rows.iter().zip(&b.type_ids).map(|(i, t)| TypedRow { ids: i.clone(), type_ids: t.clone() }).collect(),
            )
        };
        self.link.send(Request::Run { id, payload, texts: b.texts.clone(), prompt_tokens: vec![] });
        let deadline = tokio::time::Instant::now() + self.limits.predict;
        loop {
            let event = match tokio::time::timeout_at(deadline, self.link.events.recv()).await {
                Ok(Some(ev)) => ev,
                Ok(None) => {
                    return Err(Failure::Died { phase: "predicting", exit: WorkerExit::default(), hung: false })
                }
                Err(_) => {
                    self.link.kill(KillReason::Client(format!(
                        "doctor: no answer within {} s to a prediction",
                        self.limits.predict.as_secs()
                    )));
                    let exit = exit_of(&mut self.link).await;
                    return Err(Failure::Died { phase: "predicting", exit, hung: true });
                }
            };
            match event {
                WorkerEvent::Message(Response::Answered { id: got, answer, timing, rss_bytes }) if got == id => {
                    let (Answer::Vectors(vectors) | Answer::Scores(vectors)) = answer else {
                        return Err(Failure::PredictFailed(format!("expected one vector per row, got {answer:?}")));
                    };
                    return Ok(Prediction { vectors, timing, rss_bytes, wall_ms: ms(t0.elapsed()) });
                }
                WorkerEvent::Message(Response::Failed { id: got, error }) if got == id => {
                    return Err(Failure::PredictFailed(error.to_string()));
                }
                WorkerEvent::Message(_) => {}
                WorkerEvent::Exited(exit) => return Err(Failure::Died { phase: "predicting", exit, hung: false }),
            }
        }
    }

    /// Asks the worker to exit and waits for it (killing it if it does not go).
    pub async fn shutdown(mut self) {
        self.link.send(Request::Shutdown);
        exit_of(&mut self.link).await;
    }
}
