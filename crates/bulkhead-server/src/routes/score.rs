//! The cross-encoder path every scoring route shares: checks of the texts, pair tokenization (as transformers
//! tokenizes a pair: the tokenizer's pair template, token type ids, `longest_first` truncation), the model's queue,
//! and the logits back. A rerank of one query and N documents is N pair rows in the same batcher, under the same
//! token budget and the same supervision as embeddings.

use std::time::Instant;

use bulkhead_core::Row;
use bulkhead_embed::{Tokenizer, Truncation};

use super::common::{submit_rows, tokenize_off_runtime, Provenance};
use crate::error::ApiError;
use crate::state::{AppState, ModelEntry};

/// What to score: texts, each alone or with a second text (a pair).
pub struct ScoreJob {
    /// `(text, text_pair)` per row; for a rerank, `(query, document)`.
    pub pairs: Vec<(String, Option<String>)>,
    /// Cut over-long rows on this side (`None`: refuse them with 422).
    pub truncate: Option<Truncation>,
    /// What a row is called in messages (`document`, `input`).
    pub noun: &'static str,
}

/// The logits of every row, with what the response headers need.
pub struct Scored {
    /// One row of logits (one per label) per input row.
    pub logits: Vec<Vec<f32>>,
    /// Who computed them; stage timing with `tokenize_ms`.
    pub provenance: Provenance,
    /// Tokens processed (special tokens included).
    pub tokens: usize,
}

/// Checks, tokenizes, queues and waits.
pub async fn score(
    model: &ModelEntry,
    state: &AppState,
    tokenizer: &Tokenizer,
    job: ScoreJob,
) -> Result<Scored, ApiError> {
    let t0 = Instant::now();
    let noun = job.noun;
    if job.pairs.is_empty() {
        return Err(ApiError::Invalid(format!("there is no {noun}; send at least one")));
    }
    if job.pairs.len() > state.config.max_inputs {
        return Err(ApiError::Invalid(format!(
            "{} {noun}s in one request; the limit is {} (--max-inputs, also called --max-client-batch-size)",
            job.pairs.len(),
            state.config.max_inputs
        )));
    }
    for (i, (a, b)) in job.pairs.iter().enumerate() {
        if a.trim().is_empty() || b.as_deref().is_some_and(|b| b.trim().is_empty()) {
            let side = if b.is_none() {
                ""
            } else if a.trim().is_empty() {
                " (its first text)"
            } else {
                " (its second text)"
            };
            return Err(ApiError::Invalid(format!("{noun} {i}{side} is empty; every text must hold something")));
        }
    }
    let side = job.truncate.unwrap_or_default();
    let (tok, pairs) = (tokenizer.clone(), job.pairs);
    let (encoded, pairs) = tokenize_off_runtime(state, move || {
        let refs: Vec<(&str, Option<&str>)> = pairs.iter().map(|(a, b)| (a.as_str(), b.as_deref())).collect();
        let encoded = tok.encode_pairs(&refs, side).map_err(|e| ApiError::Invalid(e.to_string()));
        (encoded, pairs)
    })
    .await?;
    let encoded = encoded?;
    if job.truncate.is_none() {
        if let Some(i) = encoded.truncated.iter().position(|&t| t) {
            return Err(ApiError::Invalid(format!(
                "{noun} {i}{} is longer than the model's maximum of {} tokens; shorten it or set \"truncate\": true",
                if pairs[i].1.is_some() { " with its pair" } else { "" },
                tokenizer.max_len()
            )));
        }
    }
    let tokens = encoded.rows.iter().map(Row::len).sum();
    let tokenize_ms = t0.elapsed().as_secs_f64() * 1e3;
    state.metrics.stage_ms(&model.name, "tokenize", tokenize_ms);
    // The second text (the document) is what fault rules that match on text see.
    let texts = || pairs.into_iter().map(|(a, b)| b.unwrap_or(a)).collect();
    let computed = submit_rows(model, state, encoded.rows, texts).await?;
    let mut provenance = computed.provenance;
    provenance.timing.tokenize_ms = tokenize_ms;
    Ok(Scored { logits: computed.value, provenance, tokens })
}

/// Indices of `scores` from the best to the worst (ties keep their input order).
pub fn best_first(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_first_is_descending_and_stable() {
        assert_eq!(best_first(&[0.1, 0.9, 0.5, 0.9]), vec![1, 3, 2, 0]);
        assert!(best_first(&[]).is_empty());
    }
}
