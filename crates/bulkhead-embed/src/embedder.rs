//! One loaded session plus the model's pooling and normalisation.

use std::time::Instant;

use bulkhead_core::{EngineError, ModelFiles, Pooling, Row, Session, SessionReport, TokenBatch, Unit};
use serde::{Deserialize, Serialize};

use crate::pooling::{l2_normalize, pool_excluding};

/// Milliseconds spent per stage of one request (the `Server-Timing` stages).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTiming {
    /// Text to token ids.
    pub tokenize_ms: f64,
    /// Waiting for a batch and a worker.
    pub queue_ms: f64,
    /// The engine's forward pass (including padding the batch).
    pub infer_ms: f64,
    /// Pooling and normalisation.
    pub post_ms: f64,
}

/// A session that turns token rows into embeddings.
pub struct Embedder {
    session: Box<dyn Session>,
    pooling: Pooling,
    normalize: bool,
    include_prompt: bool,
    pad_id: i64,
}

impl Embedder {
    /// Wraps a loaded session with `model`'s pooling and normalisation.
    pub fn new(model: &ModelFiles, session: Box<dyn Session>) -> Embedder {
        Embedder {
            session,
            pooling: model.pooling,
            normalize: model.normalize,
            include_prompt: model.include_prompt,
            pad_id: model.pad_token_id,
        }
    }

    /// What really runs this embedder.
    pub fn report(&self) -> &SessionReport {
        self.session.report()
    }

    /// The unit that computes.
    pub fn unit(&self) -> Unit {
        self.session.report().unit
    }

    /// Pads `rows` to the longest, runs the forward pass, pools and normalises: one vector per row.
    pub fn embed_tokens(&mut self, rows: &[Vec<i64>]) -> Result<(Vec<Vec<f32>>, StageTiming), EngineError> {
        self.embed_prompted(rows, &[])
    }

    /// [`Embedder::embed_tokens`] on [`Row`]s: each [`Row::Tokens`] says how many of its leading tokens are a
    /// prompt (see [`Embedder::embed_prompted`]).
    pub fn embed_rows(&mut self, rows: &[Row]) -> Result<(Vec<Vec<f32>>, StageTiming), EngineError> {
        let prompts: Vec<usize> =
            if rows.iter().all(|r| r.prompt() == 0) { vec![] } else { rows.iter().map(Row::prompt).collect() };
        self.embed_prompted(rows, &prompts)
    }

    /// [`Embedder::embed_tokens`] for rows that start with a prompt: `prompt_tokens[row]` leading tokens of each row
    /// are the prompt (an empty slice: no prompt). Pooling leaves them out when the model's pooling excludes prompts
    /// (sentence-transformers `include_prompt: false`) and keeps them otherwise.
    pub fn embed_prompted<R: AsRef<[i64]>>(
        &mut self,
        rows: &[R],
        prompt_tokens: &[usize],
    ) -> Result<(Vec<Vec<f32>>, StageTiming), EngineError> {
        let mut timing = StageTiming::default();
        if rows.is_empty() {
            return Ok((vec![], timing));
        }
        let t0 = Instant::now();
        let batch = TokenBatch::from_rows(rows, self.pad_id, None);
        let states = self.session.forward(&batch)?;
        let t1 = Instant::now();
        let skip = if self.include_prompt { &[][..] } else { prompt_tokens };
        let mut vectors = pool_excluding(&states, &batch, self.pooling, skip)
            .map_err(|reason| EngineError::Inference { unit: self.unit().to_string(), reason })?;
        if self.normalize {
            vectors.iter_mut().for_each(|v| l2_normalize(v));
        }
        if let Some(bad) = vectors.iter().position(|v| v.iter().any(|x| !x.is_finite())) {
            return Err(EngineError::Inference {
                unit: self.unit().to_string(),
                reason: format!("row {bad} of the output is not finite (NaN or infinity)"),
            });
        }
        timing.infer_ms = (t1 - t0).as_secs_f64() * 1e3;
        timing.post_ms = t1.elapsed().as_secs_f64() * 1e3;
        Ok((vectors, timing))
    }
}
