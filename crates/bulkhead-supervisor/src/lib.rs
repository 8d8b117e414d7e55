//! Supervised workers for bulkhead: a native crash, hang or leak in an engine never takes the server down or loses
//! a request.
//!
//! * [`payload`]: what a worker runs ([`Payload`]) and answers ([`Answer`]): one variant per kind of model input;
//!   [`audio`]: what a speech payload carries (PCM and options) and its transcript;
//! * [`protocol`]: length-delimited postcard frames, versioned handshake, `Ready` only after warm-up;
//! * [`faults`]: `BULKHEAD_FAULTS` fault injection with real signals and real allocations;
//! * [`worker`]: the body of the hidden `bulkhead worker` subcommand ([`run_worker`]);
//! * [`client`]: the one worker client: spawn, handshake, send payloads, read answers, a typed [`WorkerExit`] with
//!   its cause of death, a memory ceiling per worker ([`MemoryCeiling`]: a cgroup of its own or `RLIMIT_DATA`);
//!   [`WorkerClient`] drives one worker step by step (doctor, benchmarks, tests);
//! * [`history`]: crash history and quarantines persisted per (model digest, unit, runtime version);
//! * [`supervisor`]: the per-model [`Supervisor`]: a policy core without I/O (chain walk, retry and poison, causes
//!   of death, quarantine and the floor, restart backoff, watchdog, recycling, replicas) and the actor that runs it.
//!
//! # Architecture invariants
//!
//! * **The policy core does no I/O.** `supervisor/policy/` reads no clock (the time comes with each event), no
//!   file, no pipe and no process, and holds no type that does; everything it wants done is an `Effect`. Its
//!   vocabulary lives there as plain data: jobs, answers and their errors (`policy/job.rs`), how a worker ended and
//!   why it was killed (`policy/death.rs`), `/proc` samples as values, crash records and the crash bucket
//!   (`policy/record.rs`). The edges convert: [`client`] classifies exits and reads `/proc`, [`history`] loads and
//!   writes the records, the actor reads the clocks. *Checked by `tests/invariants.rs`* (no `Instant::now`,
//!   `SystemTime`, `std::fs`, `std::process`, `std::io`, `File`, pipes, `tokio`, `libc`, and no import of
//!   `client`, `history`, `worker` or the actor under `policy/`).
//! * **A request is answered exactly once**: each request leaves the core in exactly one `Effect::Answer` (the
//!   policy tests' harness asserts it on every effect); work on a dead worker is requeued, never dropped.
//! * **A dead worker is a value, never a panic**: every end of a worker becomes one [`WorkerExit`] with its
//!   [`ExitCause`], the last event of its link.
//! * **The last unit that can serve is never quarantined**, and a persisted quarantine never stops start-up.
//! * **Only the unit's own faults count against it**: deaths from outside, OOM kills and a poison request's crashes
//!   are recorded but leave the crash bucket.
//! * **A new kind of input adds a variant, never an optional field**: a [`Payload`] and an [`Answer`] variant, or,
//!   for inputs that batch by rows, a [`bulkhead_core::Row`] variant carrying what only that kind needs (a token
//!   row's prompt length, a pair's token type ids). A worker answers [`RunError::Unsupported`] for a payload its
//!   model cannot run.
//! * **Texts reach a worker only for a fault rule that reads them**: [`Job::texts`] stays empty unless
//!   [`Supervisor::wants_texts`] (a `BULKHEAD_FAULTS` rule with `match` is active).
//! * **An answer says who computed it**: [`Answered`] carries the unit and the weight precision it loaded, so no
//!   caller reads the `/units` view to learn them.
//! * **One worker client**: every process that speaks the protocol goes through [`WorkerLink`], which delivers its
//!   events straight into an [`EventSink`] (the actor's channel: no relay task); the doctor, the bench and the
//!   tests drive it step by step through [`WorkerClient`]. The protocol is versioned ([`protocol::PROTOCOL_VERSION`],
//!   bumped on every change of a frame).
#![deny(missing_docs)]

pub mod audio;
pub mod client;
pub mod faults;
pub mod history;
pub mod payload;
pub mod priority;
pub mod protocol;
pub mod supervisor;
pub mod worker;

pub use audio::{AudioRequest, FallbackChecks, SpeechOptions, SpeechTask, SpeechTiming, Transcript, TranscriptSegment};
pub use client::ceiling::{Enforcement, EnforcementChoice, MemoryCeiling};
pub use client::{
    signal_name, ClientError, EventSink, ExitCause, KillReason, Ran, Ready, WorkerClient, WorkerCommand, WorkerEvent,
    WorkerExit, WorkerLink, WorkerSpec,
};
pub use faults::{FaultKind, FaultRule, FaultsError};
pub use history::{CrashBook, History, HistoryKey, UnitRecord};
pub use payload::{Answer, Payload, PayloadKind};
pub use protocol::{LoadFailureKind, RunError};
pub use supervisor::{
    Answered, CeilingView, Isolation, Job, ModelUnits, PredictError, StartError, Supervisor, SupervisorConfig,
    UnitState, UnitView, WorkerState, WorkerView,
};
pub use worker::{run_worker, worker_main, WorkerArgs};
