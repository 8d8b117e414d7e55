//! One unit of the chain as the policy core sees it: its phase (with that phase's data), its counters, its crash
//! record key and the latency it showed.

use std::collections::BTreeMap;
use std::time::Instant;

use bulkhead_core::{SessionReport, Unit};

use super::death::WorkerExit;
use super::record::HistoryKey;
use crate::protocol::WarmupShape;

use super::watchdog::LatencyBook;

/// Where a unit is.
#[derive(Debug, Clone)]
pub(crate) enum UnitPhase {
    /// Not wanted now (a fallback not reached, or a later unit after a preferred one came back).
    Standby,
    /// Wanted: keeps its warm workers; a new one may start from `next_start` on (the restart backoff).
    Active { next_start: Instant },
    /// Out of the chain until `reprobe_at` (persisted until `until_unix`).
    Quarantined { reprobe_at: Instant, until_unix: f64, reason: String },
    /// Cannot run here.
    Unavailable { reason: String },
}

/// What `/units` shows of a unit beyond its phase.
#[derive(Debug, Clone, Default)]
pub(crate) struct UnitStats {
    /// The last crash or restart note (shown while it is the latest news).
    pub note: Option<String>,
    pub deaths_by_exit: BTreeMap<String, u64>,
    pub deaths_by_cause: BTreeMap<String, u64>,
    pub last_exit: Option<WorkerExit>,
    pub restarts: u64,
    pub recycles: u64,
    pub predictions: u64,
    pub report: Option<SessionReport>,
    pub warmup: Vec<WarmupShape>,
    pub load_ms: Option<f64>,
    pub warmup_ms: Option<f64>,
    pub rss_ready: u64,
}

/// One unit of the chain.
#[derive(Debug)]
pub(crate) struct Slot {
    pub unit: Unit,
    pub runtime: String,
    pub key: HistoryKey,
    pub phase: UnitPhase,
    /// The next worker's generation.
    pub generation: u32,
    pub stats: UnitStats,
    /// Counted deaths since the last answer (drives the restart backoff).
    pub consecutive_crashes: u32,
    /// Counted deaths while loading since it last became ready (a unit that cannot even start).
    pub load_crashes: u32,
    /// It has had a worker ready in this process.
    pub served_ever: bool,
    pub latency: LatencyBook,
    /// A recycle limit learnt from an OOM kill (below the configured one).
    pub oom_rss_limit: Option<u64>,
    /// Under an `RLIMIT_DATA` ceiling: how much more its workers' data size is than their resident memory (memory
    /// reserved and not touched, counted by the ceiling), the largest sampled.
    pub unresident_data: u64,
}

impl Slot {
    pub fn new(unit: Unit, runtime: String, key: HistoryKey) -> Slot {
        Slot {
            unit,
            runtime,
            key,
            phase: UnitPhase::Standby,
            generation: 0,
            stats: UnitStats::default(),
            consecutive_crashes: 0,
            load_crashes: 0,
            served_ever: false,
            latency: LatencyBook::default(),
            oom_rss_limit: None,
            unresident_data: 0,
        }
    }

    /// Neither unavailable nor quarantined: it may serve.
    pub fn eligible(&self) -> bool {
        !matches!(self.phase, UnitPhase::Unavailable { .. } | UnitPhase::Quarantined { .. })
    }

    pub fn quarantined(&self) -> bool {
        matches!(self.phase, UnitPhase::Quarantined { .. })
    }

    /// Why it is not serving, for error messages.
    pub fn reason(&self) -> String {
        match &self.phase {
            UnitPhase::Quarantined { reason, .. } | UnitPhase::Unavailable { reason } => reason.clone(),
            _ => self.stats.note.clone().unwrap_or_else(|| "not started".into()),
        }
    }
}
