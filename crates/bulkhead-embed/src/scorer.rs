//! One loaded cross-encoder session: [`Row::Pair`]s (token ids with token type ids) in, one row of logits per row
//! out.

use std::time::Instant;

use bulkhead_core::{EngineError, ModelFiles, Row, Session, SessionReport, TokenBatch, Unit};

use crate::StageTiming;

/// A session of a reranker or a classifier (a graph whose output is `logits` `[batch, labels]`).
pub struct Scorer {
    session: Box<dyn Session>,
    pad_id: i64,
    labels: usize,
}

impl Scorer {
    /// Wraps a loaded session of `model`, a cross-encoder ([`bulkhead_core::ModelTask::is_cross_encoder`]).
    pub fn new(model: &ModelFiles, session: Box<dyn Session>) -> Scorer {
        Scorer { session, pad_id: model.pad_token_id, labels: model.task.outputs() }
    }

    /// What really runs this scorer.
    pub fn report(&self) -> &SessionReport {
        self.session.report()
    }

    /// The unit that computes.
    pub fn unit(&self) -> Unit {
        self.session.report().unit
    }

    /// Pads the rows to the longest and runs the forward pass: one row of logits (one per label) per row.
    pub fn score(&mut self, rows: &[Row]) -> Result<(Vec<Vec<f32>>, StageTiming), EngineError> {
        let mut timing = StageTiming::default();
        if rows.is_empty() {
            return Ok((vec![], timing));
        }
        let t0 = Instant::now();
        let batch = TokenBatch::from_typed_rows(rows, self.pad_id);
        let out = self.session.forward(&batch)?;
        let failed = |reason: String| EngineError::Inference { unit: self.unit().to_string(), reason };
        if out.shape != [rows.len(), self.labels] {
            return Err(failed(format!(
                "the model answered a tensor of shape {:?}, not logits [{}, {}]: this engine did not run the \
                 classification head",
                out.shape,
                rows.len(),
                self.labels
            )));
        }
        let logits: Vec<Vec<f32>> = out.data.chunks(self.labels).map(<[f32]>::to_vec).collect();
        if let Some(bad) = logits.iter().position(|v| v.iter().any(|x| !x.is_finite())) {
            return Err(failed(format!("row {bad} of the logits is not finite (NaN or infinity)")));
        }
        timing.infer_ms = t0.elapsed().as_secs_f64() * 1e3;
        Ok((logits, timing))
    }
}
