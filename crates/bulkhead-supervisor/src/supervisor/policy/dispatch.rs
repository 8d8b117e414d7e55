//! Work in and answers out: dispatch to the least loaded worker of the best serving unit (clean rooms first), the
//! worker messages (loaded, ready, answered, failed), health probes, queue deadlines, and the tick.

use bulkhead_embed::StageTiming;

use super::job::{Answered, PredictError};
use crate::payload::Answer;
use crate::protocol::{Response, RunError};

use super::event::{Effect, Now, Publish, Sample, WorkerId};
use super::watchdog::ms_per_token;
use super::work::{InFlight, Pending, Work};
use super::worker::{Drain, Live, Phase, Stopping};
use super::Core;
use crate::supervisor::config::SHORT_LANE_WINDOW;

/// A job's stage timing: the worker's `infer`/`post`, and everything else since it was queued as `queue`.
fn job_timing(job: &Pending, now: Now, worker: &StageTiming) -> StageTiming {
    let total_ms = (now.at - job.enqueued).as_secs_f64() * 1e3;
    StageTiming {
        tokenize_ms: 0.0,
        queue_ms: (total_ms - worker.infer_ms - worker.post_ms).max(0.0),
        infer_ms: worker.infer_ms,
        post_ms: worker.post_ms,
    }
}

impl Core {
    /// Sends queued work to workers: each request that waits for a clean room to a fresh worker, then the rest in
    /// order to the least loaded worker of the best serving unit. While short predictions arrive, long ones keep one
    /// worker free of long work (the short lane, [`SupervisorConfig::long_row_tokens`]) and short ones pass the long
    /// ones waiting for that.
    ///
    /// [`SupervisorConfig::long_row_tokens`]: crate::SupervisorConfig::long_row_tokens
    pub(super) fn dispatch(&mut self, now: Now) {
        let Some(best) = self.workers.iter().filter(|w| w.accepts()).map(|w| w.unit).min() else { return };
        let max_inflight = self.cfg.max_inflight.max(1);
        // Under a memory ceiling a worker being replaced (for its memory) takes one prediction at a time, so that
        // its memory is checked after each before it takes the next.
        let retiring_inflight = if self.cfg.worker_memory.is_some() { 1 } else { max_inflight };
        let limit = self.cfg.long_row_tokens;
        let lane = self.short_lane(now, best);
        let mut i = 0;
        let mut need_clean_room = false;
        while i < self.queue.len() {
            let suspect = self.queue[i].suspect(self.cfg.poison_crashes);
            let long = self.queue[i].long(limit);
            // Serving workers of the best unit that hold no long prediction: a long one may not take the last.
            let free_of_long = self
                .workers
                .iter()
                .filter(|w| w.unit == best && w.accepts())
                .filter_map(|w| w.live())
                .filter(|l| !l.inflight.iter().any(|f| f.long))
                .count();
            let pick = self
                .workers
                .iter()
                .enumerate()
                .filter(|(_, w)| w.unit == best && w.accepts())
                .filter_map(|(p, w)| Some((p, w.live()?, matches!(w.phase, Phase::Retiring(..)))))
                .filter(|(_, l, retiring)| match (suspect, retiring) {
                    (true, _) => l.fresh(),
                    (false, true) => l.inflight.len() < retiring_inflight,
                    (false, false) => l.inflight.len() < max_inflight,
                })
                .filter(|(_, l, _)| !(lane && long && free_of_long <= 1 && !l.inflight.iter().any(|f| f.long)))
                .min_by_key(|(_, l, retiring)| {
                    let behind_long = !long && l.inflight.iter().any(|f| f.long);
                    (*retiring, l.stopped_since.is_some(), behind_long, l.inflight.len())
                })
                .map(|(p, _, _)| p);
            match pick {
                Some(pos) => {
                    let work = self.queue.remove(i).expect("index is in range");
                    self.send(now, pos, work, long);
                }
                None if suspect => {
                    need_clean_room = true;
                    i += 1;
                }
                // It waits for a worker that runs long work; short work behind it goes on.
                None if lane && long => i += 1,
                None => break,
            }
        }
        if need_clean_room {
            self.ensure_clean_room(now, best);
        }
    }

