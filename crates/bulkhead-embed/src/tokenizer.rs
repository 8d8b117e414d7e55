//! The model's tokenizer, configured as sentence-transformers uses it: no padding (the batch is padded to its
//! longest row later), truncation at `max_seq_length` tokens including the special tokens.
//!
//! Every text is tokenized from a bounded window (the `bound` module): the tokens, and whether the text was
//! longer than the maximum, are those of full tokenization, at a cost that does not grow with the text.

use std::sync::{Arc, OnceLock};

use bulkhead_core::{ModelFiles, Row};
use tokenizers::{Encoding, PaddingParams, PostProcessor, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::bound::{Bounder, Window};
use crate::EmbedError;

/// The ids of an encoding, as the engines take them.
fn ids(e: &Encoding) -> Vec<i64> {
    e.get_ids().iter().map(|&id| id as i64).collect()
}

fn tokenize_error(e: tokenizers::Error) -> EmbedError {
    EmbedError::Tokenize(e.to_string())
}

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

/// A loaded tokenizer. Cheap to clone (shared), `Send + Sync`: every method is a plain blocking call whose cost is
/// bounded per text (see [`Tokenizer::cost_bound`]), fit for a blocking thread pool.
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    /// The same tokenizer truncating from the left, made on first use.
    left: Arc<OnceLock<tokenizers::Tokenizer>>,
    /// The same tokenizer without truncation: the first stage (normalise, pre-tokenize, model) of a window.
    probe: Arc<tokenizers::Tokenizer>,
    bounder: Arc<Bounder>,
    max_len: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("max_len", &self.max_len).field("unbounded", &self.bounder.unbounded).finish()
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` of `model`, truncating at the model's `max_seq_length`.
    pub fn load(model: &ModelFiles) -> Result<Tokenizer, EmbedError> {
        let path = model.tokenizer.clone().ok_or_else(|| EmbedError::NoTokenizer { path: model.source.clone() })?;
        let mut inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| EmbedError::BadTokenizer { path: path.clone(), reason: e.to_string() })?;
        inner.with_padding(None::<PaddingParams>);
        let mut probe = inner.clone();
        probe
            .with_truncation(None)
            .map_err(|e| EmbedError::BadTokenizer { path: path.clone(), reason: e.to_string() })?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: model.max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| EmbedError::BadTokenizer { path, reason: e.to_string() })?;
        let bounder = Bounder::new(&inner);
        if let Some(why) = &bounder.unbounded {
            tracing::warn!(
                "the tokenizer has a {why} that bulkhead has not analysed: texts are tokenized whole, so a long text \
                 costs CPU in proportion to its length"
            );
        }
        Ok(Tokenizer {
            inner: Arc::new(inner),
            left: Arc::default(),
            probe: Arc::new(probe),
            bounder: Arc::new(bounder),
            max_len: model.max_seq_length,
        })
    }

    /// The most bytes of one text any method tokenizes, or `None` when texts are tokenized whole (a tokenizer
    /// component outside the analysed set, named in a warning at load). Past the window a text may still be
    /// scanned once without tokenization (WordPiece compaction, a few milliseconds for megabytes).
    pub fn cost_bound(&self) -> Option<usize> {
        self.bounder.unbounded.is_none().then(|| Bounder::window_limit(self.budget(true).max(self.budget(false)) + 1))
    }

    /// Token ids per text, with special tokens, truncated, unpadded.
    pub fn encode(&self, texts: &[String]) -> Result<Vec<Vec<i64>>, EmbedError> {
        Ok(self.encode_checked(texts)?.into_iter().map(|(ids, _)| ids).collect())
    }

    /// Token ids per text like [`Tokenizer::encode`], each with whether it was truncated (the text had more than
    /// `max_len` tokens).
    pub fn encode_checked(&self, texts: &[String]) -> Result<Vec<(Vec<i64>, bool)>, EmbedError> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let e = self.single(i, "", t, Truncation::Right)?;
                Ok((ids(&e), !e.get_overflowing().is_empty()))
            })
            .collect()
    }

    /// Token ids and token type ids of each (query, document) pair, as transformers tokenizes a pair for a
    /// cross-encoder: the tokenizer's pair template (`[CLS] a [SEP] b [SEP]`, type ids 0 then 1 for BERT), truncated
    /// `longest_first` at the maximum length from the `side` end; each with whether it was cut. `None` as the second
    /// text gives a single-text row (a classifier's input).
    ///
    /// Each text is read only as far as its tokens can reach the model (see the `bound` module). One case is
    /// decided without counting every token: when both texts are longer than the pair's token budget and the
    /// budget is odd, the text that keeps the odd token (the one with more tokens, the second on a tie) is the one
    /// with more bytes.
    pub fn encode_pairs(&self, pairs: &[(&str, Option<&str>)], side: Truncation) -> Result<Encoded, EmbedError> {
        let rows: Vec<(Row, bool)> = pairs
            .iter()
            .enumerate()
            .map(|(i, &(a, b))| {
                let e = match b {
                    None => self.single(i, "", a, side)?,
                    Some(b) => {
                        let (ea, eb) = self.pair_stage(i, a, b, side)?;
                        self.truncating(side).post_process(ea, Some(eb), true).map_err(tokenize_error)?
                    }
                };
                let row = Row::Pair { ids: ids(&e), type_ids: e.get_type_ids().iter().map(|&t| t as i64).collect() };
                Ok((row, !e.get_overflowing().is_empty()))
            })
            .collect::<Result<_, EmbedError>>()?;
        let (rows, truncated) = rows.into_iter().unzip();
        Ok(Encoded { rows, truncated, prompt_tokens: 0 })
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
        let encodings: Vec<Encoding> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| self.single(i, prompt.unwrap_or(""), t, side))
            .collect::<Result<_, _>>()?;
        let prompt_tokens = match prompt {
            None => 0,
            Some(p) => self.prompt_len(p)?,
        };
        Ok(Encoded {
            rows: encodings.iter().map(|e| Row::Tokens { ids: ids(e), prompt: prompt_tokens }).collect(),
            truncated: encodings.iter().map(|e| !e.get_overflowing().is_empty()).collect(),
            prompt_tokens,
        })
    }

    /// The final encoding of `head + text` (special tokens, truncated on `side`) from a bounded window.
    fn single(&self, input: usize, head: &str, text: &str, side: Truncation) -> Result<Encoding, EmbedError> {
        let (enc, _) = self.first_stage(input, head, text, self.budget(false) + 1, side)?;
        self.truncating(side).post_process(enc, None, true).map_err(tokenize_error)
    }

    /// The first-stage encodings of a pair, each read far enough that `longest_first` truncation cuts them as it
    /// cuts the full texts: at least one token past the pair's budget, and (for an odd budget, where the longer
    /// text keeps the odd token) far enough to tell which text is longer where one of them is read whole. Where
    /// both are cut, the longer in bytes is taken as the longer.
    fn pair_stage(&self, input: usize, a: &str, b: &str, side: Truncation) -> Result<(Encoding, Encoding), EmbedError> {
        let budget = self.budget(true);
        let (mut ea, cut_a) = self.first_stage(input, "", a, budget + 1, side)?;
        let (mut eb, cut_b) = self.first_stage(input, "", b, budget + 1, side)?;
        if budget % 2 == 1 {
            let dir = match side {
                Truncation::Right => TruncationDirection::Right,
                Truncation::Left => TruncationDirection::Left,
            };
            if cut_a && cut_b {
                // Both are longer than the budget, so each keeps half and only their order matters: the longer
                // keeps the odd token, the second text on a tie. Both keep more than half when cut to these.
                let b_len = if a.len() > b.len() { budget } else { budget + 1 };
                ea.truncate(budget + 1, 0, dir);
                eb.truncate(b_len, 0, dir);
            } else if cut_a && ea.len() <= eb.len() {
                (ea, _) = self.first_stage(input, "", a, eb.len() + 1, side)?;
            } else if cut_b && eb.len() <= ea.len() {
                (eb, _) = self.first_stage(input, "", b, ea.len() + 1, side)?;
            }
        }
        Ok((ea, eb))
    }

    /// Normalises, pre-tokenizes and tokenizes the window of `head + text` that holds its first (or last) `need`
    /// tokens, without special tokens or truncation; with whether the text was cut.
    fn first_stage(
        &self,
        input: usize,
        head: &str,
        text: &str,
        need: usize,
        side: Truncation,
    ) -> Result<(Encoding, bool), EmbedError> {
        let window = self.bounder.window(&self.probe, head, text, need, side).map_err(|e| match e {
            EmbedError::Unbounded { window, need, .. } => EmbedError::Unbounded { input, window, need },
            e => e,
        })?;
        match window {
            Window::Cut(enc) => Ok((*enc, true)),
            Window::Whole(t) => {
                let t: std::borrow::Cow<'_, str> = if head.is_empty() { t } else { format!("{head}{t}").into() };
                Ok((self.probe.encode(t.as_ref(), false).map_err(tokenize_error)?, false))
            }
        }
    }

    /// The content tokens a single text (or a pair) may have: the maximum length less the special tokens.
    fn budget(&self, pair: bool) -> usize {
        let added = self.inner.get_post_processor().map_or(0, |p| p.added_tokens(pair));
        self.max_len.saturating_sub(added)
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

    /// The same tokenizer without truncation or padding (for `tokens.rs`: every token of a text, its offsets).
    pub(crate) fn untruncated(&self) -> &tokenizers::Tokenizer {
        &self.probe
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

/// [`warmup_pairs`] of single texts (each a [`Row::Pair`] with type ids 0): the rows of a sparse (SPLADE) model,
/// tokenized as its live texts are.
pub fn warmup_texts(tokenizer: &Tokenizer) -> Vec<Vec<Row>> {
    let texts = probe_texts();
    let singles: Vec<(&str, Option<&str>)> = texts.iter().map(|t| (t.as_str(), None)).collect();
    let rows = tokenizer.encode_pairs(&singles, Truncation::Right).unwrap_or_default().rows;
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
