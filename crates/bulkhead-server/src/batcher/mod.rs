//! Dynamic batching per model.
//!
//! Requests (already tokenized into [`Row`]s) wait in a bounded queue. A batch is formed as soon as a worker slot is
//! free (`max_concurrent_batches` in flight): it takes every waiting request that fits the row and padded-token
//! budgets, so batches grow exactly while the workers are busy and a lone request on an idle server is not delayed.
//! An optional `max_batch_wait` adds a short window to collect more. Inside a batch, rows are sorted by length and
//! cut into groups of similar length ([`crate::grouping`]: padding within a share of the real tokens, each group
//! within the pass budget); each group is its own forward pass, all dispatched at once, shortest first, and each
//! request is answered as soon as the passes holding its rows have answered. The padding each pass carried is
//! counted ([`Metrics::batch`]) and goes back with the answer ([`JobOutput::shape`]).
//!
//! Short requests never wait behind long ones in the batcher ([`ServeConfig::long_row_tokens`]): one batch of short
//! requests only may run beside the `max_concurrent_batches` batches, and a long request that finds no free slot is
//! held aside while short ones behind it form batches. A slot that frees goes to the oldest held long request; a
//! short one takes the slot of short requests while long ones are held (any slot otherwise), so neither kind
//! starves the other. The supervisor keeps a worker free for short work in the same way.
//!
//! Each group goes to the backend as one job per request, so a poison request (one that crashed workers twice) fails
//! alone while the others that shared its batch still get their answer. Rows of different kinds ([`Row::kind`]:
//! token rows of an embedding model, pairs of a cross-encoder) never share a batch; every kind is counted against
//! the same budgets.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bulkhead_core::{Precision, Row, RowKind, Unit};
use bulkhead_embed::StageTiming;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::backend::{Answer, Backend, BackendError, BackendJob, BackendOutput};
use crate::config::ServeConfig;
use crate::grouping::{self, admits, Forming, Grouping, PassBudget, Shape};
use crate::metrics::Metrics;

/// The answer to one request.
#[derive(Debug, Clone)]
pub struct JobOutput {
    /// One vector per input row (embeddings, or the logits of a cross-encoder).
    pub vectors: Vec<Vec<f32>>,
    /// The unit that computed them.
    pub unit: Unit,
    /// The weight precision that unit loaded (`None` when it did not say).
    pub precision: Option<Precision>,
    /// The worker process that computed them (the last one, when the request's rows went to several batches;
    /// `None` in-process).
    pub worker_pid: Option<u32>,
    /// Workers the request was retried after (the most of its batches).
    pub retries: u32,
    /// queue / infer / post milliseconds (tokenize is the handler's).
    pub timing: StageTiming,
    /// The forward passes its rows went through, summed: rows, real tokens and padded tokens.
    pub shape: Shape,
}

/// Why a request was not answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full.
    #[error("queue full")]
    Overloaded,
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

struct Job {
    rows: Vec<Row>,
    /// Texts for fault rules that match on them (empty unless the backend wants them).
    texts: Vec<String>,
    enqueued: Instant,
    /// Taken when the batch is dispatched.
    reply: Option<oneshot::Sender<Result<JobOutput, BackendError>>>,
}

impl Job {
    fn kind(&self) -> Option<RowKind> {
        self.rows.first().map(Row::kind)
    }

    fn longest(&self) -> usize {
        self.rows.iter().map(Row::len).max().unwrap_or(0)
    }

    fn real(&self) -> usize {
        self.rows.iter().map(Row::len).sum()
    }
}

/// The handle to a model's batcher.
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    depth: Arc<AtomicUsize>,
    max_queue: usize,
}

