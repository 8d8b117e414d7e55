//! Supervised workers for bulkhead: a native crash, hang or leak in an engine never takes the server down or loses
//! a request.
//!
//! * [`protocol`]: length-delimited postcard frames, versioned handshake, `Ready` only after warm-up;
//! * [`faults`]: `BULKHEAD_FAULTS` fault injection with real signals and real allocations;
//! * [`worker`]: the body of the hidden `bulkhead worker` subcommand ([`run_worker`]);
//! * [`process`]: worker processes (own process group, parent-death signal, stderr tail, typed [`WorkerExit`]);
//! * [`history`]: crash history and quarantines persisted per (model digest, unit, runtime version);
//! * [`supervisor`]: the per-model [`Supervisor`]: chain walk, retry, poison requests, restart backoff,
//!   quarantine and re-probe, watchdog, recycling, and the `/units` state.
#![deny(missing_docs)]

pub mod faults;
pub mod history;
pub mod process;
pub mod protocol;
pub mod supervisor;
pub mod worker;

pub use faults::{FaultKind, FaultRule, FaultsError};
pub use history::{History, UnitRecord};
pub use process::{signal_name, WorkerCommand, WorkerEvent, WorkerExit, WorkerLink};
pub use supervisor::{
    Isolation, Job, JobAnswer, ModelUnits, PredictError, StartError, Supervisor, SupervisorConfig, UnitState, UnitView,
};
pub use worker::{run_worker, worker_main, WorkerArgs};
