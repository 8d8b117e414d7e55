//! The supervisor's policy as a state machine without I/O: state + [`Event`] → [`Effect`]s.
//!
//! [`Core::handle`] takes one event (a caller's command, a worker's message or exit, a tick with what was sampled of
//! the worker processes) and the time, updates the state, and returns what the actor must do (spawn, send, kill,
//! save the history, answer, publish). It never reads a clock, a file or a pipe, so every policy is tested by
//! feeding events and reading effects (`tests`).
//!
//! After every event the core *reconciles* (the first eligible unit of the chain keeps its warm workers; later
//! units drain once it serves) and *dispatches* (queued work to the least loaded worker of the best serving unit).
//! The policies live one per file: [`chain`] (which unit serves, quarantine and the floor), [`exit`] (retry,
//! strikes, poison, causes of death, backoff), [`watchdog`] (hangs), [`recycle`] (recycling and OOM kills),
//! [`dispatch`] (dispatch, clean rooms, health probes, answers), [`view`] (the `/units` view).
//!
//! Its vocabulary lives here too, as plain data the edges convert to and from: [`job`] (requests, answers and
//! their errors), [`death`] (how a worker ended and why it was killed), [`record`] (crash records and the bucket),
//! and the events' `/proc` samples ([`ProcStat`]). Nothing in this module reads a clock, a file, a pipe or a
//! process (the crate's `tests/invariants.rs` checks it).

mod chain;
pub mod death;
mod dispatch;
pub mod event;
mod exit;
pub mod job;
pub mod record;
mod recycle;
mod unit;
mod view;
mod watchdog;
mod work;
mod worker;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Instant;

use bulkhead_core::Unit;

use crate::protocol::{Response, Signature};
use crate::supervisor::config::SupervisorConfig;

pub use death::{ExitCause, KillReason, WorkerExit};
pub use event::{Effect, Event, Now, ProcStat, Publish, RequestId, Sample, Submitted, WaiterId, WorkerId};
pub use job::{Answered, Job, PredictError, StartError};
pub use record::{CrashBook, HistoryKey};
use unit::Slot;
use work::{Pending, Work};
use worker::{Phase, Worker};

/// Whether callers may consider the model up: a worker takes requests, and when it last answered a forward pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct Health {
    /// A worker accepts predictions.
    pub ready: bool,
    /// The last answered forward pass.
    pub last_ok: Option<Instant>,
}

/// One unit of the chain handed to [`Core::new`].
#[derive(Debug, Clone)]
pub struct UnitInit {
    /// The unit.
    pub unit: Unit,
    /// Its runtime and version (part of its crash-record key).
    pub runtime: String,
}

/// The policy state of one model's supervisor.
pub struct Core {
    cfg: SupervisorConfig,
    model: String,
    units: Vec<Slot>,
    workers: Vec<Worker>,
    queue: VecDeque<Work>,
    history: CrashBook,
    next_worker: u64,
    next_run: u64,
    waiters: Vec<WaiterId>,
    /// Since when a shutdown was asked.
    shutdown: Option<Instant>,
    stopped: bool,
    mem_available: Option<u64>,
    health: Health,
    /// When the latest short prediction of token rows was submitted (see [`SupervisorConfig::long_row_tokens`]).
    last_short: Option<Instant>,
    signature: Signature,
    /// What this event asks of the actor (taken by `handle`).
    effects: Vec<Effect>,
}

impl Core {
    /// A core for `model` on `units` (the chain, in order), with its crash history keyed by the weights `digest`.
    /// Quarantines still running in the history are restored.
    pub fn new(
        model: &str,
        digest: &str,
        units: Vec<UnitInit>,
        history: CrashBook,
        cfg: SupervisorConfig,
        now: Now,
    ) -> Core {
        let units = units
            .into_iter()
            .map(|u| {
                let key =
                    HistoryKey { digest: digest.to_string(), unit: u.unit.to_string(), runtime: u.runtime.clone() };
                Slot::new(u.unit, u.runtime, key)
            })
            .collect();
        let mut core = Core {
            cfg,
            model: model.to_string(),
            units,
            workers: vec![],
            queue: VecDeque::new(),
            history,
            next_worker: 0,
            next_run: 0,
            waiters: vec![],
            shutdown: None,
            stopped: false,
            mem_available: None,
            health: Health::default(),
            last_short: None,
            signature: Signature::default(),
            effects: vec![],
        };
        core.restore_quarantines(now);
        core
    }

