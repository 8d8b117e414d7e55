//! Hangs: the deadline of a prediction follows the latency the unit showed on predictions of the same shape class,
//! and a worker seen stopped (SIGSTOP) while it holds work is replaced after a short grace.
//!
//! A shape class is the padded token count (rows × width) rounded up to a power of two. Once a class has
//! [`MIN_SAMPLES`] observations, its deadline is their 99th percentile × `live_timeout_factor`, at least
//! `live_timeout_floor` (1 s): a warm worker of a small model that stops answering is caught within about a second.
//! A class not observed yet falls back to the warm-up latency per token scaled to the batch × `timeout_factor`, at
//! least `timeout_floor` (5 s). A request retried after a watchdog kill gets twice the deadline per such kill, so a
//! deadline that was merely too tight cannot turn an innocent request into a poison one.
//!
//! Past that (soft) deadline a worker is killed only once it has used no CPU for `stall_window` (500 ms): a hang
//! waits (a deadlock, a sleep, a lost wake-up), while a worker slowed down by a busy machine still computes. A worker
//! that spins without end is caught by the hard deadline, the warm-up estimate (at least 5 s), whatever its CPU.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::death::KillReason;
use crate::protocol::WarmupShape;
use crate::supervisor::config::{Isolation, SupervisorConfig};

use super::event::{Effect, Now};
use super::worker::Phase;
use super::Core;

/// Observations per class kept (the most recent).
const WINDOW: usize = 64;
/// Observations a class needs before its own latency sets its deadline.
pub(crate) const MIN_SAMPLES: usize = 8;

/// The class of a `rows` × `width` prediction: ⌈log2(padded tokens)⌉.
pub(crate) fn class_of((rows, width): (usize, usize)) -> u32 {
    let tokens = rows.max(1) * width.max(1);
    usize::BITS - (tokens - 1).leading_zeros()
}

/// Recent prediction latencies of one unit, per shape class.
#[derive(Debug, Default)]
pub(crate) struct LatencyBook {
    classes: BTreeMap<u32, VecDeque<f64>>,
}

impl LatencyBook {
    /// Records one prediction's service time (from when the worker started it to its answer).
    pub fn record(&mut self, shape: (usize, usize), ms: f64) {
        let ring = self.classes.entry(class_of(shape)).or_default();
        if ring.len() == WINDOW {
            ring.pop_front();
        }
        ring.push_back(ms);
    }

    /// The 99th percentile of the class of `shape`, once it has enough observations.
    pub fn high(&self, shape: (usize, usize)) -> Option<f64> {
        let ring = self.classes.get(&class_of(shape)).filter(|r| r.len() >= MIN_SAMPLES)?;
        let mut v: Vec<f64> = ring.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        Some(v[((v.len() - 1) as f64 * 0.99).round() as usize])
    }
}

/// Milliseconds per padded token at warm-up: the worst of the warm-up shapes.
pub(crate) fn ms_per_token(warmup: &[WarmupShape]) -> f64 {
    warmup.iter().map(|s| s.ms / (s.batch.max(1) * s.seq.max(1)) as f64).fold(0.0f64, f64::max)
}

/// When a prediction is late: past `soft` a worker that stopped computing is killed; past `hard`, any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadline {
    pub soft: Duration,
    pub hard: Duration,
}

/// The deadline of a `shape` prediction on a unit with `book`, for a worker that warmed up at `per_token`, after
/// `hangs` watchdog kills of the same request.
pub(crate) fn deadline(
    cfg: &SupervisorConfig,
    book: &LatencyBook,
    per_token: f64,
    shape: (usize, usize),
    hangs: u32,
) -> Deadline {
    let tokens = (shape.0.max(1) * shape.1.max(1)) as f64;
    let cold = Duration::from_secs_f64(per_token * tokens * cfg.timeout_factor / 1e3).max(cfg.timeout_floor);
    let (soft, hard) = match (cfg.predict_timeout, book.high(shape)) {
        (Some(fixed), _) => (fixed, fixed),
        (None, Some(p99)) => {
            let live = Duration::from_secs_f64(p99 * cfg.live_timeout_factor / 1e3).max(cfg.live_timeout_floor);
            (live, live.max(cold))
        }
        (None, None) => (cold, cold),
    };
    let scale = 1u32 << hangs.min(4);
    Deadline { soft: soft.saturating_mul(scale), hard: hard.saturating_mul(scale) }
}

