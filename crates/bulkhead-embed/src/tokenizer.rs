//! The model's tokenizer, configured as sentence-transformers uses it: no padding (the batch is padded to its
//! longest row later), truncation at `max_seq_length` tokens including the special tokens.

use std::sync::Arc;

use bulkhead_core::ModelFiles;
use tokenizers::{PaddingParams, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::EmbedError;

/// A loaded tokenizer. Cheap to clone (shared).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    max_len: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("max_len", &self.max_len).finish()
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` of `model`, truncating at the model's `max_seq_length`.
    pub fn load(model: &ModelFiles) -> Result<Tokenizer, EmbedError> {
        let path = model.tokenizer.clone().ok_or_else(|| EmbedError::NoTokenizer { path: model.source.clone() })?;
        let mut inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| EmbedError::BadTokenizer { path: path.clone(), reason: e.to_string() })?;
        inner.with_padding(None::<PaddingParams>);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: model.max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| EmbedError::BadTokenizer { path, reason: e.to_string() })?;
        Ok(Tokenizer { inner: Arc::new(inner), max_len: model.max_seq_length })
    }

    /// Token ids per text, with special tokens, truncated, unpadded.
    pub fn encode(&self, texts: &[String]) -> Result<Vec<Vec<i64>>, EmbedError> {
        let encodings = self
            .inner
            .encode_batch(texts.iter().map(String::as_str).collect::<Vec<_>>(), true)
            .map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        Ok(encodings.iter().map(|e| e.get_ids().iter().map(|&id| id as i64).collect()).collect())
    }

    /// Token ids per text like [`Tokenizer::encode`], each with whether it was truncated (the text had more than
    /// `max_len` tokens).
    pub fn encode_checked(&self, texts: &[String]) -> Result<Vec<(Vec<i64>, bool)>, EmbedError> {
        let encodings = self
            .inner
            .encode_batch(texts.iter().map(String::as_str).collect::<Vec<_>>(), true)
            .map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        Ok(encodings
            .iter()
            .map(|e| (e.get_ids().iter().map(|&id| id as i64).collect(), !e.get_overflowing().is_empty()))
            .collect())
    }

    /// The vocabulary size (token ids must be below it).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The truncation length.
    pub fn max_len(&self) -> usize {
        self.max_len
    }
}

/// Fixed probe sentences: used for the load-time forward pass and for warm-up, so both run real text.
pub fn probe_texts() -> Vec<String> {
    [
        "bulkhead warms up with the same input preparation as live requests.",
        "A short query",
        "The quick brown fox jumps over the lazy dog near the riverbank at dawn.",
        "Which compute unit really computed this answer?",
        "hello",
        "Embeddings map sentences to vectors so that similar meanings land close together in the space.",
        "Neural Engine, GPU or CPU",
        "One more sentence of ordinary length for the batch.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Warm-up batches in live shapes: one row, eight rows and thirty-two rows of varied lengths, tokenized with the
/// live tokenizer settings.
pub fn warmup_rows(tokenizer: &Tokenizer) -> Vec<Vec<Vec<i64>>> {
    let texts = probe_texts();
    let rows = tokenizer.encode(&texts).unwrap_or_default();
    if rows.is_empty() {
        return vec![];
    }
    let cycle = |n: usize| rows.iter().cycle().take(n).cloned().collect::<Vec<_>>();
    vec![cycle(1), cycle(8), cycle(32)]
}
