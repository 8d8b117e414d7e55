//! Bounded tokenization: the part of a text that can reach the model, found without tokenizing the rest.
//!
//! A model takes at most `max_len` tokens, so of a 7 MB text it sees the first (or, truncating from the left, the
//! last) few hundred. [`Bounder::window`] returns a cut of the text that tokenizes to exactly the tokens full
//! tokenization would keep, and at least one more (so "longer than the maximum" is decided too), reading a window
//! of a few KiB that grows only while it yields too few tokens.
//!
//! Why the tokens are identical. The tokenizer runs normaliser -> pre-tokenizer (which cuts the text into
//! *splits*) -> model, and the model tokenizes every split on its own (its `word_ids` are the split indices). A cut
//! is made only at a position `c` where
//! * the characters on both sides are not whitespace, `c` is an extended grapheme cluster boundary, and no added
//!   token (`[SEP]`, `<|endoftext|>`) straddles `c`: every normaliser of the analysed set (Unicode normal forms,
//!   which never compose across a grapheme boundary; lower-casing and accent stripping, per character; the
//!   SentencePiece charsmap, per grapheme; replacements of whitespace runs, which cannot touch `c`) maps
//!   `text[..c]` to a prefix of what it maps `text` to (and `text[c..]` to a suffix);
//! * and every pre-tokenizer of the analysed set cuts the text into a contiguous partition with at most one
//!   character of look-ahead (BERT's whitespace and punctuation splits, the GPT-2 and Qwen regular expressions,
//!   Metaspace, digits, punctuation): so every split of `text[..c]` but the last (the one touching `c`) is a split
//!   of `text`, and every split of `text[c..]` but the first is one too.
//!
//! So the tokens of all splits but the one at the cut are tokens of the full text, in order ("stable"); the
//! window grows until it has at least `need` stable tokens or covers the whole text. A tokenizer with any other
//! component is tokenized whole (and says so in a warning at load).
//!
//! WordPiece (BERT, MiniLM) turns a word longer than `max_input_chars_per_word` into one `[UNK]`, however long:
//! a 7 MB word is one token. For that pipeline (BERT normaliser and pre-tokenizer) runs of word characters longer
//! than that are shortened to `max_input_chars_per_word + 1` characters and whitespace runs to one space before
//! the window is taken ("compaction"): the word is still one `[UNK]`, the text still the same tokens.
//!
//! SentencePiece Unigram (XLM-RoBERTa) cuts text only at spaces, so CJK text is one split of any length; cut
//! inside it, the leading tokens its best segmentation settles (see `unigram_settled`) count as stable too.
//!
//! A window that reaches [`Bounder::window_limit`] bytes with too few stable tokens (one word of many KiB in a
//! BPE model, a long run without a grapheme boundary) is refused with
//! [`EmbedError::Unbounded`]: its tokens cannot be known without tokenizing all of it.

use std::borrow::Cow;

use tokenizers::{Encoding, TruncationDirection};
use unicode_categories::UnicodeCategories;
use unicode_segmentation::GraphemeCursor;

use crate::{EmbedError, Truncation};

/// The regular expressions of `Split` pre-tokenizers whose splits are class runs (letters, single digits,
/// symbols, whitespace) with at most one character of look-ahead: Qwen2/Qwen3's. The GPT-2 one is built into
/// `ByteLevel` (`use_regex`).
const KNOWN_SPLIT_PATTERNS: &[&str] = &[
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
];

/// How one tokenizer's texts are cut; made once at load.
#[derive(Clone, Debug)]
pub(crate) struct Bounder {
    /// Why texts are tokenized whole (a pipeline component outside the analysed set), or `None`.
    pub(crate) unbounded: Option<String>,
    /// WordPiece compaction: word-character runs are shortened to this many characters.
    word_run: Option<usize>,
    /// Added tokens' contents (lower-cased where the tokenizer matches them after normalisation).
    added: Vec<(String, bool)>,
    /// Unigram (SentencePiece) models: the longest piece, in characters.
    unigram_piece: Option<usize>,
}

/// A text ready for tokenization.
pub(crate) enum Window<'a> {
    /// The whole text (or its compaction, which tokenizes identically).
    Whole(Cow<'a, str>),
    /// A cut, tokenized (first stage): its tokens are the first (`Right`) or last (`Left`) tokens of the full
    /// text, at least `need` of them (the cut's own split is left out).
    Cut(Box<Encoding>),
}

