//! The model's tokenizer, configured as sentence-transformers uses it: no padding (the batch is padded to its
//! longest row later), truncation at `max_seq_length` tokens including the special tokens.

use std::sync::{Arc, OnceLock};

use bulkhead_core::{ModelFiles, Row};
use tokenizers::{PaddingParams, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::EmbedError;

/// Inputs tokenized for the model: one [`Row`] per input, in the shape the worker takes ([`Row::Tokens`] with
/// its prompt length, or [`Row::Pair`] for a cross-encoder).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Encoded {
    /// One row per input: special tokens included, truncated at `max_len`, unpadded.
    pub rows: Vec<Row>,
    /// Whether each input had more than `max_len` tokens (and was cut).
    pub truncated: Vec<bool>,
    /// How many leading tokens of every row the prompt takes (0 without a prompt), counted as
    /// sentence-transformers counts them: the prompt tokenized alone, without its trailing special token. Each
    /// [`Row::Tokens`] carries it too.
    pub prompt_tokens: usize,
}

/// Which end of an over-long input truncation cuts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Truncation {
    /// Cut the end, keep the start (sentence-transformers' way).
    #[default]
    Right,
    /// Cut the start, keep the end.
    Left,
}

/// A loaded tokenizer. Cheap to clone (shared).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    /// The same tokenizer truncating from the left, made on first use.
    left: Arc<OnceLock<tokenizers::Tokenizer>>,
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
        Ok(Tokenizer { inner: Arc::new(inner), left: Arc::default(), max_len: model.max_seq_length })
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

    /// Token ids and token type ids of each (query, document) pair, as transformers tokenizes a pair for a
    /// cross-encoder: the tokenizer's pair template (`[CLS] a [SEP] b [SEP]`, type ids 0 then 1 for BERT), truncated
    /// `longest_first` at the maximum length from the `side` end; each with whether it was cut. `None` as the second
    /// text gives a single-text row (a classifier's input).
    pub fn encode_pairs(&self, pairs: &[(&str, Option<&str>)], side: Truncation) -> Result<Encoded, EmbedError> {
        use tokenizers::EncodeInput;
        let inputs: Vec<EncodeInput<'_>> = pairs
            .iter()
            .map(|&(a, b)| match b {
                Some(b) => EncodeInput::Dual(a.into(), b.into()),
                None => EncodeInput::Single(a.into()),
            })
            .collect();
        let encodings =
            self.truncating(side).encode_batch(inputs, true).map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        Ok(Encoded {
            rows: encodings
                .iter()
                .map(|e| Row::Pair {
                    ids: e.get_ids().iter().map(|&id| id as i64).collect(),
                    type_ids: e.get_type_ids().iter().map(|&t| t as i64).collect(),
                })
                .collect(),
            truncated: encodings.iter().map(|e| !e.get_overflowing().is_empty()).collect(),
            prompt_tokens: 0,
        })
    }

    /// Token ids of `prompt + text` for each text: as sentence-transformers applies a prompt, its text is prepended
    /// to the input before tokenization (so truncation counts it too).
    pub fn encode_prompted(
        &self,
        texts: &[String],
        prompt: Option<&str>,
        side: Truncation,
    ) -> Result<Encoded, EmbedError> {
        let prompt = prompt.filter(|p| !p.is_empty());
        let tok = self.truncating(side);
        let encodings = match prompt {
            None => tok.encode_batch(texts.iter().map(String::as_str).collect::<Vec<_>>(), true),
            Some(p) => tok.encode_batch(texts.iter().map(|t| format!("{p}{t}")).collect::<Vec<_>>(), true),
        }
        .map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        let prompt_tokens = match prompt {
            None => 0,
            Some(p) => self.prompt_len(p)?,
        };
        Ok(Encoded {
            rows: encodings
                .iter()
                .map(|e| Row::Tokens { ids: e.get_ids().iter().map(|&id| id as i64).collect(), prompt: prompt_tokens })
                .collect(),
            truncated: encodings.iter().map(|e| !e.get_overflowing().is_empty()).collect(),
            prompt_tokens,
        })
    }

    /// The tokens `prompt` takes at the start of a row: tokenized alone, minus its last token when that one is a
    /// special token the tokenizer appends (`[SEP]`, `</s>`, `<|endoftext|>`).
    pub fn prompt_len(&self, prompt: &str) -> Result<usize, EmbedError> {
        let e = self.inner.encode(prompt, true).map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        let trailing_special = e.get_special_tokens_mask().last() == Some(&1);
        Ok(e.len() - usize::from(trailing_special))
    }

    /// The text of token ids, special tokens left out (ids must be below [`Tokenizer::vocab_size`]).
    pub fn decode(&self, ids: &[i64]) -> Result<String, EmbedError> {
        let ids: Vec<u32> = ids.iter().map(|&id| u32::try_from(id).unwrap_or(u32::MAX)).collect();
        self.inner.decode(&ids, true).map_err(|e| EmbedError::Tokenize(e.to_string()))
    }

    fn truncating(&self, side: Truncation) -> &tokenizers::Tokenizer {
        match side {
            Truncation::Right => &self.inner,
            Truncation::Left => self.left.get_or_init(|| {
                let mut t = (*self.inner).clone();
                let params = TruncationParams {
                    max_length: self.max_len,
                    strategy: TruncationStrategy::LongestFirst,
                    stride: 0,
                    direction: TruncationDirection::Left,
                };
                // The same parameters but the side were accepted at load, so this cannot fail.
                let _ = t.with_truncation(Some(params));
                t
            }),
        }
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

/// Warm-up batches of a cross-encoder in live shapes: one, eight and thirty-two (query, probe sentence) pairs.
pub fn warmup_pairs(tokenizer: &Tokenizer) -> Vec<Vec<Row>> {
    let texts = probe_texts();
    let pairs: Vec<(&str, Option<&str>)> = texts.iter().map(|t| (texts[3].as_str(), Some(t.as_str()))).collect();
    let rows = tokenizer.encode_pairs(&pairs, Truncation::Right).unwrap_or_default().rows;
    if rows.is_empty() {
        return vec![];
    }
    let cycle = |n: usize| rows.iter().cycle().take(n).cloned().collect::<Vec<_>>();
    vec![cycle(1), cycle(8), cycle(32)]
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
