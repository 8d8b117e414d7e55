//! A worker died: what its death counts toward, what happens to the work it held, and when the unit restarts.
//!
//! | cause of death | fills the crash bucket | strike on the request it ran | restart |
//! |---|---|---|---|
//! | own crash (fault signal, abort, non-zero exit), protocol error | yes | yes | backoff |
//! | watchdog: a prediction past its deadline, a load past the load timeout | yes | yes | backoff |
//! | stopped from outside (SIGSTOP) and replaced | no | no | at once |
//! | a signal sent from outside (`kill`, `kill -9`) | no | no | at once |
//! | out of memory: the kernel's OOM killer, or an allocation failed at the worker's ceiling | no (recycle limits shrink instead) | yes | backoff; while loading under a ceiling, the unit is unavailable |
//! | planned by the supervisor (recycle, drain, quarantine, shutdown) | no | no | - |
//!
//! A worker runs its predictions in order, so the oldest in flight is the one it was running: only that one gets a
//! strike; the others go back to the queue front untouched. A struck batch is split into its requests, so the next
//! death tells which one is to blame. A request with `poison_crashes` strikes is answered as poison only if one of
//! them came from a *clean room* (it ran alone as the first prediction of a fresh worker); otherwise it waits for a
//! fresh worker and runs there first. Deaths that follow a worker's age (a crash every N predictions) never strike
//! the same request in a clean room, so they never make an innocent request poison. A poison request's crashes are
//! then forgiven: they were the request's fault, not the unit's.

use std::time::Duration;

use super::death::{allocation_failed, ExitCause, KillReason, WorkerExit};
use super::job::PredictError;
use super::record::NewCrash;

use super::event::{Effect, Now, WorkerId};
use super::unit::UnitPhase;
use super::work::{InFlight, Strike, Work};
use super::worker::Phase;
use super::Core;

/// What a death counts toward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Consequence {
    /// It fills the unit's crash bucket (toward a quarantine).
    pub counts: bool,
    /// The request the worker was running gets a strike.
    pub strike: bool,
    /// The restart waits (exponential backoff); otherwise the unit restarts at once.
    pub backoff: bool,
}

/// The consequences of a death by `cause` (see the table at the top of this file).
pub(crate) fn consequence(cause: &ExitCause) -> Consequence {
    let (counts, strike, backoff) = match cause {
        ExitCause::Crash | ExitCause::Clean => (true, true, true),
        ExitCause::Killed { reason } => match reason {
            KillReason::Watchdog(_) | KillReason::LoadTimeout(_) | KillReason::Protocol(_) => (true, true, true),
            KillReason::Stopped(_) => (false, false, false),
            KillReason::Handshake(_) | KillReason::DidNotStop | KillReason::Quarantine | KillReason::Client(_) => {
                (false, false, true)
            }
        },
        ExitCause::External { .. } => (false, false, false),
        ExitCause::OutOfMemory => (false, true, true),
    };
    Consequence { counts, strike, backoff }
}

