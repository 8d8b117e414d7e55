//! Supervisor settings, with every default documented in one place.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::WorkerCommand;
use crate::faults::FaultRule;

/// Where workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// One child process per worker (the default): crashes are contained.
    Process,
    /// A thread of this process: no crash isolation, no watchdog kill; for libraries and to measure the overhead.
    None,
}

impl FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "process" => Ok(Isolation::Process),
            "none" | "in-process" => Ok(Isolation::None),
            other => Err(format!("unknown isolation `{other}`; valid: process, none")),
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isolation::Process => "process",
            Isolation::None => "none",
        })
    }
}

/// How a worker's memory ceiling is enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mechanism")]
pub enum Enforcement {
    /// A child of this cgroup (v2) per worker: `memory.max`, `memory.swap.max = 0`.
    CgroupV2 {
        /// The group under which each worker gets its child.
        parent: PathBuf,
    },
    /// A child of this memory cgroup (v1) per worker: `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`).
    CgroupV1 {
        /// The group under which each worker gets its child.
        parent: PathBuf,
    },
    /// `setrlimit(RLIMIT_DATA)` in the worker before `exec`.
    RlimitData {
        /// Why no cgroup enforces it (`None`: the rlimit was asked for).
        why_not_cgroup: Option<String>,
    },
}

impl Enforcement {
    /// A short name: `cgroup_v2`, `cgroup_v1`, `rlimit_data`.
    pub fn label(&self) -> &'static str {
        match self {
            Enforcement::CgroupV2 { .. } => "cgroup_v2",
            Enforcement::CgroupV1 { .. } => "cgroup_v1",
            Enforcement::RlimitData { .. } => "rlimit_data",
        }
    }
}

/// A memory ceiling per worker process and how it is enforced: plain data, decided once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryCeiling {
    /// The ceiling, in bytes.
    pub limit_bytes: u64,
    /// How.
    pub enforcement: Enforcement,
}

impl MemoryCeiling {
    /// Whether the ceiling also counts memory that is reserved and not resident (`RLIMIT_DATA`), as opposed to
    /// memory charged to a cgroup, which is resident or cached.
    pub fn counts_unresident(&self) -> bool {
        matches!(self.enforcement, Enforcement::RlimitData { .. })
    }

    /// The rlimit mechanism, without looking for a cgroup.
    pub fn rlimit(limit_bytes: u64) -> MemoryCeiling {
        MemoryCeiling { limit_bytes, enforcement: Enforcement::RlimitData { why_not_cgroup: None } }
    }
}

/// How long after the last short prediction arrived long ones still leave a worker free for short ones
/// ([`SupervisorConfig::long_row_tokens`]).
pub const SHORT_LANE_WINDOW: Duration = Duration::from_secs(2);

