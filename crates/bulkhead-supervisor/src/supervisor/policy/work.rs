//! Work waiting or in flight: one or more requests sent as one prediction, and the strikes a request collects when
//! a worker dies while running it.

use std::time::Instant;

use super::job::Job;
use crate::payload::{Payload, PayloadKind};
use crate::protocol::Request;
use bulkhead_core::RowKind;

use super::event::RequestId;

/// A worker died while running a request.
#[derive(Debug, Clone)]
pub(crate) struct Strike {
    /// The unit whose worker died (index in the chain).
    pub unit: usize,
    /// `ort:cpu#3 signal SIGSEGV`: for the poison message.
    pub label: String,
    /// The death's number in the unit's crash record (forgiven if the request turns out to be poison).
    pub crash: u64,
    /// The request ran alone as the first prediction of a fresh worker: the crash can only be its own.
    pub clean: bool,
    /// The death was a watchdog kill (its next deadline doubles, so a noisy deadline cannot make it poison).
    pub hang: bool,
}

/// One caller's request inside the core.
#[derive(Debug)]
pub(crate) struct Pending {
    pub id: RequestId,
    pub job: Job,
    pub enqueued: Instant,
    pub strikes: Vec<Strike>,
    pub retries: u32,
}

/// What is dispatched as one prediction.
#[derive(Debug)]
pub(crate) struct Work {
    pub jobs: Vec<Pending>,
    /// A health probe: no caller waits, never retried.
    pub probe: bool,
}

impl Work {
    /// Groups submitted requests into works: consecutive batchable requests of one kind share a prediction; the
    /// others (tensors, probes) go alone.
    pub fn group(jobs: Vec<Pending>) -> Vec<Work> {
        let mut out: Vec<Work> = vec![];
        for p in jobs {
            let joins = out.last().is_some_and(|w| {
                let last = &w.jobs[0].job.payload;
                !w.probe && last.batchable() && last.kind() == p.job.payload.kind()
            });
            match out.last_mut() {
                Some(w) if joins => w.jobs.push(p),
                _ => out.push(Work { jobs: vec![p], probe: false }),
            }
        }
        out
    }

    /// A health probe: the worker's own warm-up input.
    pub fn probe(now: Instant) -> Work {
        let job = Job::probe();
        Work {
            jobs: vec![Pending { id: RequestId(u64::MAX), job, enqueued: now, strikes: vec![], retries: 0 }],
            probe: true,
        }
    }

    /// (rows, padded width): what the prediction's cost scales with.
    pub fn shape(&self) -> (usize, usize) {
        let mut rows = 0;
        let mut width = 0;
        for j in &self.jobs {
            let (r, w) = j.job.payload.shape();
            rows += r;
            width = width.max(w);
        }
        (rows, width)
    }

    /// Token rows (or pairs) whose longest row has more tokens than `limit` ([`SupervisorConfig::long_row_tokens`]):
    /// a long prediction. Probes, tensors, audio and images (pixel rows, whose length is the tower's fixed
    /// positions) are never long.
    ///
    /// [`SupervisorConfig::long_row_tokens`]: crate::SupervisorConfig::long_row_tokens
    pub fn long(&self, limit: Option<usize>) -> bool {
        let Some(limit) = limit else { return false };
        let text = |j: &Pending| {
            matches!(j.job.payload.kind(), PayloadKind::Rows(RowKind::Tokens) | PayloadKind::Rows(RowKind::Pair))
        };
        !self.probe && self.jobs.iter().all(text) && self.shape().1 > limit
    }

    /// The request to send (payloads merged; texts, present only for fault rules that match on them, concatenated).
    /// The work keeps its jobs (a death requeues them), so the payloads are copied into the request.
    pub fn request(&self, id: u64, long: bool) -> Request {
        let payload = Payload::merge(self.jobs.iter().map(|j| j.job.payload.clone())).unwrap_or(Payload::Probe);
        let texts = self.jobs.iter().flat_map(|j| j.job.texts.iter().cloned()).collect();
        Request::Run { id, payload, texts, long }
    }

    /// A single request that crashed workers `poison_crashes` times without ever crashing a fresh worker alone:
    /// it must run next as the first prediction of a fresh worker (a clean room), which decides.
    pub fn suspect(&self, poison_crashes: u32) -> bool {
        self.jobs.len() == 1 && self.jobs[0].strikes.len() >= poison_crashes as usize && !self.probe
    }

    /// Watchdog kills among the strikes of its requests (each doubles its next deadline).
    pub fn hangs(&self) -> u32 {
        self.jobs.iter().map(|j| j.strikes.iter().filter(|s| s.hang).count() as u32).max().unwrap_or(0)
    }
}

/// A prediction sent to a worker and not answered yet.
#[derive(Debug)]
pub(crate) struct InFlight {
    /// The run id of the request.
    pub run: u64,
    pub work: Work,
    pub sent: Instant,
    /// It was sent to a worker that had answered nothing before and held nothing else: its first prediction.
    pub first: bool,
    /// A long prediction ([`Work::long`]).
    pub long: bool,
}
