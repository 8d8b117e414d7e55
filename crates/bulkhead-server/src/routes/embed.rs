//! The embedding path every route shares: prompt, tokenization and its checks, the model's queue, then
//! `dimensions` and normalisation.
//!
//! Prompts are applied as sentence-transformers applies them: the prompt text is prepended to each text before
//! tokenization, and when the model's pooling excludes prompts the worker leaves those leading tokens out of the
//! pooled vector. Token-id inputs with a prompt are decoded to text first (as text-embeddings-inference does).
//! `dimensions` keeps the first N values of each vector (Matryoshka).

use std::time::Instant;

use bulkhead_core::Row;
use bulkhead_embed::{truncate_dims, Truncation};

use super::common::{submit_rows, tokenize_off_runtime, Provenance};
use crate::error::ApiError;
use crate::state::{AppState, ModelEntry};

/// What a handler asks to embed.
#[derive(Debug, Clone, PartialEq)]
pub enum Inputs {
    /// Texts, tokenized here.
    Texts(Vec<String>),
    /// Token ids given by the client.
    Tokens(Vec<Vec<i64>>),
}

/// When vectors are normalised after `dimensions` cut them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalize {
    /// Renormalised when the model normalises (OpenAI, KServe).
    AsModel,
    /// Always (text-embeddings-inference `normalize: true`).
    Always,
    /// Never (text-embeddings-inference `normalize: false`).
    Never,
}

/// One embedding request, whichever route it came from.
#[derive(Debug, Clone)]
pub struct EmbedJob {
    /// The inputs.
    pub inputs: Inputs,
    /// Cut over-long inputs on this side (`None`: refuse them with 422).
    pub truncate: Option<Truncation>,
    /// A prompt text.
    pub prompt: Option<String>,
    /// A named prompt of the model.
    pub prompt_name: Option<String>,
    /// Keep the first N values.
    pub dimensions: Option<usize>,
    /// Normalisation after the cut.
    pub normalize: Normalize,
}

/// The answer, with what the response headers need.
pub struct Embedded {
    /// One vector per input.
    pub vectors: Vec<Vec<f32>>,
    /// Who computed them; stage timing with `tokenize_ms`.
    pub provenance: Provenance,
    /// Tokens processed (prompts and special tokens included).
    pub tokens: usize,
}

/// Prompts, tokenizes (or checks token ids), queues, waits, then cuts and normalises.
pub async fn embed(model: &ModelEntry, state: &AppState, job: EmbedJob) -> Result<Embedded, ApiError> {
    let (tokenizer, native) = model.embedding()?;
    let t0 = Instant::now();
    if let Some(d) = job.dimensions {
        model.files.matryoshka.check(d, native).map_err(ApiError::Invalid)?;
    }
    let prompt = model
        .files
        .prompts
        .resolve(job.prompt.as_deref(), job.prompt_name.as_deref())
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    let max_inputs = state.config.max_inputs;
    let (inputs, truncate, tok) = (job.inputs, job.truncate, tokenizer.clone());
    let (rows, texts) =
        tokenize_off_runtime(state, move || prepare(&tok, inputs, prompt.as_deref(), truncate, max_inputs)).await??;
    let tokens = rows.iter().map(Row::len).sum();
    let tokenize_ms = t0.elapsed().as_secs_f64() * 1e3;
    state.metrics.stage_ms(&model.name, "tokenize", tokenize_ms);
    let computed = submit_rows(model, state, rows, || texts).await?;
    let t1 = Instant::now();
    let mut vectors = computed.value;
    let normalize = match job.normalize {
        Normalize::Always => true,
        Normalize::Never => false,
        Normalize::AsModel => job.dimensions.is_some_and(|d| d < native) && model.files.normalize,
    };
    let dims = job.dimensions.unwrap_or(native);
    if normalize || dims < native {
        vectors.iter_mut().for_each(|v| truncate_dims(v, dims, normalize));
    }
    let mut provenance = computed.provenance;
    provenance.timing.tokenize_ms = tokenize_ms;
    provenance.timing.post_ms += t1.elapsed().as_secs_f64() * 1e3;
    Ok(Embedded { vectors, provenance, tokens })
}