impl Bounder {
    /// Analyses `tok`'s pipeline (see the module documentation for the analysed set).
    pub(crate) fn new(tok: &tokenizers::Tokenizer) -> Bounder {
        let norm = serde_json::to_value(tok.get_normalizer()).unwrap_or_default();
        let pre = serde_json::to_value(tok.get_pre_tokenizer()).unwrap_or_default();
        let unbounded = check_normalizer(&norm).and_then(|()| check_pre_tokenizer(&pre)).err();
        let word_run = match tok.get_model() {
            tokenizers::ModelWrapper::WordPiece(wp)
                if matches!(type_of(&norm), "BertNormalizer" | "") && type_of(&pre) == "BertPreTokenizer" =>
            {
                Some(wp.max_input_chars_per_word + 1)
            }
            _ => None,
        };
        let added: Vec<(String, bool)> = tok
            .get_added_tokens_decoder()
            .into_values()
            .filter(|t| !t.content.is_empty())
            .map(|t| if t.normalized { (t.content.to_lowercase(), true) } else { (t.content, false) })
            .collect();
        // An added token made only of word characters could be matched inside a run that compaction shortens.
        let word_run = word_run.filter(|_| !added.iter().any(|(a, _)| a.chars().all(is_word_char)));
        let unigram_piece = matches!(tok.get_model(), tokenizers::ModelWrapper::Unigram(_))
            .then(|| tok.get_vocab(false).keys().map(|k| k.chars().count()).max().unwrap_or(1).max(1));
        Bounder { unbounded, word_run, added, unigram_piece }
    }

    /// The largest window read for `need` tokens: 32 bytes a token, at least 32 KiB.
    pub(crate) fn window_limit(need: usize) -> usize {
        (need.saturating_mul(32)).max(32 * 1024)
    }

    /// The part of `text` to tokenize for at least `need` tokens from the `side` end (behind `head`, a prompt,
    /// which is kept whole). `probe` tokenizes without truncation or special tokens. `Err` when the window limit
    /// is reached with too few stable tokens.
    pub(crate) fn window<'a>(
        &self,
        probe: &tokenizers::Tokenizer,
        head: &str,
        text: &'a str,
        need: usize,
        side: Truncation,
    ) -> Result<Window<'a>, EmbedError> {
        let first = need.saturating_mul(6).saturating_add(256);
        if self.unbounded.is_some() || text.len() <= first {
            return Ok(Window::Whole(Cow::Borrowed(text)));
        }
        let limit = Self::window_limit(need);
        let mut size = first;
        loop {
            let (piece, whole) = match self.word_run {
                Some(run) => compact(text, size, run, side),
                None => (Cow::Borrowed(slice(text, size, side)), size >= text.len()),
            };
            if whole {
                return Ok(Window::Whole(piece));
            }
            if let Some(c) = self.find_cut(&piece, side) {
                let candidate = match side {
                    Truncation::Right => format!("{head}{}", &piece[..c]),
                    Truncation::Left => format!("{head}{}", &piece[c..]),
                };
                let enc = probe.encode(candidate.as_str(), false).map_err(|e| EmbedError::Tokenize(e.to_string()))?;
                let mut stable = stable_tokens(&enc, head.len(), side);
                if stable < need && side == Truncation::Right {
                    if let Some(piece_len) = self.unigram_piece {
                        stable += unigram_settled(probe, &candidate, piece_len).unwrap_or(0);
                    }
                }
                if stable >= need {
                    let mut enc = enc;
                    let dir = match side {
                        Truncation::Right => TruncationDirection::Right,
                        Truncation::Left => TruncationDirection::Left,
                    };
                    enc.truncate(stable, 0, dir);
                    return Ok(Window::Cut(Box::new(enc)));
                }
            }
            if size >= limit {
                return Err(EmbedError::Unbounded { input: 0, window: limit, need });
            }
            size = size.saturating_mul(2).min(limit);
        }
    }

    /// The cut nearest the far end of `piece` (the end for `Right`, the start for `Left`), if any.
    fn find_cut(&self, piece: &str, side: Truncation) -> Option<usize> {
        let positions: Box<dyn Iterator<Item = usize>> = match side {
            Truncation::Right => Box::new(piece.char_indices().rev().map(|(i, _)| i)),
            Truncation::Left => Box::new(piece.char_indices().map(|(i, _)| i)),
        };
        positions.filter(|&c| c > 0).find(|&c| self.safe_cut(piece, c))
    }

    /// Whether `s` may be cut at byte `c` (see the module documentation).
    fn safe_cut(&self, s: &str, c: usize) -> bool {
        let (Some(a), Some(b)) = (s[..c].chars().next_back(), s[c..].chars().next()) else { return false };
        if a.is_whitespace() || b.is_whitespace() {
            return false;
        }
        let mut cursor = GraphemeCursor::new(c, s.len(), true);
        if !matches!(cursor.is_boundary(s, 0), Ok(true)) {
            return false;
        }
        !self.added.iter().any(|(token, folded)| straddles(s, c, token, *folded))
    }
}

