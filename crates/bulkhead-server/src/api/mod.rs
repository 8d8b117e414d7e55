//! The wire types of every route: what clients send and what they get back, kept apart from the server's internal
//! types. Inputs that take several shapes are `#[serde(untagged)]` enums, so a request is parsed once, straight
//! into its type; bad JSON, wrong types and unknown fields are refused by the parser itself.
//!
//! The OpenAPI document is derived from these types (`openapi.rs`). The few constraints known only at start-up
//! (served model names, vocabulary size, sequence length, dimensions, prompt names, `--max-inputs`) live on small
//! named components of their own ([`ModelName`], [`EmbeddingModelName`], [`TokenId`], [`TokenRow`],
//! [`TokenBatch`], [`TextBatch`], [`Dimensions`], [`PromptName`]) that the document fills in for this server.

pub mod audio;
pub mod images;
pub mod info;
pub mod kserve;
pub mod models;
pub mod ollama;
pub mod openai;
pub mod ops;
pub mod rerank;
pub mod segment;
pub mod sparse;
pub mod tei;
pub mod tokens;
pub mod units;

use serde::{Deserialize, Deserializer, Serialize};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Dimensions(pub usize);

/// A token id of the model's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct TokenId(pub u32);

impl<'de> Deserialize<'de> for Dimensions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        whole(d, usize::MAX as u64, "a number of dimensions").map(|n| Dimensions(n as usize))
    }
}

impl<'de> Deserialize<'de> for TokenId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        whole(d, u64::from(u32::MAX), "a token id").map(|n| TokenId(n as u32))
    }
}

/// A whole number from 0 to `max`. JSON Schema counts `3.0` as the integer 3, so it is one here too.
pub(crate) fn whole<'de, D: Deserializer<'de>>(d: D, max: u64, what: &'static str) -> Result<u64, D::Error> {
    struct Whole(u64, &'static str);
    impl serde::de::Visitor<'_> for Whole {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} (a whole number from 0 to {})", self.1, self.0)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            if v <= self.0 {
                Ok(v)
            } else {
                Err(E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
                .and_then(|v| self.visit_u64(v))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<u64, E> {
            if v.fract() == 0.0 && v >= 0.0 && v <= self.0 as f64 {
                Ok(v as u64)
            } else {
                Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
            }
        }
    }
    d.deserialize_any(Whole(max, what))
}

/// An array of whole numbers (a tensor shape).
pub(crate) fn whole_numbers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    struct Dim(u64);
    impl<'de> Deserialize<'de> for Dim {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            whole(d, u64::MAX, "a dimension").map(Dim)
        }
    }
    Ok(Vec::<Dim>::deserialize(d)?.into_iter().map(|d| d.0).collect())
}

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

/// How vectors are written in the response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// JSON numbers.
    #[default]
    Float,
    /// Base64 of the little-endian f32 bytes.
    Base64,
    /// One integer from -128 to 127 per dimension (sentence-transformers' `int8`).
    Int8,
    /// One integer from 0 to 255 per dimension (sentence-transformers' `uint8`).
    Uint8,
    /// One integer from -128 to 127 per 8 dimensions: the packed bits of `value > 0`, less 128
    /// (sentence-transformers' `binary`).
    Binary,
    /// One integer from 0 to 255 per 8 dimensions: the packed bits of `value > 0`, the first dimension in the
    /// highest bit (sentence-transformers' `ubinary`, numpy's `packbits`).
    Ubinary,
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
