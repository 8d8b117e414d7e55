//! What a Whisper folder says about decoding: `generation_config.json` (or, for old checkpoints without one, the
//! same fields in config.json, where transformers looks for them too), read into [`GenerationSettings`]. Every error
//! names the file and the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::SpeechError;

/// The decoding fields of `generation_config.json` that Whisper's `generate` reads.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationSettings {
    /// The file they were read from.
    pub path: PathBuf,
    /// `decoder_start_token_id`: `<|startoftranscript|>`.
    pub decoder_start: i64,
    /// `eos_token_id` (one id or a list): `<|endoftext|>`; decoding stops at any of them.
    pub eos: Vec<i64>,
    /// `bos_token_id`, the timestamp rules' fallback when there is no end-of-text id.
    pub bos: Option<i64>,
    /// `pad_token_id` (the end-of-text id in every Whisper checkpoint).
    pub pad: Option<i64>,
    /// `no_timestamps_token_id`: `<|notimestamps|>`; the timestamp tokens follow it.
    pub no_timestamps: Option<i64>,
    /// `prev_sot_token_id`: `<|startofprev|>`, which opens a prompt.
    pub prev_sot: Option<i64>,
    /// `lang_to_id`: `<|en|>` → id; absent for English-only checkpoints (no language detection).
    pub lang_to_id: BTreeMap<String, i64>,
    /// `task_to_id`: `transcribe` / `translate` → id.
    pub task_to_id: BTreeMap<String, i64>,
    /// `is_multilingual`; `None` when the file does not say.
    pub is_multilingual: Option<bool>,
    /// `forced_decoder_ids`: `(position, id or null)` pairs of old configs, still used when no language and no
    /// task is given.
    pub forced_decoder_ids: Vec<(usize, Option<i64>)>,
    /// `suppress_tokens`: never generated.
    pub suppress_tokens: Vec<i64>,
    /// `begin_suppress_tokens`: not generated as the first token after the prefix.
    pub begin_suppress_tokens: Vec<i64>,
    /// `max_initial_timestamp_index`: the latest first timestamp, in timestamp steps.
    pub max_initial_timestamp_index: Option<i64>,
    /// `max_length`: prefix and generated tokens together, when no `max_new_tokens` is given (transformers'
    /// default 20 when absent).
    pub max_length: usize,
    /// `return_timestamps`: the default of the timestamps option (`None` when the file does not say).
    pub return_timestamps: Option<bool>,
    /// `condition_on_prev_tokens`: whether a later 30 s window is conditioned on the text of the earlier ones.
    pub condition_on_prev_tokens: bool,
}

/// transformers' `GenerationConfig.max_length` default.
const DEFAULT_MAX_LENGTH: usize = 20;

struct Fields<'a> {
    path: &'a Path,
    v: &'a Value,
}

impl Fields<'_> {
    fn err(&self, field: &str, reason: impl std::fmt::Display) -> SpeechError {
        SpeechError::Config { path: self.path.to_path_buf(), field: field.to_string(), reason: reason.to_string() }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }

    fn id(&self, key: &str) -> Result<Option<i64>, SpeechError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_i64().filter(|i| *i >= 0).map(Some).ok_or_else(|| self.err(key, "must be a token id")),
        }
    }

    fn ids(&self, key: &str) -> Result<Vec<i64>, SpeechError> {
        match self.get(key) {
            None => Ok(vec![]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_i64().filter(|i| *i >= 0).ok_or_else(|| self.err(key, "must be a list of token ids")))
                .collect(),
            Some(_) => Err(self.err(key, "must be a list of token ids")),
        }
    }

    fn map(&self, key: &str) -> Result<BTreeMap<String, i64>, SpeechError> {
        match self.get(key) {
            None => Ok(BTreeMap::new()),
            Some(Value::Object(o)) => o
                .iter()
                .map(|(k, v)| {
                    let id = v
                        .as_i64()
                        .filter(|i| *i >= 0)
                        .ok_or_else(|| self.err(key, format!("`{k}` must map to a token id")))?;
                    Ok((k.clone(), id))
                })
                .collect(),
            Some(_) => Err(self.err(key, "must be an object of token ids")),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, SpeechError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| self.err(key, "must be true or false")),
        }
    }
}

