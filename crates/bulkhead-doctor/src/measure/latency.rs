//! Latency and throughput at one batch size: a first, untimed prediction of the shape, then timed ones. The doctor
//! and the bench both measure this way.

use std::time::{Duration, Instant};

use bulkhead_supervisor::ClientError;

use super::worker::Worker;
use super::Batch;
use crate::analyze;
use crate::report::LatencyRow;

/// How many timed predictions: at least `iterations`, and for at least `at_least` of wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    pub iterations: usize,
    pub at_least: Duration,
}

/// A prediction that failed: which one (0 is the first, untimed prediction) and why.
pub type Failed = (usize, ClientError);

/// Measures `batch` (of `size` inputs) on `worker`; `tick(n)` is called after the `n`-th timed prediction.
pub async fn latency_row(
    worker: &mut Worker,
    size: usize,
    batch: &Batch,
    timed: Timed,
    tick: &mut dyn FnMut(usize),
) -> Result<LatencyRow, Failed> {
    let first = worker.predict(batch).await.map_err(|e| (0, e))?.wall_ms;
    let (mut walls, mut engine) = (vec![], vec![]);
    let t0 = Instant::now();
    while walls.len() < timed.iterations || t0.elapsed() < timed.at_least {
        let p = worker.predict(batch).await.map_err(|e| (walls.len() + 1, e))?;
        walls.push(p.wall_ms);
        engine.push(p.engine_ms());
        tick(walls.len());
    }
    Ok(analyze::latency_row(size, batch.seq(), first, &walls, &engine))
}
