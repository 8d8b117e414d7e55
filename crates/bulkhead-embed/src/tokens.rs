//! Every token of a text, with where it came from, and token ids back to text: what text-embeddings-inference's
//! `/tokenize` and `/decode` answer.
//!
//! Unlike the embedding path, nothing here truncates: a text is tokenized whole (its length is bounded by the
//! request body limit of the caller), because the caller asked for all of its tokens.

use crate::{EmbedError, Tokenizer};

/// One token of a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpan {
    /// Its id in the vocabulary.
    pub id: u32,
    /// The text it covers (for a special token, which covers none: the token itself, `[CLS]`).
    pub text: String,
    /// Whether the tokenizer added it (`[CLS]`, `[SEP]`, `<s>`...) rather than read it from the text.
    pub special: bool,
    /// The UTF-8 byte range `start..stop` of the text it covers, as the tokenizer's offsets give it (`None` for a
    /// special token).
    pub span: Option<(usize, usize)>,
}

impl Tokenizer {
    /// Every token of `text`, in order, with its byte range in `text` and the text it covers; with the special
    /// tokens of the model's template when `add_special_tokens` is true. Not truncated.
    pub fn tokens(&self, text: &str, add_special_tokens: bool) -> Result<Vec<TokenSpan>, EmbedError> {
        let e = self.untruncated().encode(text, add_special_tokens).map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        let spans = e
            .get_ids()
            .iter()
            .zip(e.get_offsets())
            .zip(e.get_special_tokens_mask())
            .zip(e.get_tokens())
            .map(|(((&id, &(start, stop)), &special), token)| {
                if special == 1 {
                    return TokenSpan { id, text: token.clone(), special: true, span: None };
                }
                // Offsets fall on character boundaries; `get` keeps a tokenizer that broke that from panicking.
                let covered = text.get(start..stop).unwrap_or_default().to_string();
                TokenSpan { id, text: covered, special: false, span: Some((start, stop)) }
            })
            .collect();
        Ok(spans)
    }

    /// The text of token ids (each below [`Tokenizer::vocab_size`]), leaving the special tokens out when
    /// `skip_special_tokens` is true: the tokenizer's own decoder (WordPiece `##` joins, byte-level BPE...).
    pub fn decode_ids(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, EmbedError> {
        let vocab = self.vocab_size();
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(EmbedError::Tokenize(format!("token id {bad} is outside the vocabulary of {vocab}")));
        }
        self.untruncated().decode(ids, skip_special_tokens).map_err(|e| EmbedError::Tokenize(e.to_string()))
    }
}
