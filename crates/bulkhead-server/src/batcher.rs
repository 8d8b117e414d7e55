//! Dynamic batching per model.
//!
//! Requests (already tokenized into [`Row`]s) wait in a bounded queue. A batch is formed as soon as a worker slot is
//! free (`max_concurrent_batches` in flight): it takes every waiting request that fits the row and padded-token
//! budgets, so batches grow exactly while the workers are busy and a lone request on an idle server is not delayed.
//! An optional `max_batch_wait` adds a short window to collect more. Inside a batch, rows are sorted by length and
//! cut into chunks of similar length, which limits padding; results are scattered back to each request.
//!
//! Each chunk goes to the backend as one job per request, so a poison request (one that crashed workers twice) fails
//! alone while the others that shared its batch still get their answer. Rows of different kinds ([`Row::kind`]:
//! token rows of an embedding model, pairs of a cross-encoder) never share a batch; every kind is counted against
//! the same budgets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bulkhead_core::{Precision, Row, RowKind, Unit};
use bulkhead_embed::StageTiming;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::backend::{Answer, Backend, BackendError, BackendJob, BackendOutput};
use crate::config::ServeConfig;
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
    /// queue / infer / post milliseconds (tokenize is the handler's).
    pub timing: StageTiming,
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
    reply: oneshot::Sender<Result<JobOutput, BackendError>>,
}

impl Job {
    fn kind(&self) -> Option<RowKind> {
        self.rows.first().map(Row::kind)
    }

    fn longest(&self) -> usize {
        self.rows.iter().map(Row::len).max().unwrap_or(0)
    }
}

/// The handle to a model's batcher.
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    depth: Arc<AtomicUsize>,
}

#[derive(Clone, Copy)]
struct Limits {
    rows: usize,
    tokens: usize,
}

impl Limits {
    fn fits(&self, rows: usize, longest: usize) -> bool {
        rows <= self.rows && rows * longest <= self.tokens
    }
}

impl Batcher {
    /// Starts the batching task of `model` on the current tokio runtime.
    pub fn spawn(model: String, backend: Arc<dyn Backend>, config: &ServeConfig, metrics: Arc<Metrics>) -> Batcher {
        let (tx, rx) = mpsc::channel(config.max_queue.max(1));
        let depth = Arc::new(AtomicUsize::new(0));
        let limits = Limits { rows: config.max_batch_size.max(1), tokens: config.max_batch_tokens.max(1) };
        tokio::spawn(run(
            model,
            backend,
            rx,
            depth.clone(),
            limits,
            config.max_batch_wait,
            config.max_concurrent_batches.max(1),
            metrics,
        ));
        Batcher { tx, depth }
    }

    /// Queues one request's rows (of one kind) and waits for one vector per row; `texts` go along only for fault
    /// rules that match on them (empty otherwise).
    pub async fn submit(&self, rows: Vec<Row>, texts: Vec<String>) -> Result<JobOutput, SubmitError> {
        let (reply, rx) = oneshot::channel();
        let job = Job { rows, texts, enqueued: Instant::now(), reply };
        self.depth.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(job).is_err() {
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

#[allow(clippy::too_many_arguments)]
async fn run(
    model: String,
    backend: Arc<dyn Backend>,
    mut rx: mpsc::Receiver<Job>,
    depth: Arc<AtomicUsize>,
    limits: Limits,
    max_wait: std::time::Duration,
    in_flight: usize,
    metrics: Arc<Metrics>,
) {
    let slots = Arc::new(Semaphore::new(in_flight));
    let mut pending: Option<Job> = None;
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let first = match pending.take() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => return,
            },
        };
        let mut rows = first.rows.len();
        let mut longest = first.longest();
        let mut jobs = vec![first];
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
            let job_longest = job.longest();
            if job.kind() == jobs[0].kind() && limits.fits(rows + job.rows.len(), longest.max(job_longest)) {
                rows += job.rows.len();
                longest = longest.max(job_longest);
                jobs.push(job);
            } else {
                pending = Some(job);
                break;
            }
        }
        depth.fetch_sub(jobs.len(), Ordering::Relaxed);
        metrics.queue_depth(&model, depth.load(Ordering::Relaxed));
        let (backend, metrics, model) = (backend.clone(), metrics.clone(), model.clone());
        tokio::spawn(async move {
            run_batch(&model, backend.as_ref(), jobs, limits, &metrics).await;
            drop(permit);
        });
    }
}

