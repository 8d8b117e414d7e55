//! Supervised workers for bulkhead: a native crash, hang or leak in an engine never takes the server down or loses
//! a request.
//!
//! * [`payload`]: what a worker runs ([`Payload`]) and answers ([`Answer`]): one variant per kind of model input;
//! * [`protocol`]: length-delimited postcard frames, versioned handshake, `Ready` only after warm-up;
//! * [`faults`]: `BULKHEAD_FAULTS` fault injection with real signals and real allocations;
//! * [`worker`]: the body of the hidden `bulkhead worker` subcommand ([`run_worker`]);
//! * [`client`]: the one worker client: spawn, handshake, send payloads, read answers, a typed [`WorkerExit`] with
//!   its cause of death; [`WorkerClient`] drives one worker step by step (doctor, benchmarks, tests);
//! * [`history`]: crash history and quarantines persisted per (model digest, unit, runtime version);
//! * [`supervisor`]: the per-model [`Supervisor`]: a policy core without I/O (chain walk, retry and poison, causes
//!   of death, quarantine and the floor, restart backoff, watchdog, recycling, replicas) and the actor that runs it.
#![deny(missing_docs)]

pub mod client;
pub mod faults;
pub mod history;
pub mod payload;
pub mod protocol;
pub mod supervisor;
pub mod worker;

pub use client::{
    signal_name, ClientError, ExitCause, KillReason, Ran, Ready, WorkerClient, WorkerCommand, WorkerEvent, WorkerExit,
    WorkerLink, WorkerSpec,
};
pub use faults::{FaultKind, FaultRule, FaultsError};
pub use history::{History, HistoryKey, UnitRecord};
pub use payload::{Answer, Payload, PayloadKind, TypedRow};
pub use protocol::{LoadFailureKind, RunError};
pub use supervisor::{
    Answered, Isolation, Job, ModelUnits, PredictError, StartError, Supervisor, SupervisorConfig, UnitState, UnitView,
    WorkerState, WorkerView,
};
pub use worker::{run_worker, worker_main, WorkerArgs};
