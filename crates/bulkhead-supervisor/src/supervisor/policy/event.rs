//! The policy core's inputs ([`Event`]) and outputs ([`Effect`]), and the identifiers that tie them together.

use std::time::Instant;

use bulkhead_core::Unit;

use super::death::{KillReason, WorkerExit};
use super::job::{Answered, Job, PredictError, StartError};
use crate::protocol::{Request, Response};

/// A worker, as the core and the actor name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(pub u64);

/// A caller's request (one job), answered exactly once by an [`Effect::Answer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A caller of `wait_ready`, answered once by an [`Effect::Ready`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaiterId(pub u64);

/// The time of an event: the monotonic clock for every delay, the Unix clock for what is persisted. The actor reads
/// both clocks and hands them in with each event; the core never reads one.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time.
    pub at: Instant,
    /// Seconds since the Unix epoch.
    pub unix: f64,
}

/// One job handed to the core.
#[derive(Debug)]
pub struct Submitted {
    /// How its answer is addressed.
    pub id: RequestId,
    /// What to run.
    pub job: Job,
    /// When the caller submitted it (its queue time and deadline start here).
    pub enqueued: Instant,
}

/// One sample of a worker process, as values (the actor reads it from `/proc/PID/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// `T` (stopped by a signal) or `t` (stopped by a tracer).
    pub stopped: bool,
    /// Resident memory.
    pub rss_bytes: u64,
    /// CPU time used so far by all its threads (user + system), in clock ticks: it grows while the process computes,
    /// even slowly, and stays flat while it waits, sleeps or is stopped.
    pub cpu_ticks: u64,
    /// Writable private memory (data and stack), resident or not: what an `RLIMIT_DATA` ceiling counts (0 unknown).
    pub data_bytes: u64,
}

/// What the actor read about one worker process on a tick.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// The worker.
    pub worker: WorkerId,
    /// Its `/proc` state and resident memory.
    pub stat: ProcStat,
}

/// Everything that happens to a supervisor.
#[derive(Debug)]
pub enum Event {
    /// Callers submitted jobs (one batch; each job is answered on its own).
    Submit(Vec<Submitted>),
    /// A caller waits until a unit serves.
    WaitReady(WaiterId),
    /// Finish queued and in-flight work, then stop every worker.
    Shutdown,
    /// An [`Effect::Spawn`] started its process.
    Spawned {
        /// The worker.
        worker: WorkerId,
        /// Its process id (`None` in-process).
        pid: Option<u32>,
    },
    /// An [`Effect::Spawn`] could not start: the unit cannot run here.
    SpawnFailed {
        /// The worker that never was.
        worker: WorkerId,
        /// Why, for `/units` and the logs.
        reason: String,
    },
    /// A protocol message from a worker.
    Message {
        /// The worker.
        worker: WorkerId,
        /// The message.
        msg: Response,
    },
    /// A worker is gone.
    Exited {
        /// The worker.
        worker: WorkerId,
        /// How and why it ended.
        exit: WorkerExit,
    },
    /// Time passed (every 25 ms), with what the actor sampled of the worker processes.
    Tick {
        /// Per worker process: stopped or not, resident memory.
        samples: Vec<Sample>,
        /// `MemAvailable` of the machine, when sampled.
        mem_available: Option<u64>,
    },
}

/// What the view readers should refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// The per-request counters only (the hot path).
    Counters,
    /// Everything.
    Full,
}

/// What the actor must do.
#[derive(Debug)]
pub enum Effect {
    /// Start a worker process (or thread) for `unit`; report [`Event::Spawned`] or [`Event::SpawnFailed`].
    Spawn {
        /// Its name from now on.
        worker: WorkerId,
        /// The unit.
        unit: Unit,
        /// Which lifetime of the unit it is (for fault rules).
        generation: u32,
        /// Intra-op threads for its engine.
        threads: Option<usize>,
        /// The unit served before in this process: a short warm-up (one iteration per shape) is enough.
        quick: bool,
    },
    /// Write a request to a worker.
    Send {
        /// The worker.
        worker: WorkerId,
        /// The request.
        request: Request,
    },
    /// SIGKILL a worker's process group, recording why.
    Kill {
        /// The worker.
        worker: WorkerId,
        /// Why.
        reason: KillReason,
    },
    /// Persist the crash history.
    SaveHistory,
    /// Answer a request (exactly once per request).
    Answer {
        /// The request.
        request: RequestId,
        /// Its result.
        result: Result<Answered, PredictError>,
    },
    /// Answer a `wait_ready` caller.
    Ready {
        /// The caller.
        waiter: WaiterId,
        /// The unit serving, or why none can.
        result: Result<Unit, StartError>,
    },
    /// Refresh the published view.
    Publish(Publish),
    /// The shutdown is complete: every worker was told to stop; wait for their exits and end the loop.
    Stopped,
}
