//! What the `qwen-asr` package does around the model, reproduced: the language names it accepts
//! (`normalize_language_name`, `validate_language`), the raw output read as `language X<asr_text>text`
//! (`parse_asr_output`, with `detect_and_fix_repetitions`), the languages of several pieces merged
//! (`merge_languages`), and long audio cut at its quietest point near every 20 minutes (`split_audio_into_chunks`).
//! Strings are handled as Python does: by characters, with Python's whitespace and line breaks.

/// The languages of the released models (`SUPPORTED_LANGUAGES`), the list used when config.json has no
/// `support_languages`.
pub const DEFAULT_LANGUAGES: &[&str] = &[
    "Chinese",
    "English",
    "Cantonese",
    "Arabic",
    "German",
    "French",
    "Spanish",
    "Portuguese",
    "Indonesian",
    "Italian",
    "Korean",
    "Russian",
    "Thai",
    "Vietnamese",
    "Japanese",
    "Turkish",
    "Hindi",
    "Malay",
    "Dutch",
    "Swedish",
    "Danish",
    "Finnish",
    "Polish",
    "Czech",
    "Filipino",
    "Persian",
    "Greek",
    "Romanian",
    "Hungarian",
    "Macedonian",
];

/// ISO 639 codes of those languages, so that `en` or `yue` name them as the OpenAI API does.
const CODES: &[(&str, &str)] = &[
    ("zh", "Chinese"),
    ("en", "English"),
    ("yue", "Cantonese"),
    ("ar", "Arabic"),
    ("de", "German"),
    ("fr", "French"),
    ("es", "Spanish"),
    ("pt", "Portuguese"),
    ("id", "Indonesian"),
    ("it", "Italian"),
    ("ko", "Korean"),
    ("ru", "Russian"),
    ("th", "Thai"),
    ("vi", "Vietnamese"),
    ("ja", "Japanese"),
    ("tr", "Turkish"),
    ("hi", "Hindi"),
    ("ms", "Malay"),
    ("nl", "Dutch"),
    ("sv", "Swedish"),
    ("da", "Danish"),
    ("fi", "Finnish"),
    ("pl", "Polish"),
    ("cs", "Czech"),
    ("fil", "Filipino"),
    ("tl", "Filipino"),
    ("fa", "Persian"),
    ("el", "Greek"),
    ("ro", "Romanian"),
    ("hu", "Hungarian"),
    ("mk", "Macedonian"),
];

/// The longest audio transcribed in one piece (`MAX_ASR_INPUT_SECONDS`).
pub const MAX_PIECE_SECONDS: f64 = 1200.0;
/// Pieces of a split shorter than this are zero-padded to it (`MIN_ASR_INPUT_SECONDS`).
const MIN_PIECE_SECONDS: f64 = 0.5;
/// Python's `str.isspace` beyond Rust's whitespace: the information separators.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn py_strip(s: &str) -> &str {
    s.trim_matches(py_space)
}

/// Python's `str.splitlines()`.
fn py_lines(s: &str) -> Vec<&str> {
    let breaks = |c: char| {
        matches!(
            c,
            '\n' | '\r' | '\u{0b}' | '\u{0c}' | '\u{1c}' | '\u{1d}' | '\u{1e}' | '\u{85}' | '\u{2028}' | '\u{2029}'
        )
    };
    let mut out = vec![];
    let mut rest = s;
    while !rest.is_empty() {
        match rest.char_indices().find(|&(_, c)| breaks(c)) {
            None => {
                out.push(rest);
                break;
            }
            Some((i, c)) => {
                out.push(&rest[..i]);
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { c.len_utf8() };
                rest = &rest[i + skip..];
            }
        }
    }
    out
}

/// `normalize_language_name`: the first character upper case, the rest lower case (`cHINese` → `Chinese`).
pub fn normalize_language(name: &str) -> String {
    let s = py_strip(name);
    let mut chars = s.chars();
    match chars.next() {
        None => String::new(),
        Some(first) => first.to_uppercase().chain(chars.flat_map(char::to_lowercase)).collect(),
    }
}

/// The canonical name of `language` (a name in any case, or an ISO 639 code) among `supported`, or an error
/// listing them.
pub fn language_name(language: &str, supported: &[String]) -> Result<String, String> {
    let trimmed = py_strip(language).to_lowercase();
    let by_code = CODES.iter().find(|(code, _)| *code == trimmed).map(|(_, name)| name.to_string());
    let name = by_code.unwrap_or_else(|| normalize_language(language));
    if supported.contains(&name) {
        return Ok(name);
    }
    Err(format!("unsupported language `{}`; this model knows: {}", language.trim(), supported.join(", ")))
}

/// `detect_and_fix_repetitions` with its threshold of 20: a character repeated more than 20 times becomes one, and
/// a pattern of up to 20 characters repeated 20 times or more becomes one, the rest of the text fixed the same way.
pub fn fix_repetitions(text: &str) -> String {
    const THRESHOLD: usize = 20;
    let chars: Vec<char> = text.chars().collect();
    let mut once = vec![];
    let mut i = 0;
    while i < chars.len() {
        let mut count = 1;
        while i + count < chars.len() && chars[i + count] == chars[i] {
            count += 1;
        }
        if count > THRESHOLD {
            once.push(chars[i]);
        } else {
            once.extend_from_slice(&chars[i..i + count]);
        }
        i += count;
    }
    fix_patterns(&once, THRESHOLD, 20).into_iter().collect()
}

