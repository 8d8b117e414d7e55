//! The segmentation side of a worker: a SAM2 model loaded on an `ort:` unit (its two graphs, built and cached by
//! bulkhead-graph, or an ONNX community pair), warmed up on a grey image, answering [`SegmentJob`]s with the
//! image embeddings of recent images cached by content id (`BULKHEAD_IMAGE_CACHE_MB`, default 256 MiB).

use std::time::Instant;

use bulkhead_core::{EngineKind, ModelFiles, SessionReport, Unit};
use bulkhead_embed::{Engines, StageTiming};
use bulkhead_segment::{LoadError, RunFailure, Sam2, SegmentJob, SegmentOutput, IMAGE_CACHE_ENV};

use super::runner::LoadFailure;
use crate::payload::Answer;
use crate::protocol::{LoadFailureKind, RunError, WarmupShape};

/// The embedding cache's budget when `BULKHEAD_IMAGE_CACHE_MB` is unset.
const DEFAULT_CACHE_MB: usize = 256;

fn cache_bytes() -> usize {
    let mb = std::env::var(IMAGE_CACHE_ENV).ok().and_then(|v| v.trim().parse::<usize>().ok());
    mb.unwrap_or(DEFAULT_CACHE_MB).saturating_mul(1 << 20)
}

fn load_failure(e: LoadError) -> LoadFailure {
    let kind = match &e {
        LoadError::Engine(engine) => LoadFailureKind::from(engine),
        LoadError::NotSam2(_) | LoadError::Graph(_) | LoadError::Files(_) => LoadFailureKind::ModelRejected,
        LoadError::Preprocessor { .. } => LoadFailureKind::Setup,
    };
    LoadFailure { kind, reason: e.to_string() }
}

/// Loads and warms up the SAM2 model on `unit`: `iterations` encoder + decoder runs, the median recorded as two
/// warm-up shapes (the decoder alone, width 1; the encoder and the decoder, width = the input side), the shape
/// classes the watchdog keys [`Payload::Segment`](crate::payload::Payload::Segment) predictions by.
pub(super) fn load(
    engines: &Engines,
    model: &ModelFiles,
    unit: &Unit,
    iterations: usize,
    on_loaded: impl FnOnce(&SessionReport),
) -> Result<(Sam2, Vec<WarmupShape>), LoadFailure> {
    if unit.engine != EngineKind::Ort {
        return Err(LoadFailure {
            kind: LoadFailureKind::Unsupported,
            reason: format!(
                "{unit} does not run SAM2: segmentation runs on the ort: units (ONNX Runtime); put an ort: unit in \
                 the chain"
            ),
        });
    }
    let cache_dir = bulkhead_core::install::cache_dir().join("graphs");
    let mut sam2 =
        Sam2::load(model, &cache_dir, cache_bytes(), |m| engines.load_graph(m, unit)).map_err(load_failure)?;
    on_loaded(sam2.report());
    let (mut encode, mut decode) = (vec![], vec![]);
    for _ in 0..iterations.max(1) {
        let (e, d) = sam2
            .warm_up()
            .map_err(|e| LoadFailure { kind: LoadFailureKind::Inference, reason: format!("warm-up failed: {e}") })?;
        encode.push(e + d);
        decode.push(d);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let side = sam2.input_side() as usize;
    tracing::info!(
        "SAM2 on {unit}: graphs from {}, {side}x{side} input, embedding cache {} MiB",
        sam2.files().origin,
        cache_bytes() >> 20
    );
    let warmup = vec![
        WarmupShape { batch: 1, seq: 1, ms: median(decode) },
        WarmupShape { batch: 1, seq: side, ms: median(encode) },
    ];
    Ok((sam2, warmup))
}

fn run_error(e: RunFailure) -> RunError {
    match e {
        RunFailure::Input(m) => RunError::Unsupported(m),
        RunFailure::Engine(e) => RunError::Engine(e.to_string()),
    }
}

fn timing(started: Instant) -> StageTiming {
    StageTiming { infer_ms: started.elapsed().as_secs_f64() * 1e3, ..StageTiming::default() }
}

/// One segmentation job.
pub(super) fn run(sam2: &mut Sam2, job: &SegmentJob) -> Result<(Answer, StageTiming), RunError> {
    let t = Instant::now();
    let out = sam2.run(job).map_err(run_error)?;
    Ok((Answer::Segment(out), timing(t)))
}

/// A health probe: the decoder on the warm-up image's embeddings.
pub(super) fn probe(sam2: &mut Sam2) -> Result<(Answer, StageTiming), RunError> {
    let t = Instant::now();
    let masks = sam2.probe().map_err(run_error)?;
    Ok((Answer::Segment(SegmentOutput::Masks(masks)), timing(t)))
}
