//! The tokenizer of a Qwen3-ASR folder: `tokenizer.json` when the folder has one, otherwise the fast tokenizer
//! transformers converts from the slow `Qwen2Tokenizer` files (`vocab.json`, `merges.txt` and the added tokens of
//! `tokenizer_config.json`), which is what Qwen's checkpoints may ship alone: byte-level BPE behind NFC and Qwen2's
//! split pattern, the added tokens matched before it.

use std::path::Path;

use serde_json::{json, Value};

use crate::SpeechError;

/// Qwen2's pre-tokenizer split (transformers' `Qwen2Converter`).
const QWEN2_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Loads the tokenizer of `folder`.
pub(crate) fn load(folder: &Path) -> Result<tokenizers::Tokenizer, SpeechError> {
    if folder.join("tokenizer.json").is_file() {
        return crate::files::tokenizer(folder);
    }
    let vocab_path = folder.join("vocab.json");
    let fail = |path: &Path, reason: String| SpeechError::Tokenizer { path: path.to_path_buf(), reason };
    if !vocab_path.is_file() {
        return Err(fail(
            &folder.join("tokenizer.json"),
            "no such file, nor vocab.json and merges.txt: a Qwen3-ASR folder needs its tokenizer".into(),
        ));
    }
    let read = |path: &Path| std::fs::read_to_string(path).map_err(|e| fail(path, e.to_string()));
    let vocab: Value = serde_json::from_str(&read(&vocab_path)?).map_err(|e| fail(&vocab_path, e.to_string()))?;
    if !vocab.is_object() {
        return Err(fail(&vocab_path, "must map tokens to ids".into()));
    }
    let merges_path = folder.join("merges.txt");
    let merges: Vec<Value> = read(&merges_path)?
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .map(|l| match l.split_once(' ') {
            Some((a, b)) if !b.contains(' ') => Ok(json!([a, b])),
            _ => Err(fail(&merges_path, format!("`{l}` is not a merge of two tokens"))),
        })
        .collect::<Result<_, _>>()?;
    let config_path = folder.join("tokenizer_config.json");
    let config: Value = serde_json::from_str(&read(&config_path)?).map_err(|e| fail(&config_path, e.to_string()))?;
    let mut added = vec![];
    if let Some(tokens) = config.get("added_tokens_decoder").and_then(Value::as_object) {
        for (id, t) in tokens {
            let id: u64 =
                id.parse().map_err(|_| fail(&config_path, format!("added token id `{id}` is not a number")))?;
            let flag = |k: &str, default: bool| t.get(k).and_then(Value::as_bool).unwrap_or(default);
            let content = t
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| fail(&config_path, format!("added token {id} has no `content`")))?;
            added.push(json!({
                "id": id, "content": content, "single_word": flag("single_word", false), "lstrip": flag("lstrip", false),
                "rstrip": flag("rstrip", false), "normalized": flag("normalized", false), "special": flag("special", false),
            }));
        }
    }
    added.sort_by_key(|t| t["id"].as_u64());
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_PATTERN}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        ]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    });
    spec.to_string()
        .parse()
        .map_err(|e: tokenizers::Error| fail(&vocab_path, format!("cannot build the tokenizer: {e}")))
}
