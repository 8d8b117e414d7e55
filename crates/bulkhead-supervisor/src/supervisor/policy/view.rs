//! The `/units` view built from the core's state (the actor publishes it; readers never wait on the core).

use super::death::WorkerExit;
use crate::supervisor::config::Isolation;
use crate::supervisor::view::{CeilingView, ModelUnits, UnitState, UnitView};

use super::event::Now;
use super::unit::UnitPhase;
use super::watchdog::deadline;
use super::worker::Phase;
use super::Core;

impl Core {
    /// The displayed state of unit `idx`.
    fn unit_state(&self, now: Now, idx: usize) -> UnitState {
        let slot = &self.units[idx];
        match slot.phase {
            UnitPhase::Unavailable { .. } => return UnitState::Unavailable,
            UnitPhase::Quarantined { .. } => return UnitState::Quarantined,
            _ => {}
        }
        let mine = || self.workers.iter().filter(|w| w.unit == idx);
        if mine().any(|w| w.live().is_some()) {
            UnitState::Serving
        } else if mine().any(|w| matches!(w.phase, Phase::Starting { loaded_at: Some(_), .. })) {
            UnitState::Warming
        } else if mine().any(|w| matches!(w.phase, Phase::Starting { .. })) {
            UnitState::Loading
        } else if matches!(slot.phase, UnitPhase::Active { next_start } if next_start > now.at) {
            UnitState::Crashed
        } else {
            UnitState::Standby
        }
    }

    /// The whole view.
    pub fn view(&self, now: Now, isolation: Isolation) -> ModelUnits {
        let floor = self.floor();
        let units = self
            .units
            .iter()
            .enumerate()
            .map(|(idx, u)| {
                let rec = self.history.get(&u.key);
                let state = self.unit_state(now, idx);
                let mine: Vec<_> = self.workers.iter().filter(|w| w.unit == idx).collect();
                let on_floor = floor == Some(idx) && rec.is_some_and(|r| r.is_quarantined(now.unix));
                let reason = match &u.phase {
                    UnitPhase::Quarantined { reason, .. } | UnitPhase::Unavailable { reason } => Some(reason.clone()),
                    _ if on_floor => Some(
                        "quarantined by the crash history, but every other unit is quarantined or unavailable: \
                         serving on the floor anyway"
                            .to_string(),
                    ),
                    _ => u.stats.note.clone(),
                };
                let per_token = mine.iter().find_map(|w| w.live()).map(|l| l.ms_per_token);
                UnitView {
                    unit: u.unit.to_string(),
                    state,
                    reason,
                    floor: floor == Some(idx) && self.units.len() > 1,
                    runtime: u.runtime.clone(),
                    crashes: rec.map_or(0, |r| r.total_crashes),
                    crashes_by_exit: u.stats.deaths_by_exit.clone(),
                    crashes_by_cause: u.stats.deaths_by_cause.clone(),
                    crash_level: rec
                        .map_or(0.0, |r| (r.bucket(now.unix, self.cfg.forgive_every) * 100.0).round() / 100.0),
                    last_exit: u.stats.last_exit.as_ref().map(WorkerExit::summary),
                    stderr_tail: u.stats.last_exit.as_ref().map(|e| e.stderr_tail.clone()).filter(|t| !t.is_empty()),
                    predictions: u.stats.predictions,
                    resident_bytes: mine.iter().map(|w| w.rss).max().unwrap_or(0),
                    resident_after_warmup_bytes: u.stats.rss_ready,
                    recycles: u.stats.recycles,
                    restarts: u.stats.restarts,
                    generations: u.generation,
                    pid: mine.iter().find(|w| w.accepts()).or(mine.first()).and_then(|w| w.pid),
                    workers: mine.iter().map(|w| w.view()).collect(),
                    quarantined_until: match u.phase {
                        UnitPhase::Quarantined { until_unix, .. } => Some(until_unix),
                        _ => None,
                    },
                    load_ms: u.stats.load_ms,
                    warmup_ms: u.stats.warmup_ms,
                    warmup: u.stats.warmup.clone(),
                    precision: u.stats.report.as_ref().map(|r| r.precision),
                    placement: u.stats.report.as_ref().map(|r| r.placement.clone()).unwrap_or_default(),
                    deadline_ms: per_token
                        .map(|p| deadline(&self.cfg, &u.latency, p, (1, 16), 0).soft.as_secs_f64() * 1e3),
                    recycle_rss_limit_bytes: self.rss_limit(idx),
                }
            })
            .collect();
        let serving =
            self.workers.iter().filter(|w| w.accepts()).map(|w| w.unit).min().map(|i| self.units[i].unit.to_string());
        ModelUnits {
            model: self.model.clone(),
            chain: self.units.iter().map(|u| u.unit.to_string()).collect(),
            serving,
            isolation,
            workers: self.cfg.workers.max(1),
            queued: self.queued(),
            units,
            inputs: self.signature.inputs.clone(),
            outputs: self.signature.outputs.clone(),
            memory_ceiling: self.cfg.worker_memory.as_ref().map(CeilingView::from),
        }
    }

    /// Refreshes the per-request counters of a published view (predictions, memory, recycles, queue).
    pub fn counters(&self, view: &mut ModelUnits) {
        if view.units.len() != self.units.len() {
            return;
        }
        for (v, u) in view.units.iter_mut().zip(&self.units) {
            v.predictions = u.stats.predictions;
            v.recycles = u.stats.recycles;
        }
        view.queued = self.queued();
    }
}