/// Supervisor settings (defaults documented on each field).
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Worker processes or threads (default: processes).
    pub isolation: Isolation,
    /// The program that runs `worker` (default: this executable).
    pub worker_command: WorkerCommand,
    /// Fault rules passed to every worker (from `BULKHEAD_FAULTS`).
    pub faults: Vec<FaultRule>,
    /// Where the crash history is persisted (`None`: in memory only).
    pub state_dir: Option<PathBuf>,
    /// Warm workers kept on the serving unit (default 1); requests go to the least loaded one.
    pub workers: usize,
    /// Intra-op threads of each worker's engine (`None`: the engine's default, one per core).
    pub worker_threads: Option<usize>,
    /// Predictions sent to one worker before earlier ones are answered (pipelining; default 2).
    pub max_inflight: usize,
    /// A prediction of token rows is *long* when its longest row has more tokens than this (default 128; `None`:
    /// no prediction is long). While short predictions arrive (one within [`SHORT_LANE_WINDOW`]), long ones leave
    /// one warm worker of the serving unit free of long work, short ones go to a worker holding no long one, and
    /// short ones pass long ones that wait for that reason: a short request never waits behind a full-length forward
    /// pass when there are two workers or more. Without short traffic, long predictions use every worker.
    pub long_row_tokens: Option<usize>,
    /// Crashes in the leaky bucket that quarantine a unit (default 3, as Chrome's GPU process).
    pub quarantine_crashes: u32,
    /// One crash is forgiven per this period (default 5 minutes).
    pub forgive_every: Duration,
    /// Workers a request may crash before it is answered as poison (default 2); one of them must have been a fresh
    /// worker running it alone as its first prediction.
    pub poison_crashes: u32,
    /// First restart delay after a crash; doubles per consecutive crash (default 100 ms).
    pub restart_backoff: Duration,
    /// Longest restart delay (default 5 s): the last unit that can serve restarts at least this often.
    pub restart_backoff_max: Duration,
    /// First re-probe delay of a quarantined unit; doubles per quarantine (default 10 minutes).
    pub reprobe_after: Duration,
    /// Longest re-probe delay (default 6 hours).
    pub reprobe_max: Duration,
    /// A worker that is not ready after this long is killed (a load hang; default 300 s).
    pub load_timeout: Duration,
    /// A request that found no worker to run it for this long is answered "unavailable" (default 30 s).
    pub queue_timeout: Duration,
    /// Fixed prediction deadline; `None` derives it from observed latency (default).
    pub predict_timeout: Option<Duration>,
    /// Deadline of a shape class with enough live observations: their 99th percentile × this (default 10).
    pub live_timeout_factor: f64,
    /// Smallest deadline derived from live observations (default 1 s).
    pub live_timeout_floor: Duration,
    /// Deadline of a shape class not observed yet: the warm-up latency scaled to the batch × this (default 20).
    pub timeout_factor: f64,
    /// Smallest deadline derived from the warm-up (default 5 s).
    pub timeout_floor: Duration,
    /// A worker seen stopped (SIGSTOP) with work in flight for this long is replaced (default 250 ms).
    pub stopped_grace: Duration,
    /// Past its (soft) deadline, a worker is killed once it used no CPU for this long (default 500 ms): a hang waits,
    /// a worker slowed down by a busy machine still computes. The hard deadline kills either.
    pub stall_window: Duration,
    /// Recycle a worker after this many predictions.
    pub recycle_after: Option<u64>,
    /// Recycle a worker whose resident memory exceeds this many bytes.
    pub recycle_rss_bytes: Option<u64>,
    /// Recycle a worker whose resident memory grew by this many bytes since warm-up.
    pub recycle_growth_bytes: Option<u64>,
    /// A memory ceiling per worker process and how it is enforced (`--worker-memory-mb`; default none). A worker is
    /// recycled once it used half the headroom the ceiling left it after warm-up; one whose replacement warms up
    /// takes no more work past three quarters of it. A worker that runs out of memory while loading makes its unit
    /// unavailable (the model does not fit under the ceiling).
    pub worker_memory: Option<MemoryCeiling>,
    /// An idle serving worker is probed with a real forward pass this often, so health means "answers now".
    pub health_probe_every: Duration,
    /// `healthy()` requires a real forward pass within this window (default 60 s).
    pub health_window: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            isolation: Isolation::Process,
            worker_command: WorkerCommand::default(),
            faults: vec![],
            state_dir: None,
            workers: 1,
            worker_threads: None,
            max_inflight: 2,
            long_row_tokens: Some(128),
            quarantine_crashes: 3,
            forgive_every: Duration::from_secs(300),
            poison_crashes: 2,
            restart_backoff: Duration::from_millis(100),
            restart_backoff_max: Duration::from_secs(5),
            reprobe_after: Duration::from_secs(600),
            reprobe_max: Duration::from_secs(6 * 3600),
            load_timeout: Duration::from_secs(300),
            queue_timeout: Duration::from_secs(30),
            predict_timeout: None,
            live_timeout_factor: 10.0,
            live_timeout_floor: Duration::from_secs(1),
            timeout_factor: 20.0,
            timeout_floor: Duration::from_secs(5),
            stopped_grace: Duration::from_millis(250),
            stall_window: Duration::from_millis(500),
            recycle_after: None,
            recycle_rss_bytes: None,
            recycle_growth_bytes: None,
            worker_memory: None,
            health_probe_every: Duration::from_secs(20),
            health_window: Duration::from_secs(60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_parses() {
        assert_eq!("process".parse::<Isolation>().unwrap(), Isolation::Process);
        assert_eq!("NONE".parse::<Isolation>().unwrap(), Isolation::None);
        assert!("thread".parse::<Isolation>().unwrap_err().contains("valid: process, none"));
    }
}