/// Unigram (SentencePiece) models, cut inside a split (CJK text without spaces is one split of any length): how
/// many leading tokens of the split at the cut of `candidate` are those of the whole split. The model picks the
/// best-scoring segmentation (Viterbi); the full split's best path has a piece boundary at some position `r` in the
/// last `piece_len` characters of the cut part, and up to `r` it is the best path of the first `r` characters,
/// computed identically (a forward pass that never looks past `r`). So the tokens on which the best paths of every
/// such prefix agree are the full split's; the last of them is left out (consecutive unknown pieces are fused).
fn unigram_settled(probe: &tokenizers::Tokenizer, candidate: &str, piece_len: usize) -> Option<usize> {
    use tokenizers::{Model, OffsetReferential, OffsetType, PreTokenizer};
    let tokenizers::ModelWrapper::Unigram(model) = probe.get_model() else { return None };
    let mut split = probe.get_added_vocabulary().extract_and_normalize(probe.get_normalizer(), candidate);
    if let Some(pre) = probe.get_pre_tokenizer() {
        pre.pre_tokenize(&mut split).ok()?;
    }
    let splits = split.get_splits(OffsetReferential::Normalized, OffsetType::Byte);
    let (last, _, tokens) = splits.last()?;
    if tokens.is_some() {
        return None; // an added token
    }
    let ends: Vec<usize> = last.char_indices().map(|(i, _)| i).skip(1).chain(std::iter::once(last.len())).collect();
    let mut common: Option<Vec<u32>> = None;
    for &r in &ends[ends.len().saturating_sub(piece_len)..] {
        let ids: Vec<u32> = model.tokenize(&last[..r]).ok()?.into_iter().map(|t| t.id).collect();
        common = Some(match common {
            None => ids,
            Some(c) => c.iter().zip(&ids).take_while(|(a, b)| a == b).map(|(a, _)| *a).collect(),
        });
    }
    Some(common?.len().saturating_sub(1))
}

/// Whether an occurrence of `token` in `s` starts before `c` and ends after it.
fn straddles(s: &str, c: usize, token: &str, folded: bool) -> bool {
    let len = token.len();
    (c.saturating_sub(len - 1)..c).any(|start| {
        s.get(start..start + len).is_some_and(|w| if folded { w.to_lowercase() == token } else { w == token })
    })
}

/// How many tokens of `enc` are stable: all but those of the split at the cut (and, for `Left`, those of the
/// prompt `head` and of the split that joins it).
fn stable_tokens(enc: &Encoding, head: usize, side: Truncation) -> usize {
    let words = enc.get_word_ids();
    match side {
        Truncation::Right => {
            let last = words.iter().flatten().max().copied();
            words.iter().filter(|w| w.is_some() && *w != &last).count()
        }
        Truncation::Left => {
            let offsets = enc.get_offsets();
            let Some(join) = (0..words.len()).find(|&i| offsets[i].0 >= head).and_then(|i| words[i]) else {
                return 0;
            };
            words.iter().filter(|w| w.is_some_and(|w| w > join)).count()
        }
    }
}

