//! The handlers, one module per API family, and what they share ([`common`]). The router that mounts them is
//! assembled in one place (`router.rs`), beside the OpenAPI document that describes them.
//!
//! * [`openai`], [`tei`], [`rerank`] (rerank and predict), [`kserve`], [`segment`], [`audio`] (speech to text),
//!   [`models`] (load and unload on demand), [`sparse`] (SPLADE sparse embeddings), [`ops`]: the handlers;
//! * [`tokens`] (`/tokenize`, `/decode`), [`info`] (`/info`, `/similarity`), [`ollama`] (`/api/*`): the small
//!   routes clients rely on, with [`encodings`] (the output encodings of `/v1/embeddings`) and [`weights`] (what
//!   the Ollama listings say about a model's files);
//! * [`embed`]: the embedding path every embedding route shares; [`score`]: the cross-encoder path every scoring
//!   route shares; both reach the model through [`common::submit_rows`].

pub(crate) mod audio;
pub(crate) mod common;
pub(crate) mod embed;
pub(crate) mod encodings;
pub(crate) mod images;
pub(crate) mod info;
pub(crate) mod kserve;
pub(crate) mod models;
pub(crate) mod ollama;
pub(crate) mod openai;
pub(crate) mod ops;
pub(crate) mod rerank;
pub(crate) mod score;
pub(crate) mod segment;
pub(crate) mod sparse;
pub(crate) mod tei;
pub(crate) mod tokens;
pub(crate) mod weights;