impl Batcher {
    /// Starts the batching task of `model` on the current tokio runtime.
    pub fn spawn(model: String, backend: Arc<dyn Backend>, config: &ServeConfig, metrics: Arc<Metrics>) -> Batcher {
        let (tx, rx) = mpsc::channel(config.max_queue.max(1));
        let depth = Arc::new(AtomicUsize::new(0));
        let budget = PassBudget { rows: config.max_batch_size.max(1), tokens: config.max_batch_tokens.max(1) };
        let limits = Limits {
            budget,
            grouping: config.grouping,
            max_wait: config.max_batch_wait,
            in_flight: config.max_concurrent_batches.max(1),
            long_rows: config.long_row_tokens,
        };
        tokio::spawn(run(model, backend, rx, depth.clone(), limits, metrics));
        Batcher { tx, depth, max_queue: config.max_queue.max(1) }
    }

    /// Queues one request's rows (of one kind) and waits for one vector per row; `texts` go along only for fault
    /// rules that match on them (empty otherwise).
    pub async fn submit(&self, rows: Vec<Row>, texts: Vec<String>) -> Result<JobOutput, SubmitError> {
        let (reply, rx) = oneshot::channel();
        let job = Job { rows, texts, enqueued: Instant::now(), reply: Some(reply) };
        // Long requests held aside have left the channel: the queue's bound counts every request not dispatched.
        if self.depth.fetch_add(1, Ordering::Relaxed) >= self.max_queue || self.tx.try_send(job).is_err() {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            return Err(SubmitError::Overloaded);
        }
        match rx.await {
            Ok(r) => r.map_err(SubmitError::Backend),
            Err(_) => {
                Err(SubmitError::Backend(BackendError::Failed("the batcher stopped (server shutting down)".into())))
            }
        }
    }

    /// Requests waiting.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }
}

/// How batches form.
#[derive(Debug, Clone, Copy)]
struct Limits {
    budget: PassBudget,
    grouping: Grouping,
    max_wait: std::time::Duration,
    /// Batches in flight (short requests have one more slot of their own).
    in_flight: usize,
    /// Rows longer than this make a request long (`None`: none is).
    long_rows: Option<usize>,
}

impl Limits {
    /// Token rows or pairs past the limit (pixel rows are as long as their tower's fixed positions: never long).
    fn long(&self, job: &Job) -> bool {
        let text = matches!(job.kind(), Some(RowKind::Tokens | RowKind::Pair));
        text && self.long_rows.is_some_and(|limit| job.longest() > limit)
    }
}

/// The next job that was not taken yet: the one that did not fit the last batch, or a new one.
async fn next_job(pending: &mut Option<Job>, rx: &mut mpsc::Receiver<Job>) -> Option<Job> {
    match pending.take() {
        Some(j) => Some(j),
        None => rx.recv().await,
    }
}