impl GenerationSettings {
    /// Reads `generation_config.json` of `folder`, or the same fields of `config.json` when the folder has none.
    pub fn read(folder: &Path) -> Result<GenerationSettings, SpeechError> {
        let path = folder.join("generation_config.json");
        let path = if path.is_file() { path } else { folder.join("config.json") };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| SpeechError::Io { path: path.clone(), reason: e.to_string() })?;
        Self::parse(&path, &text)
    }

    /// Parses the text of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<GenerationSettings, SpeechError> {
        let v: Value = serde_json::from_str(text).map_err(|e| SpeechError::Config {
            path: path.to_path_buf(),
            field: "(file)".into(),
            reason: format!("not valid JSON: {e}"),
        })?;
        let f = Fields { path, v: &v };
        let decoder_start =
            f.id("decoder_start_token_id")?.ok_or_else(|| f.err("decoder_start_token_id", "is missing"))?;
        let eos = match f.get("eos_token_id") {
            Some(Value::Array(_)) => f.ids("eos_token_id")?,
            Some(_) => vec![f.id("eos_token_id")?.unwrap_or_default()],
            None => return Err(f.err("eos_token_id", "is missing")),
        };
        if eos.is_empty() {
            return Err(f.err("eos_token_id", "must name at least one token"));
        }
        let forced_decoder_ids = match f.get("forced_decoder_ids") {
            None => vec![],
            Some(Value::Array(pairs)) => pairs
                .iter()
                .map(|p| {
                    let bad = || f.err("forced_decoder_ids", "must be a list of [position, token id or null] pairs");
                    let pos = p.get(0).and_then(Value::as_u64).ok_or_else(bad)? as usize;
                    let id = match p.get(1) {
                        Some(Value::Null) => None,
                        Some(x) => Some(x.as_i64().filter(|i| *i >= 0).ok_or_else(bad)?),
                        None => return Err(bad()),
                    };
                    Ok((pos, id))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(f.err("forced_decoder_ids", "must be a list of [position, token id or null] pairs")),
        };
        let max_length = match f.get("max_length") {
            None => DEFAULT_MAX_LENGTH,
            Some(v) => v
                .as_u64()
                .filter(|n| *n > 0)
                .map(|n| n as usize)
                .ok_or_else(|| f.err("max_length", "must be a positive integer"))?,
        };
        let max_initial_timestamp_index = match f.get("max_initial_timestamp_index") {
            None => None,
            Some(v) => Some(v.as_i64().ok_or_else(|| f.err("max_initial_timestamp_index", "must be an integer"))?),
        };
        Ok(GenerationSettings {
            path: path.to_path_buf(),
            decoder_start,
            eos,
            bos: f.id("bos_token_id")?,
            pad: f.id("pad_token_id")?,
            no_timestamps: f.id("no_timestamps_token_id")?,
            prev_sot: f.id("prev_sot_token_id")?,
            lang_to_id: f.map("lang_to_id")?,
            task_to_id: f.map("task_to_id")?,
            is_multilingual: f.bool("is_multilingual")?,
            forced_decoder_ids,
            suppress_tokens: f.ids("suppress_tokens")?,
            begin_suppress_tokens: f.ids("begin_suppress_tokens")?,
            max_initial_timestamp_index,
            max_length,
            return_timestamps: f.bool("return_timestamps")?,
            condition_on_prev_tokens: f.bool("condition_on_prev_tokens")?.unwrap_or(false),
        })
    }

    /// The first timestamp token (`<|0.00|>`): the one after `<|notimestamps|>`.
    pub fn timestamp_begin(&self) -> Option<i64> {
        self.no_timestamps.map(|n| n + 1)
    }

    /// The end-of-text id the timestamp rules use (transformers: `eos_token_id or bos_token_id`).
    pub fn eot(&self) -> i64 {
        self.eos[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<GenerationSettings, SpeechError> {
        GenerationSettings::parse(Path::new("/m/generation_config.json"), text)
    }

    #[test]
    fn reads_a_multilingual_config() {
        let g = parse(
            r#"{"decoder_start_token_id": 50258, "eos_token_id": 50257, "pad_token_id": 50257,
                "no_timestamps_token_id": 50363, "lang_to_id": {"<|en|>": 50259}, "task_to_id": {"transcribe": 50359},
                "forced_decoder_ids": [[1, null], [2, 50359]], "suppress_tokens": [1, 2], "max_length": 448,
                "begin_suppress_tokens": [220, 50257], "is_multilingual": true}"#,
        )
        .unwrap();
        assert_eq!(g.forced_decoder_ids, vec![(1, None), (2, Some(50359))]);
        assert_eq!((g.timestamp_begin(), g.max_length, g.eot()), (Some(50364), 448, 50257));
        assert_eq!(g.lang_to_id["<|en|>"], 50259);
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let e = parse(r#"{"eos_token_id": 1}"#).unwrap_err().to_string();
        assert!(e.contains("/m/generation_config.json") && e.contains("decoder_start_token_id"), "{e}");
        let e = parse(r#"{"decoder_start_token_id": 2, "eos_token_id": 1, "suppress_tokens": "x"}"#).unwrap_err();
        assert!(e.to_string().contains("suppress_tokens"), "{e}");
        let e = parse(r#"{"decoder_start_token_id": 2, "eos_token_id": 1, "forced_decoder_ids": [[1]]}"#);
        assert!(e.unwrap_err().to_string().contains("forced_decoder_ids"));
        let e = parse("{").unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
    }
}
