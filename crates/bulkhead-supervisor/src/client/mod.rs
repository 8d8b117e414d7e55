//! The worker client: spawn a worker, check its handshake, send it payloads, read its answers, and get its typed
//! exit. The supervisor drives many [`WorkerLink`]s at once from its event loop; [`WorkerClient`] is the same link
//! driven one step at a time, for the doctor, benchmarks and tests.
//!
//! * [`link`]: the process (or thread) behind one worker and its event stream;
//! * [`exit`]: [`WorkerExit`] and its [`ExitCause`];
//! * [`proc`]: what `/proc` and the memory cgroup say about a worker;
//! * [`ceiling`]: a memory ceiling per worker (`--worker-memory-mb`): a cgroup of its own or `RLIMIT_DATA`.

pub mod ceiling;
pub mod exit;
pub mod link;
pub mod proc;

use std::time::{Duration, Instant};

use bulkhead_core::SessionReport;
use bulkhead_embed::StageTiming;

pub use exit::{signal_name, ExitCause, KillReason, WorkerExit};
pub use link::{EventSink, WorkerCommand, WorkerEvent, WorkerLink, WorkerSpec};

use crate::payload::{Answer, Payload};
use crate::protocol::{LoadFailureKind, Request, Response, RunError, Signature, WarmupShape};

/// Where a worker was when a step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Between spawn and `Loaded`.
    Loading,
    /// Between `Loaded` and `Ready`.
    WarmingUp,
    /// Running a payload.
    Running,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Loading => "loading",
            Step::WarmingUp => "warming up",
            Step::Running => "running a prediction",
        })
    }
}

/// Why a step did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The process could not be started at all.
    #[error("cannot start a worker process: {0}")]
    Spawn(String),
    /// The engine refused the model on this unit (the worker said so and exited).
    #[error("load failed ({kind}): {reason}")]
    LoadFailed {
        /// What kind of failure.
        kind: LoadFailureKind,
        /// The engine's message.
        reason: String,
    },
    /// The worker died (or was killed after missing its deadline: `exit.cause` says which).
    #[error("the worker died while {step}: {exit}")]
    Died {
        /// Where it was.
        step: Step,
        /// How it ended.
        exit: WorkerExit,
    },
    /// The payload was not answered; the worker is still alive.
    #[error("{0}")]
    Run(RunError),
}

impl ClientError {
    /// Whether the worker was killed because it missed a deadline.
    pub fn hung(&self) -> bool {
        matches!(self, ClientError::Died { exit, .. } if matches!(exit.cause, ExitCause::Killed { reason: KillReason::Client(_) }))
    }
}

/// How long each part of a start took, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StartTiming {
    /// Spawn to `Hello` (the process itself).
    pub process_ms: f64,
    /// `Hello` to `Loaded` (the engine's session).
    pub session_ms: f64,
    /// `Loaded` to `Ready` (the warm-up).
    pub warmup_ms: f64,
    /// Spawn to `Ready`.
    pub total_ms: f64,
}

/// A worker that is loaded and warmed up.
#[derive(Debug, Clone)]
pub struct Ready {
    /// What really runs the session.
    pub report: SessionReport,
    /// Latency per warm-up shape.
    pub warmup: Vec<WarmupShape>,
    /// Resident memory after warm-up.
    pub rss_bytes: u64,
    /// A tensor model's graph signature.
    pub signature: Signature,
    /// Where the start-up time went.
    pub timing: StartTiming,
}

/// One answered payload.
#[derive(Debug, Clone)]
pub struct Ran {
    /// The output.
    pub answer: Answer,
    /// Stage timing inside the worker.
    pub timing: StageTiming,
    /// Resident memory after the prediction.
    pub rss_bytes: u64,
    /// Round trip as the caller sees it: request written to answer read, in milliseconds.
    pub wall_ms: f64,
}

