//! Walking a chain at load time: the first unit that loads and passes a real forward pass serves.

use std::time::Instant;

use bulkhead_core::{Availability, Chain, ModelFiles, Unit};
use serde::Serialize;

use crate::{probe_texts, warmup_pairs, Embedder, Engines, Scorer, Tokenizer};

/// A unit of the chain that was not used, and why.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedUnit {
    /// The unit.
    pub unit: Unit,
    /// The engine's classification ([`bulkhead_core::EngineError::kind`]).
    pub kind: String,
    /// The reason, in words.
    pub reason: String,
}

/// The result of walking a chain.
pub struct LoadedChain {
    /// The serving embedder.
    pub embedder: Embedder,
    /// Units before it that were skipped, in chain order.
    pub skipped: Vec<SkippedUnit>,
    /// Milliseconds spent loading the serving unit (session creation only).
    pub load_ms: f64,
}

/// No unit of the chain could serve.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no unit of the chain `{chain}` can run this model: {}", .skipped.iter().map(|s| s.reason.as_str()).collect::<Vec<_>>().join("; "))]
pub struct ChainError {
    /// The chain.
    pub chain: String,
    /// Every unit's reason.
    pub skipped: Vec<SkippedUnit>,
}

/// Tries each unit of `chain` in order: availability, load, then a real forward pass on probe sentences whose
/// output must be finite. Each skipped unit is logged with its reason.
pub fn load_chain(
    engines: &Engines,
    model: &ModelFiles,
    tokenizer: &Tokenizer,
    chain: &Chain,
) -> Result<LoadedChain, ChainError> {
    let probe = tokenizer.encode(&probe_texts()).unwrap_or_default();
    let (embedder, skipped, load_ms) = walk(engines, model, chain, |session| {
        let mut embedder = Embedder::new(model, session);
        embedder.embed_tokens(&probe).map(|_| embedder)
    })?;
    Ok(LoadedChain { embedder, skipped, load_ms })
}

/// A cross-encoder loaded on the first unit of a chain that runs it: [`load_chain`] for rerankers and classifiers,
/// the forward pass made of (query, probe sentence) pairs.
pub struct LoadedScorer {
    /// The serving scorer.
    pub scorer: Scorer,
    /// Units before it that were skipped, in chain order.
    pub skipped: Vec<SkippedUnit>,
    /// Milliseconds spent loading the serving unit (session creation only).
    pub load_ms: f64,
}

/// [`load_chain`] for a cross-encoder.
pub fn load_scorer_chain(
    engines: &Engines,
    model: &ModelFiles,
    tokenizer: &Tokenizer,
    chain: &Chain,
) -> Result<LoadedScorer, ChainError> {
    // A sparse (SPLADE) model's first pass is on texts, as its live rows are.
    let shapes = if model.task.is_sparse() { crate::warmup_texts(tokenizer) } else { warmup_pairs(tokenizer) };
    let rows = shapes.into_iter().nth(1).unwrap_or_default();
    let (scorer, skipped, load_ms) = walk(engines, model, chain, |session| {
        let mut scorer = Scorer::new(model, session);
        scorer.score(&rows).map(|_| scorer)
    })?;
    Ok(LoadedScorer { scorer, skipped, load_ms })
}

/// Walks the chain: the first unit whose session `first_pass` accepts serves.
fn walk<T>(
    engines: &Engines,
    model: &ModelFiles,
    chain: &Chain,
    mut first_pass: impl FnMut(Box<dyn bulkhead_core::Session>) -> Result<T, bulkhead_core::EngineError>,
) -> Result<(T, Vec<SkippedUnit>, f64), ChainError> {
    let mut skipped = vec![];
    for unit in chain.units() {
        let skip = |kind: &str, reason: String| {
            tracing::warn!(unit = %unit, kind, "skipping {unit}: {reason}");
            SkippedUnit { unit: *unit, kind: kind.to_string(), reason }
        };
        match engines.availability(unit) {
            Availability::Usable => {}
            Availability::NotCompiled(r) => {
                skipped.push(skip("not_compiled", format!("{unit} is not compiled into this build: {r}")));
                continue;
            }
            Availability::Unusable(r) => {
                skipped.push(skip("unusable", format!("{unit} is unusable here: {r}")));
                continue;
            }
        }
        let t0 = Instant::now();
        let session = match engines.load(model, unit) {
            Ok(s) => s,
            Err(e) => {
                skipped.push(skip(e.kind(), e.to_string()));
                continue;
            }
        };
        let load_ms = t0.elapsed().as_secs_f64() * 1e3;
        match first_pass(session) {
            Ok(loaded) => {
                tracing::info!(unit = %unit, load_ms, "{unit} loaded and passed a forward pass");
                return Ok((loaded, skipped, load_ms));
            }
            Err(e) => skipped.push(skip("inference", format!("{unit} failed its first forward pass: {e}"))),
        }
    }
    Err(ChainError { chain: chain.to_string(), skipped })
}
