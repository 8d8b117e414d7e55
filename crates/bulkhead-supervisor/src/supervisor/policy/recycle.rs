//! Recycling: a worker that served `recycle_after` predictions, or whose memory passed `recycle_rss_bytes` or grew
//! `recycle_growth_bytes` since warm-up, is replaced. The replacement starts and warms up while the old worker keeps
//! serving (`Retiring`); then the old one drains. When `MemAvailable` would not fit a second copy, the old worker
//! drains first. A leak keeps growing while the replacement warms, so past 1.5x the limit the old worker takes no
//! more work (bounded peak).
//!
//! With a memory ceiling per worker (`--worker-memory-mb`), a worker is recycled once it has used half the headroom
//! the ceiling left it after warm-up (or at the configured limit, when lower), and a worker whose replacement is
//! warming up takes no more work past three quarters of that headroom: a leak is replaced before the ceiling ends
//! it, and a worker that starts close to the ceiling is not recycled after every answer.
//!
//! An OOM kill is pressure on the machine, not a broken unit: it does not count toward a quarantine; instead the
//! unit's recycle limit drops to halfway between its workers' memory after warm-up and the memory the killed worker
//! had, so the next worker is recycled before it gets there.

use super::worker::{Drain, Phase};
use super::Core;
use crate::supervisor::config::Isolation;

impl Core {
    /// The resident-memory limit of unit `idx`: the lowest of the configured one, the ceiling's (see
    /// [`Core::ceiling_line`]) and the one an OOM kill taught.
    pub(super) fn rss_limit(&self, idx: usize) -> Option<u64> {
        let ceiling = self.ceiling_line(idx, 2);
        [self.cfg.recycle_rss_bytes, ceiling, self.units[idx].oom_rss_limit].into_iter().flatten().min()
    }

    /// A line below the memory ceiling for unit `idx`, in resident memory: its memory after warm-up plus the
    /// headroom the ceiling leaves above it, times `(parts - 1) / parts` (2: half of it, the recycle limit; 4: three
    /// quarters, the pause line). An `RLIMIT_DATA` ceiling also counts memory reserved and not resident: that part
    /// is taken off the ceiling first.
    fn ceiling_line(&self, idx: usize, parts: u64) -> Option<u64> {
        let ceiling = self.cfg.worker_memory.as_ref()?.limit_bytes.saturating_sub(self.units[idx].unresident_data);
        let ready = self.units[idx].stats.rss_ready.min(ceiling);
        Some(ready + (ceiling - ready) / parts * (parts - 1))
    }

    /// After an answer from worker `pos`: recycle it if it reached a limit.
    pub(super) fn check_recycle(&mut self, pos: usize) {
        let limit = self.rss_limit(self.workers[pos].unit);
        let pause_line = self.ceiling_line(self.workers[pos].unit, 4);
        let w = &mut self.workers[pos];
        let rss = w.rss;
        let over = |live_ready: u64, factor: f64| {
            let f = |b: u64| (b as f64 * factor) as u64;
            limit.is_some_and(|b| rss > f(b))
                || pause_line.is_some_and(|b| rss > b)
                || self.cfg.recycle_growth_bytes.is_some_and(|b| rss.saturating_sub(live_ready) > f(b))
        };
        match &w.phase {
            Phase::Retiring(live, _) if over(live.rss_ready, 1.5) => {
                tracing::warn!(
                    unit = %self.units[w.unit].unit,
                    "memory past 1.5x the recycle limit (or near the ceiling) while the replacement warms up; \
                     pausing this worker"
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
                "a worker ran out of memory without having grown ({} MiB): the machine (or its ceiling) is short of \
                 memory",
                rss >> 20
            );
            return;
        }
        let limit = ready + (rss - ready) / 2;
        let limit = slot.oom_rss_limit.map_or(limit, |old| old.min(limit));
        tracing::warn!(
            unit = %slot.unit,
            "a worker ran out of memory at {} MiB: its workers are recycled above {} MiB from now on",
            rss >> 20,
            limit >> 20
        );
        slot.oom_rss_limit = Some(limit);
    }
}
