//! Engine-neutral core of bulkhead.
//!
//! This crate knows nothing about ONNX Runtime, candle, HTTP or processes. It holds the vocabulary every other
//! crate shares:
//!
//! * [`unit`]: compute units (`ort:cpu`, `ort:coreml[CPU_AND_NE]`, `candle:cpu`...), chains and aliases;
//! * [`model`]: what a model folder or `.onnx` file contains (files, pooling, normalisation, sequence limits);
//! * [`prompts`]: the model's named prompts and the output sizes `dimensions` may ask for;
//! * [`task`]: what a model computes (embeddings, rerank scores, class scores), from its config;
//! * [`tensor`]: the token batch an embedding engine consumes and the tensor it returns; named tensors of any
//!   supported type for other models;
//! * [`engine`]: the tiny, synchronous [`Engine`]/[`Session`]/[`GraphSession`] traits each engine crate implements;
//! * [`error`]: typed errors, one enum per concern;
//! * [`stats`]: percentiles, means, slopes and cosine agreement, for everything that measures.
#![deny(missing_docs)]

pub mod engine;
pub mod error;
pub mod install;
pub mod model;
pub mod prompts;
pub mod quantized;
pub mod row;
pub mod stats;
pub mod task;
pub mod tensor;
pub mod unit;

pub use engine::{Availability, Engine, GraphCache, GraphSession, NodePlacement, Precision, Session, SessionReport};
pub use error::{EngineError, ModelError, UnitError};
pub use model::{tokenizer_vocab_size, ModelFiles, PaddingSide, Pooling, WeightsFormat};
pub use prompts::{DefaultPrompt, Matryoshka, PromptError, Prompts};
pub use row::{Row, RowKind};
pub use task::{Activation, ModelTask};
pub use tensor::{DataType, NamedTensor, Tensor, TensorData, TensorSpec, TokenBatch};
pub use unit::{Chain, CoreMlUnits, Device, EngineKind, Platform, Unit};
