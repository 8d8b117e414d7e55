//! Calibration and held-out texts: the built-in sets (varied on purpose: English prose and questions, a dozen
//! languages and scripts, long paragraphs past the model's length, HTML and Markdown, URLs and e-mail addresses,
//! source code, numbers and tables) and the user's `--calibration FILE` (one text per line).
//!
//! The held-out set shares no line with the calibration set: the search never sees it, so the accuracy it reports
//! is not fitted to it.

use std::path::Path;

use crate::QuantizeError;

const CALIBRATION: &str = include_str!("../data/calibration.txt");
const HELDOUT: &str = include_str!("../data/heldout.txt");

/// The built-in calibration texts the search measures on.
pub fn builtin_calibration() -> Vec<String> {
    lines(CALIBRATION)
}

/// The built-in held-out texts (never seen by the search) the final accuracy is measured on.
pub fn builtin_heldout() -> Vec<String> {
    lines(HELDOUT)
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// Reads a calibration file: UTF-8 text, one text per line, blank lines ignored. An unreadable file, a file that
/// is not text (invalid UTF-8, NUL bytes) or one without a single non-blank line is an error saying so.
pub fn read_calibration(path: &Path) -> Result<Vec<String>, QuantizeError> {
    let bad = |reason: String| QuantizeError::Calibration { path: path.to_path_buf(), reason };
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        bad(format!(
            "not UTF-8 text (invalid byte at offset {}); give a text file with one text per line",
            e.valid_up_to()
        ))
    })?;
    if let Some(at) = text.find('\0') {
        return Err(bad(format!("not a text file (NUL byte at offset {at}); give a text file with one text per line")));
    }
    let texts = lines(text);
    if texts.is_empty() {
        return Err(bad("holds no text (empty or only blank lines); give at least one text per line".into()));
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_sets_are_varied_and_disjoint() {
        let (c, h) = (builtin_calibration(), builtin_heldout());
        assert!(c.len() >= 50 && h.len() >= 50, "{} {}", c.len(), h.len());
        assert!(c.iter().all(|t| !h.contains(t)), "the held-out set must not share a text with the calibration set");
        for set in [&c, &h] {
            assert!(set.iter().any(|t| t.contains("http")), "URLs");
            assert!(set.iter().any(|t| t.contains('<')), "markup");
            assert!(set.iter().any(|t| t.chars().any(|ch| ('\u{4e00}'..='\u{9fff}').contains(&ch))), "CJK");
            assert!(set.iter().any(|t| t.len() > 500), "long texts");
        }
    }

    #[test]
    fn bad_calibration_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let empty = read_calibration(&write("empty.txt", b"")).unwrap_err().to_string();
        assert!(empty.contains("holds no text"), "{empty}");
        let blank = read_calibration(&write("blank.txt", b"\n  \n\t\n")).unwrap_err().to_string();
        assert!(blank.contains("holds no text"), "{blank}");
        let binary = read_calibration(&write("b.bin", &[0x89, b'P', b'N', b'G', 0xff, 0x00])).unwrap_err().to_string();
        assert!(binary.contains("not UTF-8 text"), "{binary}");
        let nul = read_calibration(&write("nul.txt", b"abc\0def")).unwrap_err().to_string();
        assert!(nul.contains("NUL byte"), "{nul}");
        let missing = read_calibration(&dir.path().join("absent.txt")).unwrap_err().to_string();
        assert!(missing.contains("absent.txt") && missing.contains("cannot read"), "{missing}");
        assert_eq!(read_calibration(&write("ok.txt", b"one\n\ntwo\n")).unwrap(), vec!["one", "two"]);
    }
}
