//! Which unit serves: the chain walk, quarantine and re-probe, and the floor.
//!
//! The first *eligible* unit of the chain (neither unavailable nor quarantined) keeps `workers` warm workers. A
//! quarantine takes a unit out only while another unit of the chain is eligible: the last unit that can serve is
//! the **floor** and is never quarantined; it restarts with capped backoff for as long as it takes. If every
//! remaining unit is quarantined (a persisted history, or fallbacks that turned out unavailable), the last one is
//! put back as the floor, loudly.

use std::time::Duration;

use super::death::KillReason;
use super::job::{PredictError, StartError};
use super::record::fmt_utc;

use super::event::{Effect, Now, WorkerId};
use super::unit::UnitPhase;
use super::worker::{Drain, Phase, Worker};
use super::Core;

impl Core {
    /// Marks the quarantines the persisted history still holds (at start-up).
    pub(super) fn restore_quarantines(&mut self, now: Now) {
        for slot in &mut self.units {
            let Some(rec) = self.history.get(&slot.key) else { continue };
            let Some(until) = rec.quarantined_until.filter(|&t| t > now.unix) else { continue };
            let left = Duration::from_secs_f64(until - now.unix);
            let reason = format!(
                "quarantined by the crash history ({} crashes, last: {}) until {}; clear it with \
                 `bulkhead units --clear-history`",
                rec.total_crashes,
                rec.crashes.last().map(|c| c.exit.as_str()).unwrap_or("?"),
                fmt_utc(until)
            );
            tracing::warn!(unit = %slot.unit, model = %self.model, "{reason}");
            slot.phase = UnitPhase::Quarantined { reprobe_at: now.at + left, until_unix: until, reason };
        }
    }

    /// The unit that should serve: the first eligible one.
    pub(super) fn desired(&self) -> Option<usize> {
        self.units.iter().position(|u| u.eligible())
    }

    /// The floor: the last unit that can serve, when it is the only eligible one.
    pub(super) fn floor(&self) -> Option<usize> {
        let mut eligible = self.units.iter().enumerate().filter(|(_, u)| u.eligible());
        match (eligible.next(), eligible.next()) {
            (Some((i, _)), None) => Some(i),
            _ => None,
        }
    }

    /// Whether unit `idx` may be quarantined: another unit of the chain can still serve.
    pub(super) fn can_quarantine(&self, idx: usize) -> bool {
        self.units.iter().enumerate().any(|(i, u)| i != idx && u.eligible())
    }

    /// `Some(reasons)` when no unit can ever serve (all unavailable) and no worker is starting.
    pub(super) fn dead_end(&self) -> Option<String> {
        if self.units.iter().any(|u| !matches!(u.phase, UnitPhase::Unavailable { .. }))
            || self.workers.iter().any(|w| !matches!(w.phase, Phase::Stopping(_)))
        {
            return None;
        }
        Some(self.reasons())
    }

    fn reasons(&self) -> String {
        self.units.iter().map(|u| format!("{}: {}", u.unit, u.reason())).collect::<Vec<_>>().join("; ")
    }

    /// Why the model cannot start: every unit unavailable, or the floor crashed `quarantine_crashes` times while
    /// loading without ever getting ready (it keeps being retried, but a caller waiting for readiness is told).
    pub(super) fn start_error(&self) -> Option<StartError> {
        if let Some(reasons) = self.dead_end() {
            return Some(StartError { model: self.model.clone(), reasons });
        }
        let floor = &self.units[self.floor()?];
        let cannot_start = !floor.served_ever && floor.load_crashes >= self.cfg.quarantine_crashes.max(1);
        cannot_start.then(|| StartError { model: self.model.clone(), reasons: self.reasons() })
    }

    /// Takes unit `idx` out of the chain until its re-probe (persisted), and stops its workers.
    pub(super) fn quarantine(&mut self, now: Now, idx: usize, level: f64, last: &str) {
        let slot = &mut self.units[idx];
        let rec = self.history.entry(&slot.key, &self.model);
        rec.quarantines += 1;
        let delay =
            self.cfg.reprobe_after.saturating_mul(1u32 << (rec.quarantines - 1).min(16)).min(self.cfg.reprobe_max);
        let until = now.unix + delay.as_secs_f64();
        rec.quarantined_until = Some(until);
        let reason = format!(
            "quarantined after {:.0} crashes in the window (last: {last}); re-probed at {} (in {} s)",
            level.round(),
            fmt_utc(until),
            delay.as_secs()
        );
        tracing::error!(unit = %slot.unit, model = %self.model, "{reason}");
        slot.phase = UnitPhase::Quarantined { reprobe_at: now.at + delay, until_unix: until, reason };
        self.effects.push(Effect::SaveHistory);
        for w in self.workers.iter_mut().filter(|w| w.unit == idx) {
            if !matches!(w.phase, Phase::Stopping(_)) {
                self.effects.push(Effect::Kill { worker: w.id, reason: KillReason::Quarantine });
                w.stop(true, None);
            }
        }
    }

