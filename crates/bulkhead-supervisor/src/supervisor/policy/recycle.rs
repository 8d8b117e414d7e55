//! Recycling: a worker that served `recycle_after` predictions, or whose memory passed `recycle_rss_bytes` or grew
//! `recycle_growth_bytes` since warm-up, is replaced. The replacement starts and warms up while the old worker keeps
//! serving (`Retiring`); then the old one drains. When `MemAvailable` would not fit a second copy, the old worker
//! drains first. A leak keeps growing while the replacement warms, so past 1.5x the limit the old worker takes no
//! more work (bounded peak).
//!
//! An OOM kill is pressure on the machine, not a broken unit: it does not count toward a quarantine; instead the
//! unit's recycle limit drops to halfway between its workers' memory after warm-up and the memory the killed worker
//! had, so the next worker is recycled before it gets there.

use super::worker::{Drain, Phase};
use super::Core;
use crate::supervisor::config::Isolation;

impl Core {
    /// The resident-memory limit of unit `idx`: the configured one, or the lower one an OOM kill taught.
    pub(super) fn rss_limit(&self, idx: usize) -> Option<u64> {
        match (self.cfg.recycle_rss_bytes, self.units[idx].oom_rss_limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// After an answer from worker `pos`: recycle it if it reached a limit.
    pub(super) fn check_recycle(&mut self, pos: usize) {
        let limit = self.rss_limit(self.workers[pos].unit);
        let w = &mut self.workers[pos];
        let rss = w.rss;
        let over = |live_ready: u64, factor: f64| {
            let f = |b: u64| (b as f64 * factor) as u64;
            limit.is_some_and(|b| rss > f(b))
                || self.cfg.recycle_growth_bytes.is_some_and(|b| rss.saturating_sub(live_ready) > f(b))
        };
        match &w.phase {
            Phase::Retiring(live, _) if over(live.rss_ready, 1.5) => {
                tracing::warn!(
                    unit = %self.units[w.unit].unit,
                    "memory past 1.5x the recycle limit while the replacement warms up; pausing this worker"
                );
                if let Phase::Retiring(live, _) =
                    std::mem::replace(&mut w.phase, Phase::Starting { loaded_at: None, failed: None })
                {
                    w.phase = Phase::Draining(live, Drain::Paused);
                }
                return;
            }
            Phase::Serving(_) => {}
            _ => return,
        }
        let Phase::Serving(live) = &w.phase else { return };
        let why = if self.cfg.recycle_after.is_some_and(|n| live.served >= n) {
            format!("served {} predictions", live.served)
        } else if limit.is_some_and(|b| rss > b) {
            format!("resident memory {} MiB over the limit of {} MiB", rss >> 20, limit.unwrap_or(0) >> 20)
        } else if self.cfg.recycle_growth_bytes.is_some_and(|b| rss.saturating_sub(live.rss_ready) > b) {
            format!("resident memory grew {} MiB since warm-up", rss.saturating_sub(live.rss_ready) >> 20)
        } else {
            return;
        };
        // Two copies must fit: the replacement needs about what the old one had after warm-up.
        let fits = self.mem_available.is_none_or(|avail| avail > live.rss_ready.max(rss / 2) * 3 / 2);
        let drain_first = !fits || self.cfg.isolation == Isolation::None;
        self.retire(pos, why, drain_first);
    }

    /// Replaces worker `pos`: it serves until its replacement is ready (or drains first).
    pub(super) fn retire(&mut self, pos: usize, why: String, drain_first: bool) {
        let w = &mut self.workers[pos];
        let unit = self.units[w.unit].unit;
        let note = if drain_first { "; draining first: two copies would not fit in memory" } else { "" };
        tracing::info!(%unit, "recycling the worker ({why}){note}");
        let Phase::Serving(live) = std::mem::replace(&mut w.phase, Phase::Starting { loaded_at: None, failed: None })
        else {
            unreachable!("only a serving worker is retired")
        };
        w.phase = if drain_first { Phase::Draining(live, Drain::ThenReplace) } else { Phase::Retiring(live, why) };
        self.units[w.unit].stats.recycles += 1;
    }

    /// Lowers unit `idx`'s recycle limit after one of its workers was OOM-killed at `rss` bytes.
    pub(super) fn shrink_after_oom(&mut self, idx: usize, rss: u64) {
        let slot = &mut self.units[idx];
        let ready = slot.stats.rss_ready;
        if rss <= ready + ready / 10 {
            tracing::warn!(
                unit = %slot.unit,
                "the kernel's OOM killer ended a worker that had not grown ({} MiB): the machine is short of memory",
                rss >> 20
            );
            return;
        }
        let limit = ready + (rss - ready) / 2;
        let limit = slot.oom_rss_limit.map_or(limit, |old| old.min(limit));
        tracing::warn!(
            unit = %slot.unit,
            "the kernel's OOM killer ended a worker at {} MiB: its workers are recycled above {} MiB from now on",
            rss >> 20,
            limit >> 20
        );
        slot.oom_rss_limit = Some(limit);
    }
}
