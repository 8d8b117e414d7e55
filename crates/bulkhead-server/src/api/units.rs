//! `GET /units`: per model, the chain and each unit's state, as the server promises it on the wire. The supervisor
//! has its own typed view; `backend.rs` converts it into these types field by field, so a change inside the
//! supervisor never changes this response by accident (and `/metrics` reads the same fields).

use std::collections::BTreeMap;

use bulkhead_core::{NodePlacement, Precision, TensorSpec};
use serde::Serialize;
use utoipa::ToSchema;

/// Where a model's workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// One child process per worker: crashes are contained.
    Process,
    /// Threads of the server process.
    None,
}

/// The state of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UnitState {
    /// Not running; may be started (a fallback, or not reached yet).
    Standby,
    /// A worker is loading the model.
    Loading,
    /// Loaded; the warm-up runs.
    Warming,
    /// Answers requests.
    Serving,
    /// Its worker died; a restart is scheduled.
    Crashed,
    /// Crashed too often while another unit can serve; skipped until the re-probe.
    Quarantined,
    /// Cannot run here (engine missing, no device, model rejected).
    Unavailable,
}

/// The phase of one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Loading the model.
    Loading,
    /// Warming up.
    Warming,
    /// Takes requests.
    Serving,
    /// Takes requests while its replacement warms up.
    Retiring,
    /// Finishes what it holds, then stops.
    Draining,
    /// Told to stop (or killed); waiting for its exit.
    Stopping,
}

/// One worker of a unit.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkerView {
    /// Process id (`None` in-process).
    pub pid: Option<u32>,
    /// Which lifetime of the unit it is.
    pub generation: u32,
    /// Its phase.
    pub state: WorkerState,
    /// Predictions sent and not answered yet.
    pub in_flight: usize,
    /// Predictions answered.
    pub served: u64,
    /// Resident memory.
    pub resident_bytes: u64,
    /// Why it is being replaced, while it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced_because: Option<String>,
}

/// One warm-up measurement: a batch shape and its median latency.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WarmupShape {
    /// Rows in the batch.
    pub batch: usize,
    /// Padded sequence length.
    pub seq: usize,
    /// Milliseconds.
    pub ms: f64,
}

/// One unit of a model's chain.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UnitView {
    /// The unit.
    pub unit: String,
    /// Its state.
    pub state: UnitState,
    /// Why it is unavailable / quarantined / crashed, or serving on the floor.
    pub reason: Option<String>,
    /// The last unit of the chain that can serve: never quarantined, restarted for as long as it takes.
    pub floor: bool,
    /// Runtime and version.
    pub runtime: String,
    /// Unplanned worker deaths of this unit for this model (persisted history included).
    pub crashes: u64,
    /// Unplanned deaths by exit (`SIGSEGV`, `SIGABRT`, `SIGKILL`, `exit 70`...) since this process started.
    pub crashes_by_exit: BTreeMap<String, u64>,
    /// Unplanned deaths by cause (`crash`, `hang`, `stopped`, `external`, `oom`, `killed`) since this process
    /// started; only `crash` and `hang` count toward a quarantine.
    pub crashes_by_cause: BTreeMap<String, u64>,
    /// The leaky-bucket level (quarantine at `quarantine_crashes`).
    pub crash_level: f64,
    /// The last worker exit: `signal SIGSEGV`, `exit code 70`...
    pub last_exit: Option<String>,
    /// The tail of that worker's stderr.
    pub stderr_tail: Option<String>,
    /// Predictions answered by this unit.
    pub predictions: u64,
    /// Resident memory of its largest worker (each worker's is in `workers`).
    pub resident_bytes: u64,
    /// Resident memory of its latest worker right after warm-up.
    pub resident_after_warmup_bytes: u64,
    /// Workers recycled (predictions, memory, or to give a suspect request a fresh worker).
    pub recycles: u64,
    /// Workers restarted after an unplanned death.
    pub restarts: u64,
    /// Worker lifetimes started (the next generation number).
    pub generations: u32,
    /// The pid of its first serving worker.
    pub pid: Option<u32>,
    /// Its workers.
    pub workers: Vec<WorkerView>,
    /// Quarantined until (Unix seconds).
    pub quarantined_until: Option<f64>,
    /// Load time (spawn to loaded) of the latest worker.
    pub load_ms: Option<f64>,
    /// Warm-up time of the latest worker.
    pub warmup_ms: Option<f64>,
    /// Warm-up latency per shape.
    pub warmup: Vec<WarmupShape>,
    /// Precision of the weights as loaded.
    #[schema(value_type = Option<String>, example = "fp32")]
    pub precision: Option<Precision>,
    /// Node placement per execution provider.
    #[schema(value_type = Vec<Object>)]
    pub placement: Vec<NodePlacement>,
    /// The current prediction deadline (watchdog) for a single short row, ms.
    pub deadline_ms: Option<f64>,
    /// The resident-memory limit above which workers are recycled, when one applies.
    pub recycle_rss_limit_bytes: Option<u64>,
}

/// The chain of one model and the state of each of its units.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelUnits {
    /// The model name.
    pub model: String,
    /// The chain, in order.
    pub chain: Vec<String>,
    /// The unit serving now.
    pub serving: Option<String>,
    /// Process or none.
    pub isolation: Isolation,
    /// Warm workers kept on the serving unit.
    pub workers: usize,
    /// Requests waiting in the supervisor.
    pub queued: usize,
    /// Per unit.
    pub units: Vec<UnitView>,
    /// A tensor model's graph inputs, once a worker has loaded it (empty for embedding models).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub inputs: Vec<TensorSpec>,
    /// A tensor model's graph outputs, once a worker has loaded it (empty for embedding models).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub outputs: Vec<TensorSpec>,
    /// The memory ceiling of each worker process and what enforces it (`--worker-memory-mb`), when one is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_ceiling: Option<MemoryCeiling>,
}

/// A memory ceiling per worker process.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemoryCeiling {
    /// The ceiling, in bytes.
    pub limit_bytes: u64,
    /// `cgroup_v2` or `cgroup_v1` (a memory cgroup per worker; the kernel's OOM killer ends a worker at the ceiling)
    /// or `rlimit_data` (`setrlimit(RLIMIT_DATA)`: an allocation past the ceiling fails).
    pub mechanism: String,
    /// The group under which each worker gets a memory cgroup of its own.
    pub cgroup_parent: Option<String>,
    /// Why no cgroup enforces it, when the rlimit does.
    pub why_not_cgroup: Option<String>,
}