    /// Brings every quarantine that reached its re-probe time back, and puts the floor back when no unit is left.
    fn reprobe(&mut self, now: Now) {
        for slot in &mut self.units {
            if matches!(slot.phase, UnitPhase::Quarantined { reprobe_at, .. } if reprobe_at <= now.at) {
                tracing::info!(unit = %slot.unit, model = %self.model, "re-probing the quarantined unit");
                slot.phase = UnitPhase::Standby;
            }
        }
        if self.desired().is_none() {
            if let Some(last) = self.units.iter().rposition(|u| u.quarantined()) {
                let slot = &mut self.units[last];
                let note = format!(
                    "every unit of the chain is quarantined or unavailable: serving on the floor {} anyway ({})",
                    slot.unit,
                    slot.reason()
                );
                tracing::warn!(model = %self.model, "{note}");
                slot.stats.note = Some(note);
                slot.phase = UnitPhase::Standby;
            }
        }
    }

    /// The chain walk after every event: the desired unit keeps its warm workers; later units drain once it serves.
    pub(super) fn reconcile(&mut self, now: Now) {
        self.reprobe(now);
        let Some(idx) = self.desired() else {
            self.fail_everything_if_dead_end();
            return;
        };
        let want = self.cfg.workers.max(1);
        let warm = self.workers.iter().filter(|w| w.unit == idx && w.counts_as_warm()).count();
        let blocked =
            self.workers.iter().any(|w| w.unit == idx && matches!(w.phase, Phase::Draining(_, Drain::ThenReplace)));
        let may_start = match self.units[idx].phase {
            UnitPhase::Active { next_start } => next_start <= now.at,
            _ => true,
        };
        if warm < want && !blocked && may_start {
            self.units[idx].phase = UnitPhase::Active { next_start: now.at };
            for _ in warm..want {
                self.start_worker(now, idx);
            }
        }
        // Serving workers of later units drain once a preferred unit serves (a re-probed unit took over).
        if let Some(best) = self.workers.iter().filter(|w| w.accepts()).map(|w| w.unit).min() {
            for w in self.workers.iter_mut().filter(|w| w.unit > best && w.accepts()) {
                tracing::info!(unit = %self.units[w.unit].unit, "a preferred unit serves again; draining this one");
                if let Phase::Serving(live) | Phase::Retiring(live, _) =
                    std::mem::replace(&mut w.phase, Phase::Starting { loaded_at: None, failed: None })
                {
                    w.phase = Phase::Draining(live, Drain::Preferred);
                }
            }
            for (i, slot) in self.units.iter_mut().enumerate() {
                let idle = !self.workers.iter().any(|w| w.unit == i);
                if i > best && idle && matches!(slot.phase, UnitPhase::Active { .. }) {
                    slot.phase = UnitPhase::Standby;
                }
            }
        }
        if let Some(err) = self.start_error() {
            self.fail_waiters(err);
        }
    }

    fn fail_waiters(&mut self, err: StartError) {
        for waiter in self.waiters.drain(..) {
            self.effects.push(Effect::Ready { waiter, result: Err(err.clone()) });
        }
    }

    fn fail_everything_if_dead_end(&mut self) {
        let Some(reason) = self.dead_end() else { return };
        let msg = format!("no unit of the chain can serve {}: {reason}", self.model);
        while let Some(w) = self.queue.pop_front() {
            for j in w.jobs {
                if !w.probe {
                    self.answer(j, Err(PredictError::Unavailable(msg.clone())));
                }
            }
        }
        self.fail_waiters(StartError { model: self.model.clone(), reasons: reason });
    }

    /// Starts a worker on unit `idx` (the actor reports `Spawned` or `SpawnFailed`).
    fn start_worker(&mut self, now: Now, idx: usize) {
        let id = WorkerId(self.next_worker);
        self.next_worker += 1;
        let slot = &mut self.units[idx];
        let generation = slot.generation;
        slot.generation += 1;
        tracing::info!(unit = %slot.unit, generation, model = %self.model, "loading {} on {}", self.model, slot.unit);
        let (unit, threads, quick) = (slot.unit, self.cfg.worker_threads, slot.served_ever);
        self.effects.push(Effect::Spawn { worker: id, unit, generation, threads, quick });
        self.workers.push(Worker {
            id,
            unit: idx,
            generation,
            pid: None,
            spawned: now.at,
            rss: 0,
            phase: Phase::Starting { loaded_at: None, failed: None },
        });
    }
}
