//! The embedding pipeline: tokenize -> run -> pool -> normalise, over any engine.
//!
//! * [`Tokenizer`]: the model's `tokenizer.json`, without padding, truncated at the model's `max_seq_length`
//!   (as sentence-transformers does); each text is read only as far as its tokens can reach the model, so a
//!   megabyte text costs what a few KiB cost, with the tokens of full tokenization; [`Tokenizer::tokens`] and
//!   [`Tokenizer::decode_ids`] give every token of a text with the byte span it covers, and ids back to text;
//! * [`Embedder`]: one loaded [`Session`](bulkhead_core::Session) plus the model's pooling and normalisation;
//! * [`Scorer`]: one loaded session of a cross-encoder (reranker or classifier): typed pair rows in, logits out
//!   ([`Tokenizer::encode_pairs`] tokenizes pairs as transformers does);
//! * [`Towers`]: the text and vision towers of a CLIP or SigLIP model on one unit (token rows and preprocessed
//!   images in, one vector per row out); [`load_towers_chain`] walks a chain for them;
//! * [`Engines`]: the registry of engines compiled into the binary;
//! * [`load_chain`]: walks a chain of units and returns the first that loads and passes a real forward pass,
//!   with the reason every earlier unit was skipped.
//!
//! Warm-up ([`warmup_rows`]) is made of real tokenizer output, so it prepares inputs exactly as live requests do.
//!
//! # Architecture invariants
//!
//! * **Warm-up and probes are live requests:** they are made by the same tokenizer, padded the same way (always on
//!   the right) and pooled the same way as requests, so a unit that passes its warm-up has run the real path.
//! * **Engine-neutral:** it talks to engines only through [`bulkhead_core::Engine`],
//!   [`bulkhead_core::Session`] and [`bulkhead_core::GraphSession`] (the towers of an image-text model, whose graphs
//!   `bulkhead-graph` writes); the engines a binary has are handed in ([`Engines`]).
//! * **A failed unit is a reason, not a fallback in silence:** [`load_chain`] returns every skipped unit with why.
#![deny(missing_docs)]

mod bound;
mod chain;
mod embedder;
mod engines;
mod pooling;
mod scorer;
mod tokenizer;
mod tokens;
mod towers;

pub use chain::{load_chain, load_scorer_chain, ChainError, LoadedChain, LoadedScorer, SkippedUnit};
pub use embedder::{Embedder, StageTiming};
pub use engines::Engines;
pub use pooling::{l2_normalize, pool, pool_excluding, truncate_dims};
pub use scorer::Scorer;
pub use tokenizer::{probe_texts, warmup_pairs, warmup_rows, warmup_texts, Encoded, Tokenizer, Truncation};
pub use tokens::TokenSpan;
pub use towers::{load_towers_chain, LoadedTowers, Towers};

/// Errors of the pipeline itself (the engines have [`bulkhead_core::EngineError`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    /// The model has no tokenizer.json.
    #[error("{path}: no tokenizer.json beside the model; put the model's Hugging Face tokenizer.json there or pass --tokenizer FILE")]
    NoTokenizer {
        /// Where it was looked for.
        path: std::path::PathBuf,
    },
    /// tokenizer.json does not parse.
    #[error("{path}: cannot read tokenizer: {reason}")]
    BadTokenizer {
        /// The file.
        path: std::path::PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// Tokenization of an input failed.
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    /// A text whose tokens cannot be known from a bounded window: it yields too few tokens in the most bulkhead
    /// reads of it (one word of many KiB in a BPE or Unigram model, a long run of whitespace or combining marks).
    #[error(
        "input {input} yields fewer than {need} tokens in its first {window} bytes (a word or a run without a break \
         that long), so its tokens cannot be known without tokenizing all of it; break the long word up or remove it"
    )]
    Unbounded {
        /// Index of the text in the request.
        input: usize,
        /// The largest window read, in bytes.
        window: usize,
        /// The tokens the window had to yield.
        need: usize,
    },
}
