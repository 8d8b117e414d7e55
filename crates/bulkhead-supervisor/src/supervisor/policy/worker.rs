//! One worker as the policy core sees it: each phase carries exactly the data that phase has.

use std::collections::VecDeque;
use std::time::Instant;

use crate::protocol::LoadFailureKind;
use crate::supervisor::view::{WorkerState, WorkerView};

use super::event::WorkerId;
use super::work::InFlight;

/// Why a live worker takes no new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drain {
    /// Its replacement serves now.
    Replaced,
    /// Recycled when memory would not fit two copies: it drains first, its replacement starts after it exits.
    ThenReplace,
    /// A preferred unit serves again.
    Preferred,
    /// Its memory passed 1.5x the recycle limit while its replacement warms up: it takes nothing more.
    Paused,
}

/// A worker that answers (or answered) predictions.
#[derive(Debug)]
pub(crate) struct Live {
    /// Sent and not answered, oldest first; the worker runs them in order.
    pub inflight: VecDeque<InFlight>,
    /// When the oldest in flight started running (the previous answer, or its send).
    pub head_since: Instant,
    /// Predictions answered (probes included).
    pub served: u64,
    /// Resident memory right after warm-up.
    pub rss_ready: u64,
    /// When it last answered a forward pass.
    pub last_ok: Instant,
    /// Warm-up milliseconds per padded token (the worst shape): the deadline of shapes not observed yet.
    pub ms_per_token: f64,
    /// Since when its process is seen stopped (SIGSTOP) while holding work.
    pub stopped_since: Option<Instant>,
    /// Its CPU time at the last sample, and when that last grew (`None` until sampled: unknown).
    pub cpu: Option<(u64, Instant)>,
}

impl Live {
    pub fn new(now: Instant, rss_ready: u64, ms_per_token: f64) -> Live {
        Live {
            inflight: VecDeque::new(),
            head_since: now,
            served: 0,
            rss_ready,
            last_ok: now,
            ms_per_token,
            stopped_since: None,
            cpu: None,
        }
    }

    /// A worker that answered nothing and holds nothing: the next prediction would be its first.
    pub fn fresh(&self) -> bool {
        self.served == 0 && self.inflight.is_empty()
    }
}

/// Told to stop (or killed): waiting for the exit.
#[derive(Debug)]
pub(crate) struct Stopping {
    /// Work it still held; it goes back to the queue when the exit arrives.
    pub inflight: VecDeque<InFlight>,
    /// Killed if not gone by then (`None` once killed).
    pub deadline: Option<Instant>,
    /// The supervisor meant it to stop (drain, recycle, quarantine, shutdown): its death counts for nothing.
    pub planned: bool,
}

/// Where a worker is in its life.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Spawned; loading (`loaded_at` once `Loaded`), or reported a load failure and is exiting.
    Starting { loaded_at: Option<Instant>, failed: Option<(LoadFailureKind, String)> },
    /// Takes predictions.
    Serving(Live),
    /// Takes predictions (last) while its replacement warms up; why it is replaced.
    Retiring(Live, String),
    /// Takes no new predictions; `Shutdown` once empty.
    Draining(Live, Drain),
    /// `Shutdown` sent or killed.
    Stopping(Stopping),
}

/// One worker.
#[derive(Debug)]
pub(crate) struct Worker {
    pub id: WorkerId,
    /// Index of its unit in the chain.
    pub unit: usize,
    pub generation: u32,
    pub pid: Option<u32>,
    pub spawned: Instant,
    /// Resident memory (answers and samples).
    pub rss: u64,
    pub phase: Phase,
}

impl Worker {
    /// The live part of a worker that answers or drains.
    pub fn live(&self) -> Option<&Live> {
        match &self.phase {
            Phase::Serving(l) | Phase::Retiring(l, _) | Phase::Draining(l, _) => Some(l),
            _ => None,
        }
    }

    pub fn live_mut(&mut self) -> Option<&mut Live> {
        match &mut self.phase {
            Phase::Serving(l) | Phase::Retiring(l, _) | Phase::Draining(l, _) => Some(l),
            _ => None,
        }
    }

    /// Whether it takes new predictions.
    pub fn accepts(&self) -> bool {
        matches!(self.phase, Phase::Serving(_) | Phase::Retiring(..))
    }

    /// Starting or serving and not being replaced: what counts toward the unit's warm workers.
    pub fn counts_as_warm(&self) -> bool {
        matches!(self.phase, Phase::Starting { .. } | Phase::Serving(_))
    }

    /// Work it holds (in flight, or held when it was told to stop).
    pub fn held(&self) -> usize {
        match &self.phase {
            Phase::Serving(l) | Phase::Retiring(l, _) | Phase::Draining(l, _) => l.inflight.len(),
            Phase::Stopping(s) => s.inflight.len(),
            Phase::Starting { .. } => 0,
        }
    }

    /// Moves it to `Stopping`, keeping what it held; `planned` says whether its death is the supervisor's plan.
    pub fn stop(&mut self, planned: bool, deadline: Option<Instant>) {
        let inflight = match std::mem::replace(&mut self.phase, Phase::Starting { loaded_at: None, failed: None }) {
            Phase::Serving(l) | Phase::Retiring(l, _) | Phase::Draining(l, _) => l.inflight,
            Phase::Stopping(s) => s.inflight,
            Phase::Starting { .. } => VecDeque::new(),
        };
        self.phase = Phase::Stopping(Stopping { inflight, deadline, planned });
    }

    pub fn view(&self) -> WorkerView {
        let (state, served) = match &self.phase {
            Phase::Starting { loaded_at: None, .. } => (WorkerState::Loading, 0),
            Phase::Starting { .. } => (WorkerState::Warming, 0),
            Phase::Serving(l) => (WorkerState::Serving, l.served),
            Phase::Retiring(l, _) => (WorkerState::Retiring, l.served),
            Phase::Draining(l, _) => (WorkerState::Draining, l.served),
            Phase::Stopping(_) => (WorkerState::Stopping, 0),
        };
        WorkerView {
            pid: self.pid,
            generation: self.generation,
            state,
            in_flight: self.held(),
            served,
            resident_bytes: self.rss,
            replaced_because: match &self.phase {
                Phase::Retiring(_, why) => Some(why.clone()),
                _ => None,
            },
        }
    }
}
