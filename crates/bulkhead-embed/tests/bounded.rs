//! Bounded tokenization gives the tokens of full tokenization: generated long texts (words, long words, accents
//! and combining marks, emoji, CJK, whitespace runs, digits, special-token strings) through every tokenizer type of
//! the fixtures (WordPiece: BERT, GTE, NomicBERT; SentencePiece Unigram: XLM-RoBERTa; byte-level BPE: ModernBERT,
//! Qwen2/3) and the real all-MiniLM-L6-v2, for single texts, prompts and pairs, both truncation sides and several
//! maximum lengths, compared with the `tokenizers` crate tokenizing the whole text. And the bad inputs: a 7 MB
//! word, a million emoji.

use std::path::PathBuf;

use bulkhead_core::ModelFiles;
use bulkhead_embed::{EmbedError, Tokenizer, Truncation};
use tokenizers::{PostProcessor, TruncationDirection, TruncationParams, TruncationStrategy};

/// Every committed fixture folder with a tokenizer, plus the real MiniLM when installed.
fn folders() -> Vec<PathBuf> {
    let mut out = vec![];
    for group in ["arch", "cross"] {
        let dir = bulkhead_testkit::fixture(group);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.join("tokenizer.json").is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    assert!(out.len() >= 10, "the fixture tokenizers are committed");
    if let Some(minilm) = bulkhead_testkit::need(bulkhead_testkit::minilm_folder(), "the all-MiniLM-L6-v2 package") {
        out.push(minilm);
    }
    out
}

/// The reference: the same `tokenizer.json`, tokenizing the whole text, then truncating. (`encode` of a
/// truncating `tokenizers` 0.23 stops the model at the maximum length, which loses whether a text was longer
/// where the model has no special tokens, so the reference tokenizes without truncation and truncates after.)
struct Full {
    whole: tokenizers::Tokenizer,
    truncating: tokenizers::Tokenizer,
}

impl Full {
    fn single(&self, text: &str) -> (Vec<i64>, bool) {
        let e = self.whole.encode(text, false).unwrap();
        let e = self.truncating.post_process(e, None, true).unwrap();
        (e.get_ids().iter().map(|&i| i as i64).collect(), !e.get_overflowing().is_empty())
    }

    /// The pair's final encoding, and the one where the other text is taken as the longer (both texts past the
    /// budget: the bounded tokenizer decides that order on bytes). Each text is tokenized whole; before the
    /// `longest_first` truncation each is shortened to at most two tokens past the budget, keeping which is longer
    /// (truncation reads only the lengths, and `tokenizers` would otherwise pair every overflowing part of one text
    /// with every part of the other: gigabytes for two 40 KB texts).
    fn pair(&self, a: &str, b: &str) -> (tokenizers::Encoding, tokenizers::Encoding) {
        let (mut ea, mut eb) = (self.whole.encode(a, false).unwrap(), self.whole.encode(b, false).unwrap());
        let trunc = self.truncating.get_truncation().unwrap();
        let (dir, budget) = (
            trunc.direction,
            trunc.max_length - self.truncating.get_post_processor().map_or(0, |p| p.added_tokens(true)),
        );
        let (na, nb) = (ea.len(), eb.len());
        let cap = |n: usize, longer: bool| n.min(budget + 1 + usize::from(longer));
        ea.truncate(cap(na, na > nb), 0, dir);
        eb.truncate(cap(nb, nb > na), 0, dir);
        let (mut fa, mut fb) = (ea.clone(), eb.clone());
        if fa.len() > fb.len() {
            fa.truncate(fb.len(), 0, dir);
        } else {
            fb.truncate(fa.len().saturating_sub(1), 0, dir);
        }
        (
            self.truncating.post_process(ea, Some(eb), true).unwrap(),
            self.truncating.post_process(fa, Some(fb), true).unwrap(),
        )
    }
}

/// Our tokenizer of `folder` at `max_len`, and the reference.
fn load(folder: &std::path::Path, max_len: usize, side: Truncation) -> (Tokenizer, Full) {
    let mut model = ModelFiles::open(folder).unwrap();
    model.max_seq_length = max_len;
    let ours = Tokenizer::load(&model).unwrap();
    let mut full = tokenizers::Tokenizer::from_file(folder.join("tokenizer.json")).unwrap();
    full.with_padding(None);
    full.with_truncation(Some(TruncationParams {
        max_length: max_len,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
        direction: match side {
            Truncation::Right => TruncationDirection::Right,
            Truncation::Left => TruncationDirection::Left,
        },
    }))
    .unwrap();
    let mut whole = full.clone();
    whole.with_truncation(None).unwrap();
    (ours, Full { whole, truncating: full })
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const KINDS: &[&str] = &["words", "long-words", "unicode", "emoji", "cjk", "whitespace", "mixed"];

/// A text of about `bytes` bytes of the given kind.
fn text(kind: &str, variant: u64, bytes: usize) -> String {
    let mut r = Rng(variant.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut s = String::new();
    let letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let word = |r: &mut Rng, n: usize| -> String {
        (0..n).map(|_| letters.as_bytes()[r.below(letters.len())] as char).collect()
    };
    while s.len() < bytes {
        let kind = if kind == "mixed" { KINDS[r.below(KINDS.len() - 1)] } else { kind };
        match kind {
            "words" => {
                let n = 1 + r.below(12);
                s.push_str(&word(&mut r, n));
                s.push_str(r.pick(&[" ", " ", " ", ", ", ". ", "\n", "'s ", " - ", "; ", "123 ", " (", ") "]));
            }
            "long-words" => {
                let n = [90, 100, 101, 150, 400, 3000][r.below(6)] + r.below(5);
                s.push_str(&word(&mut r, n));
                s.push_str(r.pick(&[" ", "-", ".", "\n", "  "]));
            }
            "unicode" => {
                s.push_str(r.pick(&[
                    "café ",
                    "naïve ",
                    "Übermaß ",
                    "e\u{301}\u{302} ",
                    "a\u{308}\u{308}\u{308}b ",
                    "Ελληνικά ",
                    "кириллица ",
                    "한국어 ",
                    "\u{1100}\u{1161}\u{11A8} ",
                    "ﬁ ",
                    "Ⅻ ",
                    "ＡＢＣ ",
                    "İstanbul ",
                    "ß ",
                    "עברית ",
                    "العربية ",
                    "\u{0600}1 ",
                    "x\u{200D}y ",
                    "\u{FEFF}z ",
                    "\u{0B47}\u{0B3E} ",
                    "½ ",
                ]));
            }
            "emoji" => {
                s.push_str(r.pick(&[
                    "😀",
                    "😀😀😀",
                    "👍🏽",
                    "👨\u{200D}👩\u{200D}👧",
                    "🇫🇷🇩🇪",
                    "❤\u{FE0F}",
                    " ",
                    " 🙂 ",
                    "🚀.",
                ]));
            }
            "cjk" => {
                s.push_str(r.pick(&[
                    "中文文本",
                    "日本語のテキスト",
                    "，",
                    "。",
                    "处理",
                    "漢字かな",
                    "\u{3000}",
                    "𠀀𠀁",
                ]));
            }
            "whitespace" => {
                let n = 1 + r.below(40);
                let ws = r.pick(&[" ", "\t", "\n", "\r\n", "\u{3000}", "\u{A0}"]);
                s.push_str(&ws.repeat(n));
                let n = 1 + r.below(8);
                s.push_str(&word(&mut r, n));
            }
            _ => unreachable!(),
        }
        if r.below(200) == 0 {
            s.push_str(r.pick(&["[SEP]", "[CLS]", "<s>", "</s>", "<|endoftext|>", "<mask>", "[UNK]"]));
        }
    }
    s
}

#[test]
fn bounded_single_texts_and_prompts_tokenize_as_whole_texts() {
    let mut checked = 0;
    for folder in folders() {
        let name = folder.display().to_string();
        for max_len in [16, 128, 512] {
            for side in [Truncation::Right, Truncation::Left] {
                let (ours, full) = load(&folder, max_len, side);
                for (k, kind) in KINDS.iter().enumerate() {
                    let variant = (max_len * 31 + k) as u64;
                    let t = text(kind, variant, if max_len == 512 { 24_000 } else { 12_000 });
                    for prompt in [None, Some("query: ")] {
                        let got = ours.encode_prompted(std::slice::from_ref(&t), prompt, side);
                        let want = full.single(&format!("{}{t}", prompt.unwrap_or("")));
                        match got {
                            Ok(got) => {
                                assert_eq!(
                                    (got.rows[0].ids(), got.truncated[0]),
                                    (want.0.as_slice(), want.1),
                                    "{name} max_len {max_len} {side:?} {kind} prompt {prompt:?}"
                                );
                                checked += 1;
                            }
                            // Allowed only where a bounded window cannot hold the answer: a word of many KiB
                            // outside WordPiece.
                            Err(EmbedError::Unbounded { .. }) => assert!(
                                *kind == "long-words" || *kind == "emoji" || *kind == "mixed",
                                "{name} {max_len} {side:?} {kind}: refused"
                            ),
                            Err(e) => panic!("{name} {kind}: {e}"),
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 400, "{checked} comparisons");
}

#[test]
fn bounded_pairs_truncate_as_whole_pairs() {
    for folder in folders() {
        let name = folder.display().to_string();
        for max_len in [17, 64, 512] {
            for side in [Truncation::Right, Truncation::Left] {
                let (ours, full) = load(&folder, max_len, side);
                let short = "a short query about the river bank".to_string();
                let long_a = text("words", max_len as u64, 16_000);
                let long_b = text("mixed", max_len as u64 + 1, 20_000);
                let mid = text("words", 7, max_len * 2);
                for (a, b) in [
                    (&short, &long_a),
                    (&long_a, &short),
                    (&long_a, &long_b),
                    (&long_b, &long_a),
                    (&mid, &long_a),
                    (&long_b, &mid),
                ] {
                    let got = match ours.encode_pairs(&[(a.as_str(), Some(b.as_str()))], side) {
                        Ok(got) => (got.rows[0].clone(), got.truncated[0]),
                        Err(EmbedError::Unbounded { .. }) => continue,
                        Err(e) => panic!("{name}: {e}"),
                    };
                    let (want, other) = full.pair(a, b);
                    let ids = |e: &tokenizers::Encoding| e.get_ids().iter().map(|&i| i as i64).collect::<Vec<_>>();
                    let types =
                        |e: &tokenizers::Encoding| e.get_type_ids().iter().map(|&i| i as i64).collect::<Vec<_>>();
                    let what = format!("{name} max_len {max_len} {side:?} ({} B, {} B)", a.len(), b.len());
                    // Where both texts are past the budget and it is odd, which keeps the odd token is decided
                    // on bytes: the reference with either order.
                    let both_long = a.len() > 8 * max_len && b.len() > 8 * max_len;
                    let (got, truncated) = got;
                    let want = if both_long && ids(&other) == got.ids() { other } else { want };
                    assert_eq!(got.ids(), ids(&want), "{what}");
                    assert_eq!(got.type_ids(), types(&want), "{what}");
                    assert_eq!(truncated, !want.get_overflowing().is_empty(), "{what}");
                }
            }
        }
    }
}

#[test]
fn a_seven_megabyte_word_and_a_million_emoji_are_answered_or_refused_from_a_window() {
    let word = "a".repeat(7 << 20);
    let emoji = "😀".repeat(1_000_000);
    // Letters and digits alternate: one word for WordPiece and SentencePiece, many splits for the BPE regexes.
    let mixed_word = format!("start {} end of the text", "xY7".repeat(2 << 20));
    for folder in folders() {
        let name = folder.display().to_string();
        let json = std::fs::read_to_string(folder.join("tokenizer.json")).unwrap();
        let (wordpiece, unigram) = (json.contains("\"WordPiece\""), json.contains("\"Unigram\""));
        for side in [Truncation::Right, Truncation::Left] {
            let (ours, full) = load(&folder, 256, side);
            for (what, t) in
                [("7 MB word", &word), ("1,000,000 emoji", &emoji), ("6 MB word in a sentence", &mixed_word)]
            {
                let got = ours.encode_prompted(std::slice::from_ref(t), None, side);
                let what = format!("{name} {what} {side:?}");
                if wordpiece {
                    // WordPiece makes a word over 100 characters one [UNK]: the same as the word cut at 1000
                    // characters, which the reference tokenizes whole.
                    let short: String =
                        t.split(' ').map(|w| w.chars().take(1000).collect::<String>()).collect::<Vec<_>>().join(" ");
                    let want = full.single(&short);
                    let got = got.unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_eq!((got.rows[0].ids(), got.truncated[0]), (want.0.as_slice(), want.1), "{what}");
                } else if (std::ptr::eq(t, &mixed_word) && !unigram)
                    || (unigram && side == Truncation::Right && !std::ptr::eq(t, &emoji))
                {
                    // Answered from a window (BPE: the letters and digits are many splits; Unigram: the settled
                    // prefix of one long split). The reference on 120-180 KB of the text (cut between two
                    // repetitions) has the same first (last) tokens, and more than the maximum.
                    let got = got.unwrap_or_else(|e| panic!("{what}: {e}"));
                    let end = t.len() - " end of the text".len();
                    let part = match (side, std::ptr::eq(t, &word)) {
                        (Truncation::Right, true) => &t[..120_000],
                        (Truncation::Right, false) => &t[..6 + 180_000],
                        (Truncation::Left, _) => &t[end - 180_000..],
                    };
                    let want = full.single(part);
                    assert_eq!((got.rows[0].ids(), got.truncated[0]), (want.0.as_slice(), want.1), "{what}");
                } else {
                    // One split of megabytes whose tokens a window cannot settle: refused, saying what and what to
                    // do.
                    match got {
                        Err(e @ EmbedError::Unbounded { input: 0, .. }) => {
                            let msg = e.to_string();
                            assert!(msg.contains("input 0") && msg.contains("break the long word up"), "{msg}");
                        }
                        other => panic!("{what}: expected a typed refusal, got {:?}", other.map(|e| e.truncated)),
                    }
                }
            }
        }
    }
}

#[test]
fn unigram_cjk_without_spaces_is_answered_from_a_window() {
    // SentencePiece cuts only at spaces: 100 KB of CJK text is one split, past the largest window.
    let cjk = "中文文本处理。日本語のテキスト，漢字かな𠀀ﬁ".repeat(2_500);
    assert!(cjk.len() > 100_000);
    let mut checked = 0;
    for folder in folders() {
        let json = std::fs::read_to_string(folder.join("tokenizer.json")).unwrap();
        if !json.contains("\"Unigram\"") {
            continue;
        }
        for max_len in [16, 256] {
            let (ours, full) = load(&folder, max_len, Truncation::Right);
            for prompt in [None, Some("query: ")] {
                let got = ours.encode_prompted(std::slice::from_ref(&cjk), prompt, Truncation::Right).unwrap();
                let want = full.single(&format!("{}{cjk}", prompt.unwrap_or("")));
                assert_eq!(
                    (got.rows[0].ids(), got.truncated[0]),
                    (want.0.as_slice(), want.1),
                    "{} {max_len}",
                    folder.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 8, "{checked}");
}
