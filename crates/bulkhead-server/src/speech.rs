//! What the server knows of a speech model before any worker runs it: the rate its audio must be resampled to, its
//! languages and whether it translates, read from the folder (`preprocessor_config.json`,
//! `generation_config.json`), so that a request for a language the model lacks is refused before it is queued.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::ApiError;

/// A speech model's input rate and vocabulary of languages and tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechInfo {
    /// The sampling rate of its feature extractor: audio is resampled to it in the server.
    pub sampling_rate: u32,
    /// Its language tokens and their ids (`lang_to_id`; empty for an English-only model).
    pub languages: BTreeMap<String, i64>,
    /// Whether it has the `translate` task.
    pub translates: bool,
}

impl SpeechInfo {
    /// Reads the settings of the Whisper folder `folder`; the error names the file and the field.
    pub fn read(folder: &Path) -> Result<SpeechInfo, String> {
        let generation = bulkhead_speech::GenerationSettings::read(folder).map_err(|e| e.to_string())?;
        let features = bulkhead_speech::FeatureSettings::read(folder).map_err(|e| e.to_string())?;
        let sampling_rate = u32::try_from(features.sampling_rate).map_err(|_| {
            format!("{}: `sampling_rate` {} is too large", features.path.display(), features.sampling_rate)
        })?;
        Ok(SpeechInfo {
            sampling_rate,
            translates: generation.task_to_id.contains_key("translate"),
            languages: generation.lang_to_id,
        })
    }

    /// Refuses (422) a language the model has no token for, naming it; accepts a code, an English name or a token.
    pub fn check_language(&self, language: &str) -> Result<(), ApiError> {
        bulkhead_speech::language_token(language, &self.languages)
            .map(|_| ())
            .map_err(|e| ApiError::Invalid(format!("language: {e}")))
    }

    /// Refuses (422) a translation from a model without the `translate` task.
    pub fn check_translate(&self, model: &str) -> Result<(), ApiError> {
        if self.translates {
            return Ok(());
        }
        Err(ApiError::Invalid(format!(
            "model `{model}` does not translate (its generation config has no `translate` task, as English-only \
             models have not); call POST /v1/audio/transcriptions"
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
        let english = SpeechInfo { languages: BTreeMap::new(), translates: false, ..info };
        assert!(english.check_language("en").unwrap_err().to_string().contains("English-only"));
        assert!(english.check_translate("m").unwrap_err().to_string().contains("does not translate"));
        assert!(SpeechInfo::read(Path::new("/nonexistent")).unwrap_err().contains("/nonexistent"));
    }
}
