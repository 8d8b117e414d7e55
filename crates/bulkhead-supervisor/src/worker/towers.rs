//! Loading a two-tower image-text model (CLIP, SigLIP) in a worker: both towers on the worker's unit, warmed up on
//! the live text path (the tokenizer's warm-up rows) and the live image path (blank images in the vision tower's
//! shape, batches of 1 and 8), so the watchdog has a latency for both kinds of rows.

use bulkhead_core::{Row, SessionReport, Unit};
use bulkhead_embed::{warmup_rows, Engines, Tokenizer, Towers};

use super::runner::{engine_failure, warm_up, LoadFailure};
use crate::protocol::{LoadFailureKind, WarmupShape};

/// What a health probe runs: token rows through the text tower, then images through the vision tower.
pub(super) type Probe = (Vec<Row>, Vec<Row>);

/// Loads and warms up `model`'s towers on `unit`: the towers, the probe (one token row, one blank image) and the
/// warm-up shapes.
pub(super) fn load(
    engines: &Engines,
    model: &bulkhead_core::ModelFiles,
    unit: &Unit,
    tokenizer: &Tokenizer,
    iterations: usize,
    on_loaded: impl FnOnce(&SessionReport),
) -> Result<(Towers, Probe, Vec<WarmupShape>), LoadFailure> {
    let mut towers = engines.with_engine(unit, |engine| Towers::load(engine, model, unit)).map_err(engine_failure)?;
    on_loaded(towers.report());
    let texts: Vec<Vec<Row>> =
        warmup_rows(tokenizer).into_iter().map(|rows| rows.into_iter().map(Row::tokens).collect()).collect();
    let blank = towers.blank_image();
    let images: Vec<Vec<Row>> = [1usize, 8].iter().map(|&n| vec![blank.clone(); n]).collect();
    let shapes: Vec<Vec<Row>> = texts.iter().chain(&images).cloned().collect();
    let warmup =
        warm_up(&shapes, iterations, Row::len, |rows| towers.embed_rows(rows).map(|_| ()).map_err(|e| e.to_string()))?;
    let Some(text_probe) = texts.into_iter().next() else {
        return Err(LoadFailure::new(LoadFailureKind::Setup, "the tokenizer produced no warm-up rows"));
    };
    Ok((towers, (text_probe, vec![blank]), warmup))
}
