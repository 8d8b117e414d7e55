//! The wire types of every route: what clients send and what they get back, kept apart from the server's internal
//! types. Inputs that take several shapes are `#[serde(untagged)]` enums, so a request is parsed once, straight
//! into its type; bad JSON, wrong types and unknown fields are refused by the parser itself.
//!
//! The OpenAPI document is derived from these types (`openapi.rs`). The few constraints known only at start-up
//! (served model names, vocabulary size, sequence length, dimensions, prompt names, `--max-inputs`) live on small
//! named components of their own ([`ModelName`], [`EmbeddingModelName`], [`TokenId`], [`TokenRow`],
//! [`TokenBatch`], [`TextBatch`], [`Dimensions`], [`PromptName`]) that the document fills in for this server.

pub mod kserve;
pub mod openai;
pub mod ops;
pub mod tei;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The name of a model this server serves (`--model NAME=PATH`; `GET /v1/models` lists them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ModelName(pub String);

/// The name of an embedding model this server serves (texts in, vectors out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingModelName(pub String);

/// A named prompt of the model (`config_sentence_transformers.json` `prompts`), prepended to every text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PromptName(pub String);

/// Output size: keep the first N values of each embedding (Matryoshka), renormalised when the model normalises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Dimensions(pub usize);

/// A token id of the model's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenId(pub u32);

/// One input as token ids (special tokens included, as the model's tokenizer writes them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenRow(pub Vec<TokenId>);

/// Several inputs as token ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenBatch(pub Vec<TokenRow>);

/// Several texts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TextBatch(pub Vec<String>);

impl TokenRow {
    /// The ids as the engines take them.
    pub fn to_ids(&self) -> Vec<i64> {
        self.0.iter().map(|t| i64::from(t.0)).collect()
    }
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, in words and as a category.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// One line saying what is wrong and what to do about it.
    pub message: String,
    /// The category (OpenAI's error types, plus bulkhead's own).
    #[serde(rename = "type")]
    pub kind: ErrorType,
}

/// The category of an error (the `type` of the error body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// The request is malformed or asks for something invalid.
    InvalidRequestError,
    /// Missing or wrong API key.
    AuthenticationError,
    /// No such model or route.
    NotFoundError,
    /// The model's queue or the server's connections are full; retry after `Retry-After`.
    OverloadedError,
    /// The request itself crashed workers.
    PoisonRequestError,
    /// No unit of the model can serve now.
    UnavailableError,
    /// The request ran past the server's deadline.
    TimeoutError,
    /// Anything else on the server side.
    ServerError,
}