impl Core {
    pub(super) fn on_exit(&mut self, now: Now, id: WorkerId, exit: WorkerExit) {
        let Some(pos) = self.workers.iter().position(|w| w.id == id) else { return };
        let w = self.workers.remove(pos);
        let idx = w.unit;
        let unit = self.units[idx].unit;
        let (inflight, planned, loading, failed) = match w.phase {
            Phase::Starting { failed, .. } => (Default::default(), false, true, failed),
            Phase::Serving(l) | Phase::Retiring(l, _) | Phase::Draining(l, _) => (l.inflight, false, false, None),
            Phase::Stopping(s) => (s.inflight, s.planned, false, None),
        };
        self.update_ready();
        if let Some((kind, mut reason)) = failed {
            if let Some(ceiling) = self.cfg.worker_memory.as_ref().filter(|_| allocation_failed(&reason)) {
                reason.push_str(&format!(
                    " (out of memory under the memory ceiling of {} MiB per worker, --worker-memory-mb: raise it)",
                    ceiling.limit_bytes >> 20
                ));
            }
            tracing::warn!(%unit, model = %self.model, "skipping {unit}: {reason} ({kind})");
            let slot = &mut self.units[idx];
            slot.stats.last_exit = Some(exit);
            slot.phase = UnitPhase::Unavailable { reason };
            self.requeue(inflight, None);
            return;
        }
        if planned {
            tracing::debug!(%unit, "worker #{} stopped ({})", w.generation, exit.summary());
            self.requeue(inflight, None);
            return;
        }
        if let (true, ExitCause::OutOfMemory, Some(ceiling)) = (loading, &exit.cause, &self.cfg.worker_memory) {
            // The model does not fit under the ceiling: every worker of this unit would end the same way.
            let reason = format!(
                "{unit} runs out of memory while loading under the memory ceiling of {} MiB per worker \
                 (--worker-memory-mb): {}; raise the ceiling",
                ceiling.limit_bytes >> 20,
                exit.summary()
            );
            tracing::error!(%unit, model = %self.model, "{reason}");
            let slot = &mut self.units[idx];
            *slot.stats.deaths_by_exit.entry(exit.exit_key()).or_default() += 1;
            *slot.stats.deaths_by_cause.entry(exit.cause.label().to_string()).or_default() += 1;
            slot.stats.last_exit = Some(exit);
            slot.phase = UnitPhase::Unavailable { reason };
            self.requeue(inflight, None);
            return;
        }
        let verdict = consequence(&exit.cause);
        let summary = exit.summary();
        let when = if loading { "while loading" } else { "while serving" };
        let tail: Vec<&str> = exit.stderr_tail.trim_end().lines().rev().take(3).collect();
        tracing::error!(
            %unit, model = %self.model, generation = w.generation, cause = exit.cause.label(),
            "worker died {when}: {summary}; stderr tail: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
        let slot = &mut self.units[idx];
        *slot.stats.deaths_by_exit.entry(exit.exit_key()).or_default() += 1;
        *slot.stats.deaths_by_cause.entry(exit.cause.label().to_string()).or_default() += 1;
        let death = NewCrash { exit: &summary, cause: exit.cause.label(), counted: verdict.counts };
        let seq = self.history.record_crash(&slot.key, &self.model, death, now.unix);
        let strike = verdict.strike.then(|| Strike {
            unit: idx,
            label: format!("{unit}#{} {summary}", w.generation),
            crash: seq,
            clean: false,
            hang: matches!(exit.cause, ExitCause::Killed { reason: KillReason::Watchdog(_) }),
        });
        self.requeue(inflight, strike);
        if exit.cause == ExitCause::OutOfMemory {
            self.shrink_after_oom(idx, w.rss);
        }
        self.units[idx].stats.last_exit = Some(exit);
        self.account(now, idx, verdict, loading, &summary, when);
        self.effects.push(Effect::SaveHistory);
    }

    /// Counts a death and decides between a quarantine and a restart.
    fn account(&mut self, now: Now, idx: usize, verdict: Consequence, loading: bool, summary: &str, when: &str) {
        let slot = &mut self.units[idx];
        if verdict.counts {
            slot.consecutive_crashes += 1;
            if loading {
                slot.load_crashes += 1;
            }
        }
        let level = self.history.get(&slot.key).map_or(0.0, |r| r.bucket(now.unix, self.cfg.forgive_every));
        let eligible = slot.eligible();
        if verdict.counts && level + 1e-9 >= self.cfg.quarantine_crashes as f64 && self.can_quarantine(idx) {
            if eligible {
                self.quarantine(now, idx, level, summary);
            }
            return;
        }
        let slot = &mut self.units[idx];
        let backoff = if verdict.backoff {
            let doublings = slot.consecutive_crashes.saturating_sub(1).min(16);
            self.cfg.restart_backoff.saturating_mul(1u32 << doublings).min(self.cfg.restart_backoff_max)
        } else {
            Duration::ZERO
        };
        slot.stats.restarts += 1;
        slot.stats.note = Some(format!("worker died {when}: {summary}; restarting in {} ms", backoff.as_millis()));
        if slot.eligible() {
            slot.phase = UnitPhase::Active { next_start: now.at + backoff };
        }
    }

    /// Puts the work a dead worker held back at the queue front, in order; `strike` (when the death strikes) goes
    /// to the oldest, the prediction it was running.
    pub(super) fn requeue(&mut self, inflight: impl IntoIterator<Item = InFlight>, strike: Option<Strike>) {
        let mut back: Vec<Work> = vec![];
        for (i, f) in inflight.into_iter().enumerate() {
            if f.work.probe {
                continue;
            }
            let mut work = f.work;
            if let (0, Some(s)) = (i, &strike) {
                let clean = f.first && work.jobs.len() == 1;
                for j in &mut work.jobs {
                    j.strikes.push(Strike { clean, ..s.clone() });
                }
                if work.jobs.len() > 1 {
                    // Split so that the next death tells which request is to blame.
                    back.extend(work.jobs.into_iter().map(|j| Work { jobs: vec![j], probe: false }));
                    continue;
                }
            }
            back.push(work);
        }
        for mut work in back.into_iter().rev() {
            for j in &mut work.jobs {
                j.retries += 1;
            }
            if work.suspect(self.cfg.poison_crashes) && work.jobs[0].strikes.iter().any(|s| s.clean) {
                self.poison(work);
            } else {
                self.queue.push_front(work);
            }
        }
    }

    /// Answers a request that crashed a fresh worker alone as poison, and forgives the unit its crashes.
    fn poison(&mut self, work: Work) {
        for job in work.jobs {
            let msg = format!(
                "this request crashed {} workers ({}); it is treated as a poison request and not retried",
                job.strikes.len(),
                job.strikes.iter().map(|s| s.label.as_str()).collect::<Vec<_>>().join("; ")
            );
            tracing::error!(model = %self.model, "{msg}");
            for s in &job.strikes {
                if let Some(rec) = self.history.get_mut(&self.units[s.unit].key) {
                    rec.forgive(s.crash);
                }
            }
            self.answer(job, Err(PredictError::Poison(msg)));
        }
    }
}
