//! text-embeddings-inference compatible `/tokenize` and `/decode`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use serde::Deserializer;

use super::{PromptName, TextBatch};

/// `POST /tokenize`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    /// A text or texts.
    pub inputs: TokenizeInput,
    /// Add the special tokens of the model's template (`[CLS]`, `[SEP]`...), as the model sees them (default true).
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub add_special_tokens: bool,
    /// A named prompt of the model to prepend to every text (default: the model's default prompt, if any); the
    /// offsets are then offsets in the prompted text.
    #[serde(default)]
    pub prompt_name: Option<PromptName>,
    /// The model (bulkhead extension; default: the first model the server was started with).
    #[serde(default)]
    pub model: Option<TextModelName>,
}

/// The name of a served model with a tokenizer (an embedding model or a cross-encoder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TextModelName(pub String);

/// A token id to decode: below the vocabulary size of the model named (the document gives the largest vocabulary
/// of this server's models).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct VocabId(pub u32);

impl<'de> Deserialize<'de> for VocabId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::whole(d, u64::from(u32::MAX), "a token id").map(|n| VocabId(n as u32))
    }
}

fn yes() -> bool {
    true
}

/// The `inputs` of `/tokenize`.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(untagged, expecting = "`inputs` must be a string or an array of strings")]
pub enum TokenizeInput {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(TextBatch),
}

/// One token of a text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SimpleToken {
    /// Its id in the vocabulary.
    pub id: u32,
    /// The text it covers; for a special token, the token itself (`[CLS]`).
    pub text: String,
    /// Whether the tokenizer added it rather than read it from the text.
    pub special: bool,
    /// Where the text it covers starts: a UTF-8 byte offset into the (prompted) text, as text-embeddings-inference
    /// gives it; `null` for a special token.
    pub start: Option<usize>,
    /// Where the text it covers ends (exclusive), in UTF-8 bytes; `null` for a special token.
    pub stop: Option<usize>,
}

/// The answer of `POST /tokenize`: the tokens of each text.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenizeResponse(pub Vec<Vec<SimpleToken>>);

/// `POST /decode`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecodeRequest {
    /// Token ids of one text, or of several.
    pub ids: DecodeIds,
    /// Leave the special tokens out of the text (default true).
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub skip_special_tokens: bool,
    /// The model (bulkhead extension; default: the first model the server was started with).
    #[serde(default)]
    pub model: Option<TextModelName>,
}

/// The `ids` of `/decode`.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
#[serde(untagged, expecting = "`ids` must be an array of token ids or an array of token-id arrays")]
pub enum DecodeIds {
    /// The ids of one text.
    One(DecodeRow),
    /// The ids of several texts.
    Many(DecodeBatch),
}

/// The token ids of one text to decode (any number of them: unlike an input to embed, not limited to the model's
/// sequence length).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DecodeRow(pub Vec<VocabId>);

impl DecodeRow {
    /// The ids as the tokenizer takes them.
    pub fn to_ids(&self) -> Vec<u32> {
        self.0.iter().map(|t| t.0).collect()
    }
}

/// Several texts as token ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DecodeBatch(pub Vec<DecodeRow>);

/// The answer of `POST /decode`: one text per array of ids.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DecodeResponse(pub Vec<String>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_embeddings_inference_requests() {
        let r: TokenizeRequest = serde_json::from_str(r#"{"inputs": "hi"}"#).unwrap();
        assert!(r.add_special_tokens && r.inputs == TokenizeInput::Text("hi".into()));
        let r: TokenizeRequest =
            serde_json::from_str(r#"{"inputs": ["a", "b"], "add_special_tokens": false, "prompt_name": "q"}"#).unwrap();
        assert!(!r.add_special_tokens && matches!(r.inputs, TokenizeInput::Texts(t) if t.0.len() == 2));
        let err = serde_json::from_str::<TokenizeRequest>(r#"{"inputs": 1}"#).unwrap_err().to_string();
        assert!(err.contains("`inputs` must be a string"), "{err}");

        let d: DecodeRequest = serde_json::from_str(r#"{"ids": [101, 7592, 102]}"#).unwrap();
        assert!(d.skip_special_tokens && matches!(&d.ids, DecodeIds::One(r) if r.to_ids() == [101, 7592, 102]));
        let d: DecodeRequest = serde_json::from_str(r#"{"ids": [[101], []], "skip_special_tokens": false}"#).unwrap();
        assert!(!d.skip_special_tokens && matches!(&d.ids, DecodeIds::Many(b) if b.0.len() == 2));
        for bad in [r#"{"ids": [-1]}"#, r#"{"ids": "x"}"#, r#"{"ids": [1.5]}"#, r#"{"ids": [1], "x": 1}"#] {
            assert!(serde_json::from_str::<DecodeRequest>(bad).is_err(), "{bad}");
        }
    }
}
