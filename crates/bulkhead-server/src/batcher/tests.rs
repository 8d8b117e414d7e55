//! The batcher against a fake backend: batching, scattering back, kinds, poison, the queue bound, length grouping
//! and the short requests' slot.
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::api::units::{Isolation, ModelUnits};
use crate::backend::{BoxFuture, Payload};

/// Answers each row with its length after a delay (20 ms unless `delay` says); a job whose text contains POISON
/// fails as poison.
#[derive(Default)]
struct Fake {
    delay: Option<Duration>,
    /// When each call started, with its longest row.
    starts: Mutex<Vec<(usize, Instant)>>,
    batches: Mutex<Vec<usize>>,
    /// The row kinds of each call.
    kinds: Mutex<Vec<Vec<RowKind>>>,
    /// The row lengths of each call.
    lengths: Mutex<Vec<Vec<usize>>>,
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
            let lengths = jobs.iter().filter_map(|j| match &j.payload {
                Payload::Rows(rows) => Some(rows.iter().map(Row::len)),
                _ => None,
            });
            let lengths: Vec<usize> = lengths.flatten().collect();
            self.starts.lock().unwrap().push((lengths.iter().copied().max().unwrap_or(0), Instant::now()));
            self.lengths.lock().unwrap().push(lengths);
            tokio::time::sleep(self.delay.unwrap_or(Duration::from_millis(20))).await;
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
                        worker_pid: Some(7),
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
            memory_ceiling: None,
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
    let config = ServeConfig { max_queue: 2, max_concurrent_batches: 1, max_batch_size: 1, ..ServeConfig::default() };
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

/// A blocker occupies the only batch slot; then 24 short requests and one long one queue and form one batch.
async fn short_and_long(grouping: Grouping) -> (Arc<Fake>, Vec<JobOutput>) {
    let fake = Arc::new(Fake::default());
    // Every request is short here: this is about the grouping inside one batch.
    let config = ServeConfig { max_concurrent_batches: 1, grouping, long_row_tokens: None, ..ServeConfig::default() };
    let b = Arc::new(batcher(fake.clone(), config));
    let blocker = {
        let b = b.clone();
        tokio::spawn(async move { b.submit(vec![tokens(5)], vec![]).await })
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    let tasks: Vec<_> = (0..25usize)
        .map(|i| {
            let b = b.clone();
            let n = if i == 12 { 256 } else { 10 + i % 4 };
            tokio::spawn(async move { b.submit(vec![tokens(n)], vec![]).await.unwrap() })
        })
        .collect();
    blocker.await.unwrap().unwrap();
    (fake, futures_join(tasks).await)
}

#[tokio::test]
async fn a_long_row_runs_in_its_own_pass_and_each_answer_is_its_own() {
    let (fake, outs) = short_and_long(Grouping::default()).await;
    for (i, out) in outs.iter().enumerate() {
        let n = if i == 12 { 256 } else { 10 + i % 4 };
        assert_eq!(out.vectors, vec![vec![n as f32]], "request {i}");
        assert_eq!(out.shape.rows, if i == 12 { 1 } else { 24 }, "request {i}: {:?}", out.shape);
    }
    let passes = fake.lengths.lock().unwrap().clone();
    assert_eq!(passes.len(), 3, "the blocker, the short rows, the long one: {passes:?}");
    assert_eq!(passes[2], vec![256]);
    assert!(passes[1].iter().all(|&n| (10..14).contains(&n)) && passes[1].len() == 24, "{passes:?}");
    // The short pass pads 24 rows of 10-13 tokens to 13; the answer says so.
    let short = outs[0].shape;
    assert_eq!((short.real, short.padded), (6 * (10 + 11 + 12 + 13), 24 * 13));
}

#[tokio::test]
async fn without_grouping_the_batch_is_padded_to_its_longest_row() {
    let (fake, outs) = short_and_long(Grouping::OFF).await;
    let passes = fake.lengths.lock().unwrap().clone();
    assert_eq!(passes.len(), 2, "{passes:?}");
    assert_eq!(passes[1].len(), 25);
    assert!(outs.iter().all(|o| o.shape.padded == 25 * 256), "{:?}", outs[0].shape);
}

#[tokio::test]
async fn rows_of_one_request_in_different_passes_come_back_in_order() {
    let fake = Arc::new(Fake::default());
    let b = batcher(fake.clone(), ServeConfig::default());
    let lengths = [200, 3, 90, 4, 3, 150];
    let out = b.submit(lengths.iter().map(|&n| tokens(n)).collect(), vec![]).await.unwrap();
    assert_eq!(out.vectors, lengths.iter().map(|&n| vec![n as f32]).collect::<Vec<_>>());
    assert!(fake.lengths.lock().unwrap().len() > 1, "the request's rows were grouped");
    assert_eq!(out.shape.rows, 6);
    assert_eq!(out.shape.real, lengths.iter().sum::<usize>());
}

#[tokio::test]
async fn a_short_request_passes_long_ones_waiting_for_a_slot() {
    for long_rows in [Some(128), None] {
        // Passes take 300 ms: the order of events below does not depend on the machine's speed.
        let fake = Arc::new(Fake { delay: Some(Duration::from_millis(300)), ..Fake::default() });
        let config = ServeConfig { max_concurrent_batches: 1, long_row_tokens: long_rows, ..ServeConfig::default() };
        let b = Arc::new(batcher(fake.clone(), config));
        let send = |n: usize| {
            let b = b.clone();
            tokio::spawn(async move {
                b.submit(vec![tokens(n)], vec![]).await.unwrap();
                Instant::now()
            })
        };
        // The first long request takes the only batch slot; the second waits for it; then a short one comes.
        let first = send(256);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = send(250);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let short = send(10);
        let (first, second, short) = (first.await.unwrap(), second.await.unwrap(), short.await.unwrap());
        let starts = fake.starts.lock().unwrap().clone();
        let start = |n: usize| starts.iter().find(|(len, _)| *len == n).map(|(_, t)| *t).unwrap();
        if long_rows.is_some() {
            assert!(start(10) < first, "the short request runs beside the first long one");
            assert!(short < second, "and is answered before the long one it passed");
            assert!(start(250) >= first, "the held long request takes the next free slot");
        } else {
            assert!(start(10) >= first, "without the limit, the short request waits for the slot");
            assert!(start(250) >= first);
        }
    }
}

#[tokio::test]
async fn a_held_long_request_takes_the_next_free_slot_before_waiting_short_ones() {
    // Passes take 400 ms; one batch slot and the slot of short requests.
    let fake = Arc::new(Fake { delay: Some(Duration::from_millis(400)), ..Fake::default() });
    let config = ServeConfig { max_concurrent_batches: 1, ..ServeConfig::default() };
    let b = Arc::new(batcher(fake.clone(), config));
    let send = |n: usize| {
        let b = b.clone();
        tokio::spawn(async move { b.submit(vec![tokens(n)], vec![]).await.unwrap() })
    };
    // t=0: a long request takes the slot (until 400); t=20: another is held; t=100: a short one takes the
    // short slot (until 500); t=150: a second short one waits. At 400 the slot is the held long request's.
    let mut tasks = vec![send(256)];
    for (at, n) in [(20, 250), (80, 10), (50, 11)] {
        tokio::time::sleep(Duration::from_millis(at)).await;
        tasks.push(send(n));
    }
    futures_join(tasks).await;
    let starts = fake.starts.lock().unwrap().clone();
    let order: Vec<usize> = starts.iter().map(|(n, _)| *n).collect();
    assert_eq!(order, vec![256, 10, 250, 11], "the held long request is not starved by short ones");
}

async fn futures_join<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = vec![];
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}