    /// Whether long predictions keep a worker of `unit` free for short ones now: short work arrived within
    /// [`SHORT_LANE_WINDOW`] and the unit has two warm workers or more.
    fn short_lane(&self, now: Now, unit: usize) -> bool {
        let recent = self.last_short.is_some_and(|t| now.at.saturating_duration_since(t) < SHORT_LANE_WINDOW);
        recent && self.workers.iter().filter(|w| w.unit == unit && w.accepts() && w.live().is_some()).count() >= 2
    }

    /// A request that crashed workers waits for a fresh worker: when none of the serving unit is fresh or starting,
    /// one serving worker is replaced.
    fn ensure_clean_room(&mut self, now: Now, unit: usize) {
        let warm = self.workers.iter().filter(|w| w.unit == unit && w.counts_as_warm()).count();
        let restart_pending = warm < self.cfg.workers.max(1);
        let coming = restart_pending
            || self.workers.iter().any(|w| {
                w.unit == unit && (matches!(w.phase, Phase::Starting { .. }) || w.live().is_some_and(Live::fresh))
            });
        if coming {
            return;
        }
        if let Some(pos) = self.workers.iter().position(|w| w.unit == unit && matches!(w.phase, Phase::Serving(_))) {
            let why = "a fresh worker for a request that crashed workers: it runs there alone first".to_string();
            self.retire(pos, why, false);
            self.reconcile(now);
        }
    }

    fn send(&mut self, now: Now, pos: usize, work: Work, long: bool) {
        let run = self.next_run;
        self.next_run += 1;
        let w = &mut self.workers[pos];
        let id = w.id;
        let Some(live) = w.live_mut() else { return };
        let first = live.fresh();
        if live.inflight.is_empty() {
            live.head_since = now.at;
        }
        self.effects.push(Effect::Send { worker: id, request: work.request(run, long) });
        live.inflight.push_back(InFlight { run, work, sent: now.at, first, long });
    }

