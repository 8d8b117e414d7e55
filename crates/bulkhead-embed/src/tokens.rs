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

#[cfg(test)]
mod tests {
    use bulkhead_core::ModelFiles;

    use super::*;

    const TEXTS: [&str; 4] =
        ["Crème brûlée à Zürich", "東京タワー 333 m", "emoji 👩🏽‍💻 and ﬁ ligatures", "plain words, and [SEP] in the text"];

    /// Every fixture tokenizer type (WordPiece, Unigram, byte-level BPE): the ids of the `tokenizers` crate, spans
    /// on character boundaries covering the text they name, decoding as the crate decodes.
    #[test]
    fn tokens_are_the_tokenizers_own_with_the_text_they_cover() {
        let mut folders = 0;
        for group in ["arch", "cross"] {
            for entry in std::fs::read_dir(bulkhead_testkit::fixture(group)).unwrap() {
                let path = entry.unwrap().path();
                if !path.join("tokenizer.json").is_file() {
                    continue;
                }
                folders += 1;
                let tok = Tokenizer::load(&ModelFiles::open(&path).unwrap()).unwrap();
                let mut whole = tokenizers::Tokenizer::from_file(path.join("tokenizer.json")).unwrap();
                whole.with_truncation(None).unwrap();
                whole.with_padding(None);
                for text in TEXTS {
                    let spans = tok.tokens(text, true).unwrap();
                    let want = whole.encode(text, true).unwrap();
                    let ids: Vec<u32> = spans.iter().map(|s| s.id).collect();
                    assert_eq!(ids, want.get_ids(), "{}: {text:?}", path.display());
                    for s in &spans {
                        match s.span {
                            None => assert!(s.special, "{s:?}"),
                            Some((a, b)) => assert_eq!(Some(s.text.as_str()), text.get(a..b), "{s:?}"),
                        }
                    }
                    let plain: Vec<u32> = tok.tokens(text, false).unwrap().iter().map(|s| s.id).collect();
                    assert_eq!(plain, whole.encode(text, false).unwrap().get_ids(), "{text:?} without special tokens");
                    let decoded = tok.decode_ids(&ids, true).unwrap();
                    assert_eq!(decoded, whole.decode(&ids, true).unwrap());
                }
                let vocab = tok.vocab_size() as u32;
                let err = tok.decode_ids(&[0, vocab], true).unwrap_err().to_string();
                assert!(err.contains(&format!("token id {vocab}")) && err.contains(&vocab.to_string()), "{err}");
            }
        }
        assert!(folders >= 10, "the fixture tokenizers are committed");
    }
}