/// The first (`Right`) or last (`Left`) `size` bytes of `text`, at a character boundary.
fn slice(text: &str, size: usize, side: Truncation) -> &str {
    if size >= text.len() {
        return text;
    }
    match side {
        Truncation::Right => {
            let end = (0..=size).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            &text[..end]
        }
        Truncation::Left => {
            let start = (text.len() - size..=text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
            &text[start..]
        }
    }
}

/// A character BERT's normaliser and pre-tokenizer keep inside a word as exactly one or more characters: ASCII
/// letters and digits, letters and numbers outside the CJK blocks (which BERT splits one by one), and the
/// pictographs and emoticons (U+1F300..U+1F64F, all assigned, all symbols).
fn is_word_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric();
    }
    match c as u32 {
        0x1F300..=0x1F64F => true,
        0x2E80..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x3FFFF => false,
        _ => c.is_letter() || c.is_number(),
    }
}

/// BERT's whitespace that its normaliser maps to a space and its pre-tokenizer drops.
fn is_bert_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// The first (`Right`) or last (`Left`) `size` bytes of the compaction of `text`: word-character runs longer
/// than `run` characters keep `run` of them (BERT makes the word one `[UNK]` either way) and whitespace runs
/// become one space. Returns whether it covers all of `text`.
fn compact(text: &str, size: usize, run: usize, side: Truncation) -> (Cow<'_, str>, bool) {
    let mut out = String::with_capacity(size.min(text.len()) + 8);
    let mut chars: Box<dyn Iterator<Item = char>> = match side {
        Truncation::Right => Box::new(text.chars()),
        Truncation::Left => Box::new(text.chars().rev()),
    };
    let (mut word, mut space, mut consumed) = (0usize, false, 0usize);
    let mut whole = true;
    for ch in chars.by_ref() {
        if out.len() >= size {
            whole = false;
            break;
        }
        consumed += ch.len_utf8();
        if is_bert_space(ch) {
            word = 0;
            if !space {
                out.push(' ');
            }
            space = true;
            continue;
        }
        space = false;
        if is_word_char(ch) {
            word += 1;
            if word > run {
                continue;
            }
        } else {
            word = 0;
        }
        out.push(ch);
    }
    if whole && consumed == text.len() && out.len() == text.len() {
        return (Cow::Borrowed(text), true);
    }
    if side == Truncation::Left {
        out = out.chars().rev().collect();
    }
    (Cow::Owned(out), whole)
}

/// `value["type"]`, or "" for none.
fn type_of(value: &serde_json::Value) -> &str {
    value.get("type").and_then(|t| t.as_str()).unwrap_or("")
}

/// Ok when every normaliser is in the analysed set.
fn check_normalizer(n: &serde_json::Value) -> Result<(), String> {
    match type_of(n) {
        "" if n.is_null() => Ok(()),
        "Sequence" => n["normalizers"].as_array().into_iter().flatten().try_for_each(check_normalizer),
        "BertNormalizer" | "NFC" | "NFD" | "NFKC" | "NFKD" | "Lowercase" | "StripAccents" | "Strip" | "Precompiled"
        | "Prepend" | "ByteLevel" => Ok(()),
        "Replace" => {
            let pattern = n["pattern"].get("String").or_else(|| n["pattern"].get("Regex"));
            match pattern.and_then(|p| p.as_str()) {
                Some(p)
                    if p == " {2,}"
                        || (!p.is_empty()
                            && n["pattern"].get("String").is_some()
                            && p.chars().all(char::is_whitespace)) =>
                {
                    Ok(())
                }
                _ => Err(format!("normaliser Replace {}", n["pattern"])),
            }
        }
        other => Err(format!("normaliser {other}")),
    }
}

/// Ok when every pre-tokenizer is in the analysed set.
fn check_pre_tokenizer(p: &serde_json::Value) -> Result<(), String> {
    match type_of(p) {
        "" if p.is_null() => Ok(()),
        "Sequence" => p["pretokenizers"].as_array().into_iter().flatten().try_for_each(check_pre_tokenizer),
        "BertPreTokenizer" | "ByteLevel" | "Whitespace" | "WhitespaceSplit" | "Metaspace" | "Punctuation"
        | "Digits" => Ok(()),
        "Split" => match p["pattern"].get("Regex").and_then(|r| r.as_str()) {
            Some(r) if KNOWN_SPLIT_PATTERNS.contains(&r) => Ok(()),
            _ => Err(format!("pre-tokenizer Split {}", p["pattern"])),
        },
        other => Err(format!("pre-tokenizer {other}")),
    }
}
