//! Speech to text: Whisper (`WhisperForConditionalGeneration`, every size, multilingual and `.en`) from its Hugging
//! Face folder, on the `ort:` units and on candle's, decoded greedily exactly as transformers' `generate` does, with
//! transformers' temperature fallback ([`Fallback`]) when asked.
//!
//! * [`WhisperModel::load`] reads the folder (config.json, generation_config.json, tokenizer.json,
//!   preprocessor_config.json) and loads its encoder and decoder as a
//!   [`WhisperSession`](bulkhead_core::WhisperSession): the engine's own Whisper when it has one
//!   ([`Engine::load_whisper`](bulkhead_core::Engine::load_whisper), candle's), else `bulkhead-graph` builds (or finds
//!   in its cache) the encoder, cross-attention and decoder-step graphs ([`bulkhead_graph::whisper`]) and each is
//!   loaded as a [`GraphSession`](bulkhead_core::GraphSession) of the engine (ONNX Runtime's `OrtEngine`) on one
//!   unit. The decoding below is the same code whichever session runs the model;
//! * [`WhisperModel::transcribe`] takes log-mel features ([`MelFeatures`], as `WhisperFeatureExtractor` computes them;
//!   the audio crate computes them from files) and [`TranscribeOptions`] (language, task, timestamps, prompt,
//!   `max_new_tokens`, the temperature fallback) and returns the [`Transcription`]: token ids, text, language,
//!   segments;
//! * [`WhisperModel::encode`] and [`WhisperModel::detect_language`] expose the encoder and the language detection.
//! * [`Qwen3AsrModel`] runs Qwen3-ASR (`Qwen3ASRForConditionalGeneration` of the `qwen-asr` package) the same way:
//!   [`Qwen3AsrModel::load`], [`Qwen3AsrModel::features`] (the folder's preprocessor config, no padding),
//!   [`Qwen3AsrModel::transcribe`] / [`Qwen3AsrModel::transcribe_pcm`] with the same options and result types
//!   (language, prompt as the context, `max_new_tokens`), greedy as the package's `transcribe`.
//!
//! # Architecture invariants
//!
//! Greedy decoding reproduces transformers' `WhisperForConditionalGeneration.generate` token for token:
//! the forced prefix (`_retrieve_init_tokens`: `<|startoftranscript|>`, the given or detected language, the task,
//! `<|notimestamps|>` unless timestamps are on, `forced_decoder_ids` when neither language nor task is given), a prompt
//! as `<|startofprev|>` and its tokens before the prefix, the logits processors in transformers' order (begin
//! suppression, `suppress_tokens`, the timestamp rules of `WhisperTimeStampLogitsProcessor`), the stop at end of text or
//! at the length limits, and the 30-second windows (`seek`) that a timestamped output moves through; checked against
//! transformers on a committed random-weight fixture. Every decoding step after the first feeds one token with the
//! key/value caches of the earlier ones (recorded in [`Transcription::decoder_calls`]); the cross-attention keys and
//! values are computed once per 30-second window (once per decoding of it with a fallback, whose no-speech
//! probability is one more decoder run of the input up to `<|startoftranscript|>`). Every config error names the file
//! and the field.
//!
//! With a [`Fallback`], each window is decoded at the temperatures of its schedule in order until one passes the
//! checks of transformers' `_need_fallback` (compression ratio of the tokens by zlib, byte for byte Python's
//! `zlib.compress`; average log-probability; no-speech skip), the last one kept whatever it scores; a temperature
//! above 0 samples from the processed logits divided by it with a generator seeded by the options, so that the same
//! options give the same tokens; temperature 0 is the greedy choice, so a schedule of 0 alone, or every check off, is
//! greedy decoding token for token. Each segment records its window's temperature and scores ([`WindowDecoding`]).
//!
//! Qwen3-ASR's greedy decoding reproduces the `qwen-asr` package's `transcribe` token for token on the committed
//! fixture (prompt, stop tokens, output parsing), with the audio encoder attending within its `n_window_infer`
//! windows as the package's flash-attention and vLLM paths do; every step after the prefill feeds one token.
#![deny(missing_docs)]

mod decode;
mod fallback;
mod files;
mod generation;
mod graphs;
mod languages;
mod logits;
mod model;
mod prefix;
mod qwen3_asr;

use std::path::PathBuf;

pub use decode::{DecoderCall, Segment, Task, TranscribeOptions, Transcription};
pub use fallback::{compression_ratio, Fallback, WindowDecoding, DEFAULT_SEED};
pub use files::FeatureSettings;
pub use generation::GenerationSettings;
pub use languages::{code_of, language_name, language_token};
pub use model::{EncoderOutput, MelFeatures, WhisperModel};
pub use qwen3_asr::{
    fix_repetitions, language_name as qwen3_language_name, merge_languages, parse_output, split_pieces,
    AudioEmbeddings, Qwen3AsrModel, RunLimits, DEFAULT_LANGUAGES,
};

/// Why a Whisper model could not be loaded or could not transcribe.
#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    /// A configuration file lacks a field or has a bad one.
    #[error("{path}: `{field}` {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be read.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The folder is not a Whisper checkpoint, or its graphs could not be built.
    #[error(transparent)]
    Graph(#[from] bulkhead_graph::GraphError),
    /// The folder could not be read as a model folder.
    #[error(transparent)]
    Model(#[from] bulkhead_core::ModelError),
    /// The engine could not load or run a graph.
    #[error(transparent)]
    Engine(#[from] bulkhead_core::EngineError),
    /// tokenizer.json is missing or does not parse.
    #[error("{path}: cannot read the tokenizer: {reason}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The features do not fit the model.
    #[error("bad input features: {0}")]
    Features(String),
    /// The language option names no language of the model.
    #[error("{0}")]
    Language(String),
    /// Options that cannot go together or exceed the model's limits.
    #[error("invalid transcription options: {0}")]
    Options(String),
}