    pub(super) fn on_message(&mut self, now: Now, id: WorkerId, msg: Response) {
        let Some(pos) = self.workers.iter().position(|w| w.id == id) else { return };
        match msg {
            Response::Hello { .. } => {}
            Response::Loaded { report } => {
                let w = &mut self.workers[pos];
                if let Phase::Starting { loaded_at, .. } = &mut w.phase {
                    *loaded_at = Some(now.at);
                }
                let stats = &mut self.units[w.unit].stats;
                stats.load_ms = Some((now.at - w.spawned).as_secs_f64() * 1e3);
                stats.report = Some(report);
            }
            Response::Ready { report, warmup, rss_bytes, signature } => {
                self.on_ready(now, pos, report, warmup, rss_bytes, signature)
            }
            Response::LoadFailed { kind, reason } => {
                if let Phase::Starting { failed, .. } = &mut self.workers[pos].phase {
                    *failed = Some((kind, reason));
                }
            }
            Response::Answered { id, answer, timing, rss_bytes } => {
                let Some((f, unit)) = self.take_answered(now, pos, id, rss_bytes, true) else { return };
                let precision = self.units[self.workers[pos].unit].stats.report.as_ref().map(|r| r.precision);
                let pid = self.workers[pos].pid;
                self.scatter(now, f, (unit, precision, pid), answer, &timing);
                self.check_recycle(pos);
            }
            Response::Failed { id, error } => {
                let Some((f, unit)) = self.take_answered(now, pos, id, 0, false) else { return };
                for job in f.work.jobs {
                    let err = match &error {
                        RunError::Unsupported(m) => PredictError::Unsupported(format!("{unit}: {m}")),
                        RunError::Engine(m) => PredictError::Failed(format!("{unit}: {m}")),
                        RunError::Invalid(m) => PredictError::Invalid(m.clone()),
                    };
                    if !f.work.probe {
                        self.answer(job, Err(err));
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_ready(
        &mut self,
        now: Now,
        pos: usize,
        report: bulkhead_core::SessionReport,
        warmup: Vec<crate::protocol::WarmupShape>,
        rss_bytes: u64,
        signature: crate::protocol::Signature,
    ) {
        let w = &mut self.workers[pos];
        let Phase::Starting { loaded_at, .. } = w.phase else { return };
        let rss = if rss_bytes > 0 { rss_bytes } else { w.rss };
        w.rss = rss;
        w.phase = Phase::Serving(Live::new(now.at, rss, ms_per_token(&warmup)));
        let idx = w.unit;
        let slot = &mut self.units[idx];
        slot.served_ever = true;
        slot.load_crashes = 0;
        slot.stats.report = Some(report);
        slot.stats.warmup = warmup;
        slot.stats.warmup_ms = loaded_at.map(|t| (now.at - t).as_secs_f64() * 1e3);
        slot.stats.rss_ready = rss;
        slot.stats.note = None;
        tracing::info!(
            unit = %slot.unit, model = %self.model,
            "serving on {} (warm-up {:.0} ms, resident {:.0} MiB)",
            slot.unit, slot.stats.warmup_ms.unwrap_or(0.0), rss as f64 / 1048576.0
        );
        if !signature.inputs.is_empty() || !signature.outputs.is_empty() {
            self.signature = signature;
        }
        // A replacement is ready: one worker it replaces drains now.
        if let Some(old) = self.workers.iter_mut().find(|o| o.unit == idx && matches!(o.phase, Phase::Retiring(..))) {
            if let Phase::Retiring(live, _) =
                std::mem::replace(&mut old.phase, Phase::Starting { loaded_at: None, failed: None })
            {
                old.phase = Phase::Draining(live, Drain::Replaced);
            }
        }
        self.health.ready = true;
        self.health.last_ok = Some(now.at);
        let unit = self.units[idx].unit;
        // Whoever waited for readiness reads `/units` next: publish the serving state before waking them.
        self.effects.push(Effect::Publish(Publish::Full));
        for waiter in self.waiters.drain(..) {
            self.effects.push(Effect::Ready { waiter, result: Ok(unit) });
        }
    }

    /// Takes the in-flight work `run` off worker `pos` and does the bookkeeping of an answer (`ok`: a forward pass
    /// answered). `None` for an unknown id.
    fn take_answered(
        &mut self,
        now: Now,
        pos: usize,
        run: u64,
        rss: u64,
        ok: bool,
    ) -> Option<(InFlight, bulkhead_core::Unit)> {
        let w = &mut self.workers[pos];
        if rss > 0 {
            w.rss = rss;
        }
        let unit = w.unit;
        let live = w.live_mut()?;
        let i = live.inflight.iter().position(|f| f.run == run)?;
        let f = live.inflight.remove(i)?;
        let started = live.head_since.max(f.sent);
        live.head_since = now.at;
        live.served += 1;
        let slot = &mut self.units[unit];
        if ok {
            live.last_ok = now.at;
            if !f.work.probe {
                slot.latency.record(f.work.shape(), (now.at - started).as_secs_f64() * 1e3);
            }
            slot.stats.predictions += 1;
            slot.consecutive_crashes = 0;
            self.health.last_ok = Some(now.at);
        }
        Some((f, slot.unit))
    }

    /// Cuts the answer of one prediction back into one answer per request.
    fn scatter(
        &mut self,
        now: Now,
        f: InFlight,
        (unit, precision, worker_pid): (bulkhead_core::Unit, Option<bulkhead_core::Precision>, Option<u32>),
        answer: Answer,
        timing: &StageTiming,
    ) {
        if f.work.probe {
            return;
        }
        let sizes: Vec<usize> = f.work.jobs.iter().map(|j| j.job.payload.rows()).collect();
        let total = answer.rows();
        match answer.split(&sizes) {
            Some(parts) => {
                for (job, answer) in f.work.jobs.into_iter().zip(parts) {
                    let timing = job_timing(&job, now, timing);
                    let retries = job.retries;
                    self.answer(job, Ok(Answered { answer, unit, precision, worker_pid, timing, retries }));
                }
            }
            None => {
                let want: usize = sizes.iter().sum();
                for job in f.work.jobs {
                    let msg = format!("{unit}: the worker answered {total} rows for {want} inputs");
                    self.answer(job, Err(PredictError::Failed(msg)));
                }
            }
        }
    }

    pub(super) fn on_tick(&mut self, now: Now, samples: Vec<Sample>, mem_available: Option<u64>) {
        if mem_available.is_some() {
            self.mem_available = mem_available;
        }
        for s in samples {
            let Some(w) = self.workers.iter_mut().find(|w| w.id == s.worker) else { continue };
            // A process that died and is not reaped yet shows no memory: keep what it had.
            if s.stat.rss_bytes > 0 {
                w.rss = s.stat.rss_bytes;
                let rlimit = self.cfg.worker_memory.as_ref().is_some_and(|c| c.counts_unresident());
                if rlimit && s.stat.data_bytes > 0 {
                    // The largest seen: reserved memory only grows, and resident file pages make the gap vary.
                    let gap = s.stat.data_bytes.saturating_sub(s.stat.rss_bytes);
                    let slot = &mut self.units[w.unit];
                    slot.unresident_data = slot.unresident_data.max(gap);
                }
            }
            if let Some(live) = w.live_mut() {
                live.stopped_since = if s.stat.stopped { live.stopped_since.or(Some(now.at)) } else { None };
                live.cpu = match live.cpu {
                    Some((ticks, since)) if ticks >= s.stat.cpu_ticks => Some((ticks, since)),
                    _ => Some((s.stat.cpu_ticks, now.at)),
                };
            }
        }
        self.expire_queue(now);
        self.watchdog(now);
        // Draining workers with nothing in flight stop.
        const DRAIN_KILL_AFTER: std::time::Duration = std::time::Duration::from_secs(10);
        for w in &mut self.workers {
            if matches!(&w.phase, Phase::Draining(l, _) if l.inflight.is_empty()) {
                self.effects.push(Effect::Send { worker: w.id, request: crate::protocol::Request::Shutdown });
                w.phase = Phase::Stopping(Stopping {
                    inflight: Default::default(),
                    deadline: Some(now.at + DRAIN_KILL_AFTER),
                    planned: true,
                });
            }
        }
        self.update_ready();
        self.probe(now);
    }

    /// Health: an idle serving worker answers a real forward pass (its own warm-up input) now and then.
    fn probe(&mut self, now: Now) {
        if !self.queue.is_empty() || self.shutdown.is_some() {
            return;
        }
        let every = self.cfg.health_probe_every;
        let due: Vec<usize> = (0..self.workers.len())
            .filter(|&p| {
                matches!(&self.workers[p].phase, Phase::Serving(l) if l.inflight.is_empty() && now.at - l.last_ok > every)
            })
            .collect();
        for pos in due {
            self.send(now, pos, Work::probe(now.at), false);
        }
    }

    /// Requests that waited `queue_timeout` without a worker to run them are answered "unavailable" (503 with
    /// Retry-After): the floor keeps restarting, but a caller is not held forever.
    fn expire_queue(&mut self, now: Now) {
        let limit = self.cfg.queue_timeout;
        if !self.queue.iter().any(|w| w.jobs.iter().any(|j| now.at - j.enqueued > limit)) {
            return;
        }
        let state = self.units.iter().map(|u| format!("{}: {}", u.unit, u.reason())).collect::<Vec<_>>().join("; ");
        let mut kept = std::collections::VecDeque::new();
        for mut work in std::mem::take(&mut self.queue) {
            let (old, young): (Vec<Pending>, Vec<Pending>) =
                work.jobs.into_iter().partition(|j| now.at - j.enqueued > limit);
            for job in old {
                let msg = format!(
                    "no worker of {} could run this request within {} s ({state}); retry later",
                    self.model,
                    limit.as_secs()
                );
                if !work.probe {
                    self.answer(job, Err(PredictError::Unavailable(msg)));
                }
            }
            if !young.is_empty() {
                work.jobs = young;
                kept.push_back(work);
            }
        }
        self.queue = kept;
    }
}