    /// Handles one event at `now`; returns what the actor must do, in order.
    pub fn handle(&mut self, now: Now, event: Event) -> Vec<Effect> {
        let hot = matches!(
            event,
            Event::Submit(_) | Event::Message { msg: Response::Answered { .. } | Response::Failed { .. }, .. }
        );
        match event {
            Event::Submit(jobs) => self.on_submit(jobs),
            Event::WaitReady(waiter) => self.on_wait_ready(waiter),
            Event::Shutdown => {
                if self.shutdown.is_none() {
                    tracing::info!(model = %self.model, "stopping: finishing queued and in-flight requests");
                    self.shutdown = Some(now.at);
                }
            }
            Event::Spawned { worker, pid } => {
                if let Some(w) = self.workers.iter_mut().find(|w| w.id == worker) {
                    w.pid = pid;
                }
            }
            Event::SpawnFailed { worker, reason } => self.on_spawn_failed(worker, reason),
            Event::Message { worker, msg } => self.on_message(now, worker, msg),
            Event::Exited { worker, exit } => self.on_exit(now, worker, exit),
            Event::Tick { samples, mem_available } => self.on_tick(now, samples, mem_available),
        }
        if !self.stopped {
            if self.shutdown.is_some() {
                self.finish_shutdown_if_done(now);
            } else {
                self.reconcile(now);
                self.dispatch(now);
            }
        }
        self.effects.push(Effect::Publish(if hot { Publish::Counters } else { Publish::Full }));
        std::mem::take(&mut self.effects)
    }

    /// Whether a worker takes requests, and the last answered forward pass.
    pub fn health(&self) -> Health {
        self.health
    }

    /// The crash records (the actor writes them to the history file on [`Effect::SaveHistory`]).
    pub fn history(&self) -> &CrashBook {
        &self.history
    }

    /// A tensor model's graph signature, once a worker has loaded it.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Requests waiting for a worker.
    pub fn queued(&self) -> usize {
        self.queue.iter().filter(|w| !w.probe).map(|w| w.jobs.len()).sum()
    }

    fn answer(&mut self, job: Pending, result: Result<Answered, PredictError>) {
        self.effects.push(Effect::Answer { request: job.id, result });
    }

    fn on_submit(&mut self, jobs: Vec<Submitted>) {
        let pending: Vec<Pending> = jobs
            .into_iter()
            .map(|s| Pending { id: s.id, job: s.job, enqueued: s.enqueued, strikes: vec![], retries: 0 })
            .collect();
        if self.shutdown.is_some() {
            pending.into_iter().for_each(|p| self.answer(p, Err(PredictError::ShuttingDown)));
            return;
        }
        if let Some(reason) = self.dead_end() {
            let msg = format!("no unit of the chain can serve {}: {reason}", self.model);
            pending.into_iter().for_each(|p| self.answer(p, Err(PredictError::Unavailable(msg.clone()))));
            return;
        }
        let works = Work::group(pending);
        let limit = self.cfg.long_row_tokens;
        if let Some(at) = works
            .iter()
            .filter(|w| w.jobs[0].job.payload.batchable() && !w.long(limit))
            .map(|w| w.jobs[0].enqueued)
            .max()
        {
            self.last_short = Some(self.last_short.map_or(at, |t| t.max(at)));
        }
        self.queue.extend(works);
    }

    fn on_wait_ready(&mut self, waiter: WaiterId) {
        if let Some(w) = self.workers.iter().find(|w| w.accepts()) {
            let unit = self.units[w.unit].unit;
            self.effects.push(Effect::Ready { waiter, result: Ok(unit) });
        } else if let Some(err) = self.start_error() {
            self.effects.push(Effect::Ready { waiter, result: Err(err) });
        } else {
            self.waiters.push(waiter);
        }
    }

    fn on_spawn_failed(&mut self, worker: WorkerId, reason: String) {
        let Some(pos) = self.workers.iter().position(|w| w.id == worker) else { return };
        let w = self.workers.remove(pos);
        let slot = &mut self.units[w.unit];
        tracing::warn!(unit = %slot.unit, model = %self.model, "skipping {}: {reason}", slot.unit);
        slot.phase = unit::UnitPhase::Unavailable { reason };
    }

    fn update_ready(&mut self) {
        self.health.ready = self.workers.iter().any(Worker::accepts);
    }

    /// Finishes once nothing is queued or in flight (or nothing serves, or the grace passed): fails what is left,
    /// tells every worker to stop, and reports [`Effect::Stopped`].
    fn finish_shutdown_if_done(&mut self, now: Now) {
        const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);
        let Some(since) = self.shutdown else { return };
        let busy = !self.queue.is_empty() || self.workers.iter().any(|w| w.held() > 0);
        let serving = self.workers.iter().any(Worker::accepts);
        if busy && serving && now.at - since < SHUTDOWN_GRACE {
            return;
        }
        while let Some(w) = self.queue.pop_front() {
            w.jobs.into_iter().for_each(|j| self.answer(j, Err(PredictError::ShuttingDown)));
        }
        for mut w in std::mem::take(&mut self.workers) {
            w.stop(true, None);
            if let Phase::Stopping(s) = w.phase {
                for f in s.inflight {
                    f.work.jobs.into_iter().for_each(|j| self.answer(j, Err(PredictError::ShuttingDown)));
                }
            }
            self.effects.push(Effect::Send { worker: w.id, request: crate::protocol::Request::Shutdown });
        }
        for u in &mut self.units {
            if matches!(u.phase, unit::UnitPhase::Active { .. }) {
                u.phase = unit::UnitPhase::Standby;
            }
        }
        self.health.ready = false;
        self.stopped = true;
        self.effects.push(Effect::Stopped);
    }
}