impl Core {
    /// Kills workers that hang: not ready within the load timeout, stopped while holding work, past the deadline of
    /// the prediction they run, or not gone after `Shutdown`.
    pub(super) fn watchdog(&mut self, now: Now) {
        let mut kills: Vec<(usize, KillReason)> = vec![];
        let waiting = !self.queue.is_empty();
        for (i, w) in self.workers.iter().enumerate() {
            match &w.phase {
                Phase::Starting { .. } if now.at - w.spawned > self.cfg.load_timeout => {
                    let why = format!("watchdog: not ready after {} s (load hang)", self.cfg.load_timeout.as_secs());
                    kills.push((i, KillReason::LoadTimeout(why)));
                }
                Phase::Stopping(s) if s.deadline.is_some_and(|d| now.at > d) => kills.push((i, KillReason::DidNotStop)),
                _ => {
                    let Some(live) = w.live() else { continue };
                    if let Some(since) = live.stopped_since.filter(|_| !live.inflight.is_empty() || waiting) {
                        if now.at - since >= self.cfg.stopped_grace {
                            let why = format!(
                                "the worker was stopped (SIGSTOP from outside) for {} ms while requests waited",
                                (now.at - since).as_millis()
                            );
                            kills.push((i, KillReason::Stopped(why)));
                            continue;
                        }
                    }
                    let Some(head) = live.inflight.front() else { continue };
                    let shape = head.work.shape();
                    let book = &self.units[w.unit].latency;
                    let limit = deadline(&self.cfg, book, live.ms_per_token, shape, head.work.hangs());
                    let late = now.at - live.head_since.max(head.sent);
                    // No CPU sample yet counts as idle: the soft deadline then applies as it is.
                    let idle = live.cpu.is_none_or(|(_, grew)| now.at - grew >= self.cfg.stall_window);
                    if late > limit.hard || (late > limit.soft && idle) {
                        let what = if late > limit.hard { "running" } else { "using no CPU" };
                        let why = format!(
                            "watchdog: a prediction of {}x{} tokens exceeded its {:.1} s deadline, {what} (hang)",
                            shape.0,
                            shape.1,
                            limit.soft.as_secs_f64()
                        );
                        kills.push((i, KillReason::Watchdog(why)));
                    }
                }
            }
        }
        for (i, reason) in kills {
            let w = &mut self.workers[i];
            let unit = self.units[w.unit].unit;
            if self.cfg.isolation == Isolation::None {
                // A thread cannot be killed: report and keep waiting.
                tracing::error!(%unit, "{reason} (in-process worker: cannot be killed; use --isolation process)");
                if let Some(live) = w.live_mut() {
                    live.head_since = now.at;
                    live.stopped_since = None;
                }
                continue;
            }
            tracing::error!(%unit, "{reason}; killing the worker");
            self.effects.push(Effect::Kill { worker: w.id, reason: reason.clone() });
            let planned = matches!(&w.phase, Phase::Stopping(s) if s.planned);
            w.stop(planned, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_powers_of_two_of_padded_tokens() {
        for (shape, class) in [((1, 1), 0), ((1, 2), 1), ((1, 16), 4), ((1, 17), 5), ((32, 16), 9), ((0, 0), 0)] {
            assert_eq!(class_of(shape), class, "{shape:?}");
        }
    }

    #[test]
    fn deadlines_follow_live_latency_with_a_floor() {
        let cfg = SupervisorConfig::default();
        let warm = [WarmupShape { batch: 1, seq: 10, ms: 4.0 }, WarmupShape { batch: 32, seq: 16, ms: 60.0 }];
        let per_token = ms_per_token(&warm);
        assert!((per_token - 0.4).abs() < 1e-9);
        let mut book = LatencyBook::default();
        // (observations of the 1x16 class, shape asked, hangs) -> deadline
        type Row = (&'static [f64], (usize, usize), u32, Duration);
        let table: [Row; 6] = [
            // Not observed: warm-up estimate x 20, at least 5 s.
            (&[], (1, 16), 0, Duration::from_secs(5)),
            (&[], (64, 256), 0, Duration::from_secs_f64(0.4 * 64.0 * 256.0 * 20.0 / 1e3)),
            // Observed: p99 x 10, at least 1 s.
            (&[5.0; 8], (1, 16), 0, Duration::from_secs(1)),
            (&[5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 300.0], (1, 16), 0, Duration::from_secs(3)),
            // Another class is not covered by this one's observations.
            (&[], (1, 64), 0, Duration::from_secs(5)),
            // A request already killed once by the watchdog gets twice the time.
            (&[], (1, 16), 1, Duration::from_secs(6)),
        ];
        for (observed, shape, hangs, want) in table {
            for &ms in observed {
                book.record((1, 16), ms);
            }
            let got = deadline(&cfg, &book, per_token, shape, hangs).soft;
            assert!(
                (got.as_secs_f64() - want.as_secs_f64()).abs() < 1e-6,
                "{observed:?} {shape:?}: {got:?} vs {want:?}"
            );
        }
        // The hard deadline of an observed class is the warm-up estimate (at least 5 s), doubled for a retried hang.
        assert_eq!(deadline(&cfg, &book, per_token, (1, 16), 1).hard, Duration::from_secs(10));
        let fixed = SupervisorConfig { predict_timeout: Some(Duration::from_secs(3)), ..cfg };
        let d = deadline(&fixed, &book, per_token, (64, 256), 0);
        assert_eq!((d.soft, d.hard), (Duration::from_secs(3), Duration::from_secs(3)));
    }
}