async fn run(
    model: String,
    backend: Arc<dyn Backend>,
    mut rx: mpsc::Receiver<Job>,
    depth: Arc<AtomicUsize>,
    limits: Limits,
    metrics: Arc<Metrics>,
) {
    let Limits { budget, grouping, max_wait, .. } = limits;
    let slots = Arc::new(Semaphore::new(limits.in_flight));
    // The slot of short requests only (none when no request is long).
    let short_slot = Arc::new(Semaphore::new(usize::from(limits.long_rows.is_some())));
    let mut pending: Option<Job> = None;
    // Long requests that found every slot taken, oldest first: the next free slot is theirs.
    let mut held: VecDeque<Job> = VecDeque::new();
    // The short request next in line, waiting for a slot.
    let mut waiting: Option<Job> = None;
    loop {
        let (first, permit, short_only) = tokio::select! {
            biased;
            // A free batch slot goes to the oldest held long request first.
            permit = slots.clone().acquire_owned(), if !held.is_empty() => {
                let Ok(permit) = permit else { return };
                (held.pop_front().expect("held is not empty"), permit, false)
            }
            // A short request takes any free slot while no long one waits, else the slot of short ones.
            permit = slots.clone().acquire_owned(), if waiting.is_some() && held.is_empty() => {
                let Ok(permit) = permit else { return };
                (waiting.take().expect("a short request waits"), permit, false)
            }
            permit = short_slot.clone().acquire_owned(), if waiting.is_some() => {
                let Ok(permit) = permit else { return };
                (waiting.take().expect("a short request waits"), permit, true)
            }
            job = next_job(&mut pending, &mut rx), if waiting.is_none() => {
                let Some(job) = job else { return };
                if limits.long(&job) {
                    held.push_back(job);
                } else {
                    waiting = Some(job);
                }
                continue;
            }
        };
        let mut forming = Forming::default().with(first.rows.len(), first.longest(), first.real());
        let mut jobs = vec![first];
        // Held long requests join a batch that may hold them, oldest first.
        while let Some(job) = held.front().filter(|_| !short_only) {
            let next = forming.with(job.rows.len(), job.longest(), job.real());
            if job.kind() != jobs[0].kind() || !admits(next, budget, grouping) {
                break;
            }
            forming = next;
            jobs.extend(held.pop_front());
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            let next = match rx.try_recv() {
                Ok(j) => Some(j),
                Err(mpsc::error::TryRecvError::Empty) if !max_wait.is_zero() => {
                    tokio::time::timeout_at(deadline, rx.recv()).await.ok().flatten()
                }
                Err(_) => None,
            };
            let Some(job) = next else { break };
            if short_only && limits.long(&job) {
                held.push_back(job);
                continue;
            }
            let next = forming.with(job.rows.len(), job.longest(), job.real());
            if job.kind() == jobs[0].kind() && admits(next, budget, grouping) {
                forming = next;
                jobs.push(job);
            } else {
                pending = Some(job);
                break;
            }
        }
        depth.fetch_sub(jobs.len(), Ordering::Relaxed);
        metrics.queue_depth(&model, depth.load(Ordering::Relaxed));
        run_batch(&model, &backend, jobs, budget, grouping, &metrics, permit);
    }
}

/// One row of a batch: which job and which of its rows.
struct Slot {
    job: usize,
    row: usize,
}

/// A request of a batch while its rows' passes answer: when the last one has, it is answered.
struct Gather {
    vectors: Vec<Option<Vec<f32>>>,
    left: usize,
    failure: Option<BackendError>,
    answered: Option<(Unit, Option<Precision>, Option<u32>)>,
    /// The most retries of the passes its rows went through.
    retries: u32,
    /// The summed infer and post stages of the passes its rows went through.
    timing: StageTiming,
    shape: Shape,
    enqueued: Instant,
    reply: Option<oneshot::Sender<Result<JobOutput, BackendError>>>,
}

impl Gather {
    /// Takes one pass's answer for rows `rows` of this request; answers the request once every row has one.
    fn take(&mut self, rows: Vec<usize>, result: Result<BackendOutput, BackendError>, shape: Shape) {
        self.left = self.left.saturating_sub(rows.len());
        self.shape = self.shape + shape;
        match result {
            Ok(out) => {
                self.timing.infer_ms += out.timing.infer_ms;
                self.timing.post_ms += out.timing.post_ms;
                self.answered = Some((out.unit, out.precision, out.worker_pid));
                self.retries = self.retries.max(out.retries);
                match out.answer {
                    Answer::Vectors(v) | Answer::Scores(v) => {
                        rows.into_iter().zip(v).for_each(|(r, v)| self.vectors[r] = Some(v))
                    }
                    Answer::Tensors(_) | Answer::Segment(_) | Answer::Transcription(_) => {
                        self.failure = Some(BackendError::Failed("the model answered no vectors".into()))
                    }
                }
            }
            Err(e) => self.failure = Some(e),
        }
        if self.left == 0 {
            self.finish();
        }
    }

    fn finish(&mut self) {
        let Some(reply) = self.reply.take() else { return };
        let total_ms = self.enqueued.elapsed().as_secs_f64() * 1e3;
        let result = match (self.failure.take(), self.answered) {
            (Some(e), _) => Err(e),
            (None, Some((unit, precision, worker_pid))) => Ok(JobOutput {
                vectors: std::mem::take(&mut self.vectors).into_iter().map(Option::unwrap_or_default).collect(),
                unit,
                precision,
                worker_pid,
                retries: self.retries,
                timing: StageTiming {
                    queue_ms: (total_ms - self.timing.infer_ms - self.timing.post_ms).max(0.0),
                    ..self.timing
                },
                shape: self.shape,
            }),
            (None, None) => Err(BackendError::Failed("empty batch".into())),
        };
        let _ = reply.send(result);
    }
}

