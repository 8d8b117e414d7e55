//! The files of a Whisper folder besides the weights: the feature extractor's settings (`preprocessor_config.json`,
//! or the `feature_extractor` entry of `processor_config.json` as transformers 5 writes it), the tokenizer, and the
//! check that every token id the generation config names exists in the model.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{GenerationSettings, SpeechError};

/// The log-mel feature settings of `WhisperFeatureExtractor`, as the folder records them.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSettings {
    /// The file they were read from.
    pub path: PathBuf,
    /// `feature_size`: mel bins (80, or 128 for large-v3).
    pub mel_bins: usize,
    /// `sampling_rate` (16000).
    pub sampling_rate: usize,
    /// `hop_length`: samples per frame (160).
    pub hop_length: usize,
    /// `n_fft` (400).
    pub n_fft: usize,
    /// `chunk_length`: seconds per window (30).
    pub chunk_length: usize,
    /// `nb_max_frames`: frames per window (3000).
    pub frames: usize,
}

impl FeatureSettings {
    /// Reads `preprocessor_config.json` of `folder`, or the `feature_extractor` of its `processor_config.json`.
    pub fn read(folder: &Path) -> Result<FeatureSettings, SpeechError> {
        let pre = folder.join("preprocessor_config.json");
        let processor = folder.join("processor_config.json");
        let (path, nested) = if pre.is_file() {
            (pre, false)
        } else if processor.is_file() {
            (processor, true)
        } else {
            return Err(SpeechError::Io {
                path: pre,
                reason: "no such file (nor processor_config.json): the feature extractor's settings are needed".into(),
            });
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| SpeechError::Io { path: path.clone(), reason: e.to_string() })?;
        let err = |field: &str, reason: &str| SpeechError::Config {
            path: path.clone(),
            field: field.into(),
            reason: reason.into(),
        };
        let v: Value = serde_json::from_str(&text).map_err(|e| err("(file)", &format!("not valid JSON: {e}")))?;
        let v =
            if nested { v.get("feature_extractor").ok_or_else(|| err("feature_extractor", "is missing"))? } else { &v };
        let num = |field: &str, default: Option<usize>| -> Result<usize, SpeechError> {
            match v.get(field).filter(|x| !x.is_null()) {
                None => default.ok_or_else(|| err(field, "is missing")),
                Some(x) => x
                    .as_u64()
                    .filter(|n| *n > 0)
                    .map(|n| n as usize)
                    .ok_or_else(|| err(field, "must be a positive integer")),
            }
        };
        let sampling_rate = num("sampling_rate", Some(16000))?;
        let hop_length = num("hop_length", Some(160))?;
        let chunk_length = num("chunk_length", Some(30))?;
        Ok(FeatureSettings {
            mel_bins: num("feature_size", Some(80))?,
            sampling_rate,
            hop_length,
            n_fft: num("n_fft", Some(400))?,
            chunk_length,
            frames: num("nb_max_frames", Some(chunk_length * sampling_rate / hop_length))?,
            path,
        })
    }
}

/// Loads `tokenizer.json` of `folder`.
pub(crate) fn tokenizer(folder: &Path) -> Result<tokenizers::Tokenizer, SpeechError> {
    let path = folder.join("tokenizer.json");
    if !path.is_file() {
        return Err(SpeechError::Tokenizer {
            path,
            reason: "no such file; a Whisper folder needs its Hugging Face tokenizer.json".into(),
        });
    }
    tokenizers::Tokenizer::from_file(&path).map_err(|e| SpeechError::Tokenizer { path, reason: e.to_string() })
}

/// Every token id the generation settings name must be below `vocab` (the rows of the embedding table).
pub(crate) fn check_ids(g: &GenerationSettings, vocab: usize) -> Result<(), SpeechError> {
    let bad = |field: &str, id: i64| SpeechError::Config {
        path: g.path.clone(),
        field: field.into(),
        reason: format!("names token {id}, past the model's {vocab} tokens (config.json `vocab_size`)"),
    };
    let singles = [
        ("decoder_start_token_id", Some(g.decoder_start)),
        ("no_timestamps_token_id", g.no_timestamps),
        ("prev_sot_token_id", g.prev_sot),
    ];
    for (field, id) in singles {
        if let Some(id) = id.filter(|&i| i as usize >= vocab) {
            return Err(bad(field, id));
        }
    }
    let lists = [
        ("eos_token_id", &g.eos),
        ("suppress_tokens", &g.suppress_tokens),
        ("begin_suppress_tokens", &g.begin_suppress_tokens),
    ];
    for (field, ids) in lists {
        if let Some(&id) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(bad(field, id));
        }
    }
    for (field, map) in [("lang_to_id", &g.lang_to_id), ("task_to_id", &g.task_to_id)] {
        if let Some(&id) = map.values().find(|&&i| i as usize >= vocab) {
            return Err(bad(field, id));
        }
    }
    if let Some(id) = g.forced_decoder_ids.iter().filter_map(|(_, id)| *id).find(|&i| i as usize >= vocab) {
        return Err(bad("forced_decoder_ids", id));
    }
    Ok(())
}
