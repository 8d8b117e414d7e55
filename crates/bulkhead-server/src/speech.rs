//! What the server knows of a speech model before any worker runs it: the rate its audio must be resampled to, its
//! languages and whether it translates, read from the folder (`preprocessor_config.json`, and Whisper's
//! `generation_config.json` or Qwen3-ASR's `config.json`), so that a request for a language the model lacks is
//! refused before it is queued.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::ApiError;

/// A speech model's input rate and vocabulary of languages and tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechInfo {
    /// The sampling rate of its feature extractor: audio is resampled to it in the server.
    pub sampling_rate: u32,
    /// The languages it takes.
    pub languages: SpeechLanguages,
    /// Whether it has the `translate` task.
    pub translates: bool,
}

/// The languages a speech model takes.
#[derive(Debug, Clone, PartialEq)]
pub enum SpeechLanguages {
    /// Whisper: its language tokens and their ids (`lang_to_id`; empty for an English-only model).
    Tokens(BTreeMap<String, i64>),
    /// Qwen3-ASR: the language names of its `support_languages` (a code or a name is accepted for each).
    Names(Vec<String>),
}

impl SpeechInfo {
    /// Reads the settings of the Whisper or Qwen3-ASR folder `folder`; the error names the file and the field.
    pub fn read(folder: &Path) -> Result<SpeechInfo, String> {
        let features = bulkhead_speech::FeatureSettings::read(folder).map_err(|e| e.to_string())?;
        let sampling_rate = u32::try_from(features.sampling_rate).map_err(|_| {
            format!("{}: `sampling_rate` {} is too large", features.path.display(), features.sampling_rate)
        })?;
        let config_path = folder.join("config.json");
        let config: serde_json::Value = std::fs::read(&config_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        if config.get("model_type").and_then(|t| t.as_str()) == Some("qwen3_asr") {
            let names = match config.get("support_languages").and_then(|l| l.as_array()) {
                Some(list) => list.iter().filter_map(|n| n.as_str().map(str::to_string)).collect(),
                None => bulkhead_speech::DEFAULT_LANGUAGES.iter().map(|n| n.to_string()).collect(),
            };
            return Ok(SpeechInfo { sampling_rate, languages: SpeechLanguages::Names(names), translates: false });
        }
        let generation = bulkhead_speech::GenerationSettings::read(folder).map_err(|e| e.to_string())?;
        Ok(SpeechInfo {
            sampling_rate,
            translates: generation.task_to_id.contains_key("translate"),
            languages: SpeechLanguages::Tokens(generation.lang_to_id),
        })
    }

    /// Refuses (422) a language the model has no token for, naming it; accepts a code, an English name or a token.
    pub fn check_language(&self, language: &str) -> Result<(), ApiError> {
        match &self.languages {
            SpeechLanguages::Tokens(tokens) => bulkhead_speech::language_token(language, tokens)
                .map(|_| ())
                .map_err(|e| ApiError::Invalid(format!("language: {e}"))),
            SpeechLanguages::Names(names) => bulkhead_speech::qwen3_language_name(language, names)
                .map(|_| ())
                .map_err(|e| ApiError::Invalid(format!("language: {e}"))),
        }
    }

    /// Refuses (422) a translation from a model without the `translate` task.
    pub fn check_translate(&self, model: &str) -> Result<(), ApiError> {
        if self.translates {
            return Ok(());
        }
        Err(ApiError::Invalid(format!(
            "model `{model}` does not translate (English-only Whisper models and Qwen3-ASR have no `translate` \
             task); call POST /v1/audio/transcriptions"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_says_its_rate_languages_and_tasks() {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/speech/whisper-tiny-random");
        let info = SpeechInfo::read(&folder).unwrap();
        assert_eq!(info.sampling_rate, 16000);
        assert!(info.check_language("de").is_ok() && info.check_language("German").is_ok());
        let e = info.check_language("yue").unwrap_err().to_string();
        assert!(e.contains("<|yue|> is not one of the model's languages"), "{e}");
        assert!(info.check_translate("m").is_ok());
        let english = SpeechInfo { languages: SpeechLanguages::Tokens(BTreeMap::new()), translates: false, ..info };
        assert!(english.check_language("en").unwrap_err().to_string().contains("English-only"));
        assert!(english.check_translate("m").unwrap_err().to_string().contains("does not translate"));
        assert!(SpeechInfo::read(Path::new("/nonexistent")).unwrap_err().contains("/nonexistent"));
    }

    #[test]
    fn a_qwen3_asr_folder_takes_its_languages_by_name_or_code_and_does_not_translate() {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/speech/qwen3-asr-tiny-random");
        let info = SpeechInfo::read(&folder).unwrap();
        assert_eq!(info.sampling_rate, 16000);
        assert!(matches!(&info.languages, SpeechLanguages::Names(n) if n.iter().any(|l| l == "English")));
        assert!(info.check_language("English").is_ok() && info.check_language("en").is_ok());
        let e = info.check_language("Klingon").unwrap_err().to_string();
        assert!(e.starts_with("language: "), "{e}");
        assert!(info.check_translate("q").unwrap_err().to_string().contains("does not translate"));
    }
}