/// The rows of a request's inputs and the texts behind them: texts are prompted and tokenized; token ids are
/// checked, or decoded, prompted and tokenized again when there is a prompt. Runs on the blocking pool.
fn prepare(
    tokenizer: &bulkhead_embed::Tokenizer,
    inputs: Inputs,
    prompt: Option<&str>,
    truncate: Option<Truncation>,
    max_inputs: usize,
) -> Result<(Vec<Row>, Vec<String>), ApiError> {
    match inputs {
        Inputs::Texts(texts) => {
            check_count(texts.len(), max_inputs)?;
            Ok((encode(tokenizer, &texts, prompt, truncate)?, texts))
        }
        Inputs::Tokens(rows) => {
            check_count(rows.len(), max_inputs)?;
            check_ids(&rows, tokenizer.vocab_size(), tokenizer.max_len())?;
            match prompt {
                None => Ok((rows.into_iter().map(Row::tokens).collect(), vec![])),
                // With a prompt, token ids are decoded and the prompted text tokenized again.
                Some(p) => {
                    let texts = rows
                        .iter()
                        .map(|r| tokenizer.decode(r))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| ApiError::Invalid(e.to_string()))?;
                    Ok((encode(tokenizer, &texts, Some(p), Some(Truncation::Right))?, texts))
                }
            }
        }
    }
}

/// Tokenizes `prompt + text` for each text into token rows that carry the prompt's length; over-long texts are cut
/// on the `truncate` side or refused.
fn encode(
    tokenizer: &bulkhead_embed::Tokenizer,
    texts: &[String],
    prompt: Option<&str>,
    truncate: Option<Truncation>,
) -> Result<Vec<Row>, ApiError> {
    let side = truncate.unwrap_or_default();
    let encoded = tokenizer.encode_prompted(texts, prompt, side).map_err(|e| ApiError::Invalid(e.to_string()))?;
    if let Some(i) = encoded.truncated.iter().position(|&t| t) {
        let max = tokenizer.max_len();
        if truncate.is_none() {
            return Err(ApiError::Invalid(format!(
                "input {i} is longer than the model's maximum of {max} tokens{}; shorten it or set \"truncate\": true",
                if prompt.is_some() { " (its prompt included)" } else { "" }
            )));
        }
        if side == Truncation::Left && prompt.is_some() {
            return Err(ApiError::Invalid(format!(
                "input {i} is longer than the model's maximum of {max} tokens and truncating it from the left would \
                 cut its prompt; shorten it or truncate from the right"
            )));
        }
    }
    Ok(encoded.rows)
}

fn check_ids(rows: &[Vec<i64>], vocab: usize, max: usize) -> Result<(), ApiError> {
    for (i, row) in rows.iter().enumerate() {
        if row.is_empty() {
            return Err(ApiError::Invalid(format!("input {i} is an empty token array")));
        }
        if row.len() > max {
            return Err(ApiError::Invalid(format!("input {i} has {} tokens; the model's maximum is {max}", row.len())));
        }
        if let Some(bad) = row.iter().find(|&&t| t < 0 || t >= vocab as i64) {
            return Err(ApiError::Invalid(format!(
                "input {i} holds token id {bad}, outside the model's vocabulary of {vocab}"
            )));
        }
    }
    Ok(())
}

fn check_count(n: usize, max_inputs: usize) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::Invalid("the input is empty; send at least one text".into()));
    }
    if n > max_inputs {
        return Err(ApiError::Invalid(format!(
            "{n} inputs in one request; the limit is {max_inputs} (--max-inputs, also called --max-client-batch-size)"
        )));
    }
    Ok(())
}