/// One worker, driven step by step: every step has a deadline, and a worker that misses it is killed (its exit
/// then says `KillReason::Client`).
pub struct WorkerClient {
    link: WorkerLink,
    /// The link's events (its sink has this channel to itself).
    events: tokio::sync::mpsc::UnboundedReceiver<(u64, WorkerEvent)>,
    /// A fault rule of the worker matches on text: only then do texts go along with a payload.
    wants_texts: bool,
    next_id: u64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl WorkerClient {
    /// Spawns the worker `spec` describes and waits (at most `load_timeout`) until it is ready.
    pub async fn start(spec: &WorkerSpec, load_timeout: Duration) -> Result<(WorkerClient, Ready), ClientError> {
        let t0 = Instant::now();
        let (sink, events) = EventSink::channel();
        let link = WorkerLink::start(spec, sink)
            .map_err(|e| ClientError::Spawn(format!("{}: {e}", spec.command.program.display())))?;
        let wants_texts = spec.faults.iter().any(|r| r.matches.is_some());
        let mut client = WorkerClient { link, events, wants_texts, next_id: 1 };
        let deadline = tokio::time::Instant::now() + load_timeout;
        let (mut hello, mut loaded) = (None, None);
        loop {
            let step = if loaded.is_some() { Step::WarmingUp } else { Step::Loading };
            let event = match tokio::time::timeout_at(deadline, client.events.recv()).await {
                Ok(Some((_, ev))) => ev,
                Ok(None) => return Err(ClientError::Died { step, exit: WorkerExit::default() }),
                Err(_) => {
                    let why = format!("no answer within {} s while {step}", load_timeout.as_secs());
                    return Err(ClientError::Died { step, exit: client.kill(KillReason::Client(why)).await });
                }
            };
            match event {
                WorkerEvent::Message(Response::Hello { .. }) => hello = Some(t0.elapsed()),
                WorkerEvent::Message(Response::Loaded { .. }) => loaded = Some(t0.elapsed()),
                WorkerEvent::Message(Response::Ready { report, warmup, rss_bytes, signature }) => {
                    let total = t0.elapsed();
                    let hello = hello.unwrap_or_default();
                    let loaded = loaded.unwrap_or(hello);
                    let timing = StartTiming {
                        process_ms: ms(hello),
                        session_ms: ms(loaded.saturating_sub(hello)),
                        warmup_ms: ms(total.saturating_sub(loaded)),
                        total_ms: ms(total),
                    };
                    return Ok((client, Ready { report, warmup, rss_bytes, signature, timing }));
                }
                WorkerEvent::Message(Response::LoadFailed { kind, reason }) => {
                    client.exit().await;
                    return Err(ClientError::LoadFailed { kind, reason });
                }
                WorkerEvent::Message(_) => {}
                WorkerEvent::Exited(exit) => return Err(ClientError::Died { step, exit }),
            }
        }
    }

    /// The worker's process id.
    pub fn pid(&self) -> Option<u32> {
        self.link.pid
    }

    /// Runs one payload, waiting at most `timeout`; its `texts` go along only when one of the worker's fault rules
    /// matches on text.
    pub async fn run(&mut self, payload: Payload, texts: &[String], timeout: Duration) -> Result<Ran, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let t0 = Instant::now();
        let texts = if self.wants_texts { texts.to_vec() } else { vec![] };
        self.link.send(Request::Run { id, payload, texts, long: false });
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let event = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some((_, ev))) => ev,
                Ok(None) => return Err(ClientError::Died { step: Step::Running, exit: WorkerExit::default() }),
                Err(_) => {
                    let why = format!("no answer within {:.1} s to a prediction", timeout.as_secs_f64());
                    let exit = self.kill(KillReason::Client(why)).await;
                    return Err(ClientError::Died { step: Step::Running, exit });
                }
            };
            match event {
                WorkerEvent::Message(Response::Answered { id: got, answer, timing, rss_bytes }) if got == id => {
                    return Ok(Ran { answer, timing, rss_bytes, wall_ms: ms(t0.elapsed()) });
                }
                WorkerEvent::Message(Response::Failed { id: got, error }) if got == id => {
                    return Err(ClientError::Run(error));
                }
                WorkerEvent::Message(_) => {}
                WorkerEvent::Exited(exit) => return Err(ClientError::Died { step: Step::Running, exit }),
            }
        }
    }

    /// Asks the worker to exit and waits for its exit (killing it if it does not go within 10 s).
    pub async fn shutdown(mut self) -> WorkerExit {
        self.link.send(Request::Shutdown);
        self.exit().await
    }

    /// Kills the worker and returns its exit.
    pub async fn kill(&mut self, reason: KillReason) -> WorkerExit {
        self.link.kill(reason);
        self.exit().await
    }

    /// Drains the events until the exit (a worker that does not end within 10 s is killed).
    async fn exit(&mut self) -> WorkerExit {
        let mut deadline = Some(tokio::time::Instant::now() + Duration::from_secs(10));
        loop {
            let event = match deadline {
                Some(d) => tokio::time::timeout_at(d, self.events.recv()).await,
                None => Ok(self.events.recv().await),
            };
            match event {
                Ok(Some((_, WorkerEvent::Exited(exit)))) => return exit,
                Ok(Some((_, WorkerEvent::Message(_)))) => {}
                Ok(None) => return WorkerExit::default(),
                Err(_) => {
                    self.link.kill(KillReason::DidNotStop);
                    deadline = None;
                }
            }
        }
    }
}