/// One row of a batch: which job and which of its rows.
struct Slot {
    job: usize,
    row: usize,
}

async fn run_batch(model: &str, backend: &dyn Backend, mut jobs: Vec<Job>, limits: Limits, metrics: &Metrics) {
    let dispatched = Instant::now();
    // Sort every row of the batch by length, then cut chunks that respect the budgets.
    let mut order: Vec<Slot> = jobs
        .iter()
        .enumerate()
        .flat_map(|(j, job)| (0..job.rows.len()).map(move |r| Slot { job: j, row: r }))
        .collect();
    order.sort_by_key(|s| jobs[s.job].rows[s.row].len());
    let mut chunks: Vec<(Vec<Slot>, usize)> = vec![];
    let mut current: Vec<Slot> = vec![];
    let mut current_longest = 0;
    for slot in order {
        let len = jobs[slot.job].rows[slot.row].len();
        if !current.is_empty() && !limits.fits(current.len() + 1, len) {
            chunks.push((std::mem::take(&mut current), current_longest));
        }
        current_longest = if current.is_empty() { len } else { current_longest.max(len) };
        current.push(slot);
    }
    if !current.is_empty() {
        chunks.push((current, current_longest));
    }

    let mut vectors: Vec<Vec<Option<Vec<f32>>>> = jobs.iter().map(|j| vec![None; j.rows.len()]).collect();
    let mut failures: Vec<Option<BackendError>> = vec![None; jobs.len()];
    let mut answered: Option<(Unit, Option<Precision>)> = None;
    let mut timing = StageTiming::default();
    for (chunk, longest) in chunks {
        // One backend job per request present in the chunk (a request's rows may span chunks). Every row goes to
        // exactly one chunk, so it is moved, not copied.
        let mut parts: Vec<(usize, Vec<usize>)> = vec![];
        for s in &chunk {
            match parts.iter_mut().find(|(j, _)| *j == s.job) {
                Some((_, rows)) => rows.push(s.row),
                None => parts.push((s.job, vec![s.row])),
            }
        }
        let backend_jobs: Vec<BackendJob> = parts.iter().map(|(j, rows)| backend_job(&mut jobs[*j], rows)).collect();
        metrics.batch(model, chunk.len(), chunk.len() * longest);
        let results = backend.predict(backend_jobs).await;
        let mut chunk_timing_merged = false;
        for ((j, rows), result) in parts.into_iter().zip(results) {
            match result {
                Ok(out) => {
                    if !chunk_timing_merged {
                        merge(&mut timing, &out);
                        chunk_timing_merged = true;
                    }
                    answered = Some((out.unit, out.precision));
                    match out.answer {
                        Answer::Vectors(v) | Answer::Scores(v) => {
                            rows.into_iter().zip(v).for_each(|(r, v)| vectors[j][r] = Some(v))
                        }
                        Answer::Tensors(_) | Answer::Transcription(_) => {
                            failures[j] = Some(BackendError::Failed("the model answered no vectors".into()))
                        }
                    }
                }
                Err(e) => failures[j] = Some(e),
            }
        }
    }
    for ((job, rows), failure) in jobs.into_iter().zip(vectors).zip(failures) {
        let queue_ms = (dispatched - job.enqueued).as_secs_f64() * 1e3;
        let result = match (failure, answered) {
            (Some(e), _) => Err(e),
            (None, Some((unit, precision))) => Ok(JobOutput {
                vectors: rows.into_iter().map(|v| v.unwrap_or_default()).collect(),
                unit,
                precision,
                timing: StageTiming { queue_ms: queue_ms + timing.queue_ms, ..timing },
            }),
            (None, None) => Err(BackendError::Failed("empty batch".into())),
        };
        let _ = job.reply.send(result);
    }
}