/// Sorts the batch's rows by length, cuts them into groups ([`grouping::cut`]) and runs each group as its own
/// forward pass, shortest first and all at once (so short rows never wait behind a long pass of their batch, and
/// with several workers the passes run side by side). A request is answered as soon as every pass holding one of
/// its rows has answered; the batch's permit is released when the last pass has.
fn run_batch(
    model: &str,
    backend: &Arc<dyn Backend>,
    mut jobs: Vec<Job>,
    budget: PassBudget,
    grouping: Grouping,
    metrics: &Arc<Metrics>,
    permit: OwnedSemaphorePermit,
) {
    let mut order: Vec<Slot> = jobs
        .iter()
        .enumerate()
        .flat_map(|(j, job)| (0..job.rows.len()).map(move |r| Slot { job: j, row: r }))
        .collect();
    order.sort_by_key(|s| jobs[s.job].rows[s.row].len());
    let lengths: Vec<usize> = order.iter().map(|s| jobs[s.job].rows[s.row].len()).collect();
    let groups = grouping::cut(&lengths, budget, grouping);

    let gathers: Vec<Arc<Mutex<Gather>>> = jobs
        .iter_mut()
        .map(|job| {
            Arc::new(Mutex::new(Gather {
                vectors: vec![None; job.rows.len()],
                left: job.rows.len(),
                failure: None,
                answered: None,
                retries: 0,
                timing: StageTiming::default(),
                shape: Shape::default(),
                enqueued: job.enqueued,
                reply: job.reply.take(),
            }))
        })
        .collect();
    for gather in &gathers {
        let mut g = gather.lock().unwrap_or_else(|e| e.into_inner());
        if g.left == 0 {
            g.finish();
        }
    }
    let permit = Arc::new(permit);
    for group in groups {
        // One backend job per request present in the group (a request's rows may span groups). Every row goes to
        // exactly one group, so it is moved, not copied.
        let shape = Shape::of(&lengths[group.clone()]);
        let mut parts: Vec<(usize, Vec<usize>)> = vec![];
        for s in &order[group] {
            match parts.iter_mut().find(|(j, _)| *j == s.job) {
                Some((_, rows)) => rows.push(s.row),
                None => parts.push((s.job, vec![s.row])),
            }
        }
        let backend_jobs: Vec<BackendJob> = parts.iter().map(|(j, rows)| backend_job(&mut jobs[*j], rows)).collect();
        let targets: Vec<(Arc<Mutex<Gather>>, Vec<usize>)> =
            parts.into_iter().map(|(j, rows)| (gathers[j].clone(), rows)).collect();
        metrics.batch(model, shape.rows, shape.real, shape.padded);
        let (backend, permit) = (backend.clone(), permit.clone());
        tokio::spawn(async move {
            let results = backend.predict(backend_jobs).await;
            let mut results = results.into_iter();
            for (gather, rows) in targets {
                let result =
                    results.next().unwrap_or_else(|| Err(BackendError::Failed("the backend answered no job".into())));
                gather.lock().unwrap_or_else(|e| e.into_inner()).take(rows, result, shape);
            }
            drop(permit);
        });
    }
}

/// The backend job of `rows` of one request, taken out of it (each row is sent once).
fn backend_job(job: &mut Job, rows: &[usize]) -> BackendJob {
    let texts = rows.iter().filter_map(|&r| job.texts.get_mut(r).map(std::mem::take)).collect();
    let taken = rows.iter().map(|&r| std::mem::replace(&mut job.rows[r], Row::tokens(vec![]))).collect();
    BackendJob::rows(taken).with_texts(texts)
}

#[cfg(test)]
mod tests;
