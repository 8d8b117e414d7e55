//! Engine-neutral core of bulkhead.
//!
//! This crate knows nothing about ONNX Runtime, candle, HTTP or processes. It holds the vocabulary every other
//! crate shares:
//!
//! * [`unit`]: compute units (`ort:cpu`, `ort:coreml[CPU_AND_NE]`, `candle:cpu`...), chains and aliases;
//! * [`model`]: what a model folder or `.onnx` file contains (files, pooling, normalisation, sequence limits);
//! * [`prompts`]: the model's named prompts and the output sizes `dimensions` may ask for;
//! * [`task`]: what a model computes (embeddings, rerank scores, class scores), from its config;
//! * [`sparse`]: a SPLADE model's sparse output (pooling, activation, `max_active_dims`) and its sparsification;
//! * [`tensor`]: the token batch an embedding engine consumes and the tensor it returns; named tensors of any
//!   supported type for other models;
//! * [`precision`]: the precision of a model's weights (`fp32`, `fp16`, `bf16`, `int8`) and the one rule that
//!   decides it from element counts;
//! * [`engine`]: the tiny, synchronous [`Engine`]/[`Session`]/[`GraphSession`] traits each engine crate implements,
//!   and [`WhisperSession`] for an engine's own Whisper encoder-decoder (candle's);
//! * [`error`]: typed errors, one enum per concern;
//! * [`stats`]: percentiles, medians, means, slopes and cosine agreement, for everything that measures;
//! * [`quantized`]: the manifest `bulkhead quantize` writes beside an int8 model, for its writer and its readers;
//! * [`install`]: where the Python packages bulkhead uses are installed, and bulkhead's cache and state folders.
//!
//! # Architecture invariants
//!
//! * **Vocabulary, not machinery.** It depends on no other bulkhead crate, on no engine (`ort`, `candle`,
//!   `tokenizers`) and on no async runtime: its only dependencies are `serde`, `serde_json` and `thiserror`, and it
//!   has no `async fn`. Every crate can depend on it without pulling in anything heavy.
//! * **It reads, and only reads, files.** It lists folders and reads small JSON files (model configs, the
//!   quantization manifest) and file sizes. It writes no file, starts no process (asking `python3` where a package
//!   is lives in `bulkhead_ort::python`), opens no socket and starts no thread.
//! * **One definition of each shared value.** Precision, cosine, median and the quantization manifest are defined
//!   here once; the crates that measure or report use these rather than their own copies.
//!
//! `crates/bulkhead-testkit/tests/invariants.rs` checks all three: it reads this crate's `Cargo.toml` and sources,
//! and looks for a second definition of each shared value anywhere in the workspace.
#![deny(missing_docs)]

pub mod engine;
pub mod error;
pub mod install;
pub mod model;
pub mod precision;
pub mod prompts;
pub mod quantized;
pub mod row;
pub mod sparse;
pub mod stats;
pub mod task;
pub mod tensor;
pub mod unit;

pub use engine::{
    Availability, Engine, GraphCache, GraphSession, NodePlacement, Session, SessionReport, WhisperSession,
};
pub use error::{EngineError, ModelError, UnitError};
pub use model::{tokenizer_vocab_size, ModelFiles, PaddingSide, Pooling, WeightsFormat};
pub use precision::Precision;
pub use prompts::{DefaultPrompt, Matryoshka, PromptError, Prompts};
pub use row::{Row, RowKind};
pub use sparse::{SparseActivation, SparsePooling, SparseSpec, SparseValue};
pub use task::{Activation, ModelTask, IMAGE_TEXT_ARCHITECTURES};
pub use tensor::{DataType, NamedTensor, Tensor, TensorData, TensorSpec, TokenBatch};
pub use unit::{Chain, CoreMlUnits, Device, EngineKind, Platform, Unit};