/// The backend job of `rows` of one request, taken out of it (each row is sent once).
fn backend_job(job: &mut Job, rows: &[usize]) -> BackendJob {
    let texts = rows.iter().filter_map(|&r| job.texts.get_mut(r).map(std::mem::take)).collect();
    let taken = rows.iter().map(|&r| std::mem::replace(&mut job.rows[r], Row::tokens(vec![]))).collect();
    BackendJob::rows(taken).with_texts(texts)
}

/// Sums the chunks' stages; the backend's `queue_ms` is the time in the supervisor and the worker pipes.
fn merge(total: &mut StageTiming, out: &BackendOutput) {
    total.queue_ms += out.timing.queue_ms;
    total.infer_ms += out.timing.infer_ms;
    total.post_ms += out.timing.post_ms;
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::api::units::{Isolation, ModelUnits};
    use crate::backend::{BoxFuture, Payload};

    /// Answers each row with its length after a delay; a job whose text contains POISON fails as poison.
    #[derive(Default)]
    struct Fake {
        batches: Mutex<Vec<usize>>,
        /// The row kinds of each call.
        kinds: Mutex<Vec<Vec<RowKind>>>,
    }

    impl Backend for Fake {
        fn predict(&self, jobs: Vec<BackendJob>) -> BoxFuture<'_, Vec<Result<BackendOutput, BackendError>>> {
            Box::pin(async move {
                self.batches.lock().unwrap().push(jobs.iter().map(|j| j.payload.rows()).sum());
                let kinds = jobs.iter().filter_map(|j| match &j.payload {
                    Payload::Rows(rows) => Some(rows.iter().map(Row::kind)),
                    _ => None,
                });
                self.kinds.lock().unwrap().push(kinds.flatten().collect());
                tokio::time::sleep(Duration::from_millis(20)).await;
                jobs.into_iter()
                    .map(|j| {
                        if j.texts.iter().any(|t| t.contains("POISON")) {
                            return Err(BackendError::Poison("poison".into()));
                        }
                        let Payload::Rows(rows) = &j.payload else { panic!("the batcher sends rows") };
                        Ok(BackendOutput {
                            answer: Answer::Vectors(rows.iter().map(|r| vec![r.len() as f32]).collect()),
                            unit: Unit::ORT_CPU,
                            precision: Some(Precision::Int8),
                            timing: StageTiming::default(),
                            retries: 0,
                        })
                    })
                    .collect()
            })
        }
        fn units(&self) -> ModelUnits {
            ModelUnits {
                model: "fake".into(),
                chain: vec![],
                serving: None,
                isolation: Isolation::None,
                workers: 1,
                queued: 0,
                units: vec![],
                inputs: vec![],
                outputs: vec![],
            }
        }
        fn healthy(&self, _: Duration) -> bool {
            true
        }
        fn ready(&self) -> bool {
            true
        }
        fn shutdown(&self) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
    }

    fn tokens(n: usize) -> Row {
        Row::tokens(vec![1; n])
    }

    fn batcher(fake: Arc<Fake>, config: ServeConfig) -> Batcher {
        Batcher::spawn("m".into(), fake, &config, Arc::new(Metrics::new()))
    }

    #[tokio::test]
    async fn concurrent_requests_are_batched_and_scattered_back_in_order() {
        let fake = Arc::new(Fake::default());
        let b = Arc::new(batcher(fake.clone(), ServeConfig { max_concurrent_batches: 1, ..ServeConfig::default() }));
        let tasks: Vec<_> = (1..=40usize)
            .map(|n| {
                let b = b.clone();
                // Request n has two rows of n and n+1 tokens: the answer must come back to it, in order.
                tokio::spawn(async move { (n, b.submit(vec![tokens(n), tokens(n + 1)], vec![]).await) })
            })
            .collect();
        for t in tasks {
            let (n, out) = t.await.unwrap();
            let out = out.unwrap();
            assert_eq!(out.vectors, vec![vec![n as f32], vec![(n + 1) as f32]]);
            assert_eq!(
                (out.unit, out.precision),
                (Unit::ORT_CPU, Some(Precision::Int8)),
                "the answer says who computed it"
            );
        }
        let batches = fake.batches.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 80);
        assert!(batches.len() < 40, "requests waiting behind a busy backend are batched: {batches:?}");
        assert!(batches.iter().all(|&rows| rows <= 64), "{batches:?}");
    }

    #[tokio::test]
    async fn rows_of_different_kinds_never_share_a_batch() {
        let fake = Arc::new(Fake::default());
        let b = Arc::new(batcher(fake.clone(), ServeConfig { max_concurrent_batches: 1, ..ServeConfig::default() }));
        let pair = |n: usize| Row::Pair { ids: vec![1; n], type_ids: vec![0; n] };
        let tasks: Vec<_> = (1..=20usize)
            .map(|n| {
                let b = b.clone();
                // Ten token requests, then ten pair requests: batches form within a kind, never across.
                let rows = if n <= 10 { vec![tokens(n), tokens(n + 1)] } else { vec![pair(n), pair(n + 1)] };
                tokio::spawn(async move { (n, b.submit(rows, vec![]).await) })
            })
            .collect();
        for t in tasks {
            let (n, out) = t.await.unwrap();
            assert_eq!(out.unwrap().vectors, vec![vec![n as f32], vec![(n + 1) as f32]], "request {n}");
        }
        let kinds = fake.kinds.lock().unwrap().clone();
        assert!(kinds.iter().all(|k| k.windows(2).all(|w| w[0] == w[1])), "a batch mixed kinds: {kinds:?}");
        assert!(kinds.iter().any(|k| k.len() > 2), "requests waiting behind a busy backend are batched: {kinds:?}");
    }

    #[tokio::test]
    async fn a_poison_request_fails_alone_in_its_batch() {
        let fake = Arc::new(Fake::default());
        let b = Arc::new(batcher(fake, ServeConfig { max_concurrent_batches: 1, ..ServeConfig::default() }));
        let tasks: Vec<_> = ["a", "POISON here", "b", "c"]
            .into_iter()
            .map(|t| {
                let b = b.clone();
                tokio::spawn(async move { b.submit(vec![tokens(3)], vec![t.to_string()]).await })
            })
            .collect();
        let results: Vec<_> = futures_join(tasks).await;
        assert!(matches!(results[1], Err(SubmitError::Backend(BackendError::Poison(_)))), "{:?}", results[1]);
        for i in [0, 2, 3] {
            assert!(results[i].is_ok(), "request {i}: {:?}", results[i]);
        }
    }

    #[tokio::test]
    async fn a_full_queue_is_refused() {
        let fake = Arc::new(Fake::default());
        let config =
            ServeConfig { max_queue: 2, max_concurrent_batches: 1, max_batch_size: 1, ..ServeConfig::default() };
        let b = Arc::new(batcher(fake, config));
        let tasks: Vec<_> = (0..12)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.submit(vec![tokens(1)], vec![]).await })
            })
            .collect();
        let results = futures_join(tasks).await;
        assert!(results.iter().any(|r| matches!(r, Err(SubmitError::Overloaded))));
        assert!(results.iter().any(|r| r.is_ok()));
    }

    async fn futures_join<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
        let mut out = vec![];
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }
}