fn fix_patterns(s: &[char], thresh: usize, max_len: usize) -> Vec<char> {
    let n = s.len();
    if n < thresh * 2 {
        return s.to_vec();
    }
    let mut result = vec![];
    let mut i = 0;
    let mut found = false;
    while i + thresh * 2 <= n {
        for k in 1..=max_len {
            if i + k * thresh > n {
                break;
            }
            let pattern = &s[i..i + k];
            if (1..thresh).all(|rep| &s[i + rep * k..i + rep * k + k] == pattern) {
                let mut end = i + thresh * k;
                while end + k <= n && &s[end..end + k] == pattern {
                    end += k;
                }
                result.extend_from_slice(pattern);
                result.extend(fix_patterns(&s[end..], thresh, max_len));
                found = true;
                break;
            }
        }
        if found {
            break;
        }
        result.push(s[i]);
        i += 1;
    }
    if !found {
        result.extend_from_slice(&s[i..]);
    }
    result
}

/// `parse_asr_output`: `(language, text)` of the model's raw output. With `forced` (the caller gave the language,
/// and the prompt already holds `language X<asr_text>`), the whole output is text. Otherwise the text follows
/// `<asr_text>` and the language is read from a `language X` line before it (`language None`: no speech); without
/// the tag the whole output is text in no known language.
pub fn parse_output(raw: &str, forced: Option<&str>) -> (String, String) {
    let s = py_strip(raw);
    if s.is_empty() {
        return (String::new(), String::new());
    }
    let s = fix_repetitions(s);
    if let Some(language) = forced.filter(|l| !l.is_empty()) {
        return (language.to_string(), s);
    }
    let Some((meta, text)) = s.split_once("<asr_text>") else {
        return (String::new(), py_strip(&s).to_string());
    };
    if meta.to_lowercase().contains("language none") {
        return (String::new(), py_strip(text).to_string());
    }
    let mut language = String::new();
    for line in py_lines(meta) {
        let line = py_strip(line);
        if line.is_empty() {
            continue;
        }
        if line.to_lowercase().starts_with("language ") {
            let value = py_strip(line.chars().skip(9).collect::<String>().as_str()).to_string();
            if !value.is_empty() {
                language = normalize_language(&value);
            }
            break;
        }
    }
    (language, py_strip(text).to_string())
}

/// `merge_languages`: the pieces' languages in order, empty ones and consecutive repeats dropped, joined by `,`.
pub fn merge_languages<'a>(languages: impl IntoIterator<Item = &'a str>) -> String {
    let mut out: Vec<&str> = vec![];
    for l in languages.into_iter().map(py_strip).filter(|l| !l.is_empty()) {
        if out.last() != Some(&l) {
            out.push(l);
        }
    }
    out.join(",")
}

/// `split_audio_into_chunks`: `(start, samples)` pieces of at most about `max_seconds` each, cut at the quietest
/// point (the smallest sum of magnitudes over 100 ms, then its quietest sample) within `expand_seconds` of every
/// `max_seconds`; together they are the whole audio. A piece shorter than 0.5 s is zero-padded (only when the audio
/// was split).
pub fn split_pieces(pcm: &[f32], rate: usize, max_seconds: f64, expand_seconds: f64) -> Vec<(usize, Vec<f32>)> {
    let total = pcm.len();
    if total as f64 / rate as f64 <= max_seconds {
        return vec![(0, pcm.to_vec())];
    }
    let max_len = (max_seconds * rate as f64) as usize;
    let expand = (expand_seconds * rate as f64) as usize;
    let win = 4.max((0.1 * rate as f64) as usize);
    let mut bounds = vec![];
    let mut start = 0;
    while total - start > max_len {
        let cut = start + max_len;
        let left = start.max(cut.saturating_sub(expand));
        let right = total.min(cut + expand);
        let mut boundary = cut;
        if right - left > win {
            let seg: Vec<f64> = pcm[left..right].iter().map(|x| f64::from(x.abs())).collect();
            let mut prefix = vec![0.0f64; seg.len() + 1];
            for (i, v) in seg.iter().enumerate() {
                prefix[i + 1] = prefix[i] + v;
            }
            let sums = (0..=seg.len() - win).map(|i| prefix[i + win] - prefix[i]);
            let min_pos = first_min(sums);
            let inner = first_min(seg[min_pos..min_pos + win].iter().copied());
            boundary = left + min_pos + inner;
        }
        let boundary = boundary.max(start + 1).min(total);
        bounds.push((start, boundary));
        start = boundary;
    }
    bounds.push((start, total));
    let min_len = (MIN_PIECE_SECONDS * rate as f64) as usize;
    bounds
        .into_iter()
        .map(|(a, b)| {
            let mut piece = pcm[a..b].to_vec();
            if piece.len() < min_len {
                piece.resize(min_len, 0.0);
            }
            (a, piece)
        })
        .collect()
}

/// The index of the first smallest value (numpy's `argmin`).
fn first_min(values: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::INFINITY);
    for (i, v) in values.enumerate() {
        if v < best.1 {
            best = (i, v);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_by_name_or_code() {
        let all: Vec<String> = DEFAULT_LANGUAGES.iter().map(|s| s.to_string()).collect();
        assert_eq!(language_name("cHINese", &all).unwrap(), "Chinese");
        assert_eq!(language_name("yue", &all).unwrap(), "Cantonese");
        assert_eq!(language_name(" en ", &all).unwrap(), "English");
        let e = language_name("Klingon", &all).unwrap_err();
        assert!(e.contains("Klingon") && e.contains("Macedonian"), "{e}");
    }

    #[test]
    fn python_lines_and_spaces() {
        assert_eq!(py_lines("a\r\nb\rc\x1ed\n"), ["a", "b", "c", "d"]);
        assert_eq!(py_strip("\x1e x \x1f"), "x");
        assert_eq!(merge_languages(["English", "", "English", "German", " German"]), "English,German");
    }
}
