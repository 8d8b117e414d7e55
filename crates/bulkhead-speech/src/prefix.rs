//! The forced decoder prefix, built as transformers' `WhisperGenerationMixin._retrieve_init_tokens` builds it:
//! `<|startoftranscript|>`, then (multilingual models) the language token, given or detected, and the task token,
//! then `<|notimestamps|>` unless timestamps are on. With neither a language nor a task given, the old
//! `forced_decoder_ids` of the generation config fill the positions after the start token (the language left `null`
//! for detection, `<|transcribe|>` after it), as transformers still does.

use crate::decode::Task;
use crate::{GenerationSettings, SpeechError};

/// The prefix and the language token in it (given or detected; `None` for an English-only model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prefix {
    /// The token ids.
    pub ids: Vec<i64>,
    /// The language token id, when the prefix has one.
    pub language: Option<i64>,
}

/// Builds the prefix. `language` is the resolved language token of the caller's option; `detect` runs the
/// language detection and is called only when transformers would.
pub(crate) fn init_tokens(
    g: &GenerationSettings,
    language: Option<i64>,
    task: Option<Task>,
    timestamps: bool,
    detect: &mut dyn FnMut() -> Result<i64, SpeechError>,
) -> Result<Prefix, SpeechError> {
    let config_err =
        |field: &str, reason: String| SpeechError::Config { path: g.path.clone(), field: field.into(), reason };
    if g.is_multilingual == Some(false) && (language.is_some() || task.is_some()) {
        return Err(SpeechError::Options(
            "this model is English-only (its generation config says `is_multilingual: false`): it takes no \
             language and no task"
                .into(),
        ));
    }
    let mut init: Vec<Option<i64>> = vec![Some(g.decoder_start)];
    if task.is_none() && language.is_none() {
        let mut forced = g.forced_decoder_ids.as_slice();
        if forced.first().is_some_and(|(pos, _)| *pos == 1) {
            let mut i = 1;
            while let Some((pos, id)) = forced.first().filter(|(pos, _)| *pos == i) {
                let _ = pos;
                init.push(*id);
                forced = &forced[1..];
                i += 1;
            }
            if !forced.is_empty() {
                return Err(config_err(
                    "forced_decoder_ids",
                    format!("must hold consecutive positions from 1, found position {} after {}", forced[0].0, i - 1),
                ));
            }
        }
    }
    let lang_undefined = init.len() <= 1 || init[1].is_none();
    let lang = match language {
        Some(l) => Some(l),
        None if !g.lang_to_id.is_empty() && lang_undefined => Some(detect()?),
        None => None,
    };
    if let Some(l) = lang {
        if init.len() > 1 {
            init[1] = Some(l);
        } else {
            init.push(Some(l));
        }
    }
    let task_ids: Vec<i64> = g.task_to_id.values().copied().collect();
    match task {
        Some(t) => {
            let id = *g.task_to_id.get(t.name()).ok_or_else(|| {
                config_err("task_to_id", format!("has no `{}`: this model cannot {}", t.name(), t.name()))
            })?;
            // transformers appends the task, then replaces every task token with it.
            init.push(Some(id));
            for slot in init.iter_mut() {
                if slot.is_some_and(|s| task_ids.contains(&s)) {
                    *slot = Some(id);
                }
            }
        }
        None if language.is_some()
            && !g.task_to_id.is_empty()
            && !init.iter().any(|s| s.is_some_and(|s| task_ids.contains(&s))) =>
        {
            let id = *g
                .task_to_id
                .get("transcribe")
                .ok_or_else(|| config_err("task_to_id", "has no `transcribe`, the task of a given language".into()))?;
            init.push(Some(id));
        }
        None => {}
    }
    if let Some(nt) = g.no_timestamps {
        let last_is_nt = init.last() == Some(&Some(nt));
        if !timestamps && !last_is_nt {
            init.push(Some(nt));
        } else if timestamps && last_is_nt {
            init.pop();
        }
    }
    let ids: Vec<i64> = init.into_iter().flatten().collect();
    let language = ids.get(1).copied().filter(|id| g.lang_to_id.values().any(|l| l == id));
    Ok(Prefix { ids, language })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// whisper-tiny's generation config (ids of the real multilingual vocabulary).
    fn multilingual() -> GenerationSettings {
        GenerationSettings::parse(
            Path::new("generation_config.json"),
            r#"{"decoder_start_token_id": 50258, "eos_token_id": 50257, "no_timestamps_token_id": 50363,
                "lang_to_id": {"<|en|>": 50259, "<|de|>": 50261}, "is_multilingual": true,
                "task_to_id": {"transcribe": 50359, "translate": 50358},
                "forced_decoder_ids": [[1, null], [2, 50359]]}"#,
        )
        .unwrap()
    }

    /// whisper-tiny.en's.
    fn english() -> GenerationSettings {
        GenerationSettings::parse(
            Path::new("generation_config.json"),
            r#"{"decoder_start_token_id": 50257, "eos_token_id": 50256, "no_timestamps_token_id": 50362,
                "is_multilingual": false, "forced_decoder_ids": [[1, 50362]]}"#,
        )
        .unwrap()
    }

    fn build(g: &GenerationSettings, lang: Option<i64>, task: Option<Task>, ts: bool) -> (Vec<i64>, bool) {
        let mut detected = false;
        let p = init_tokens(g, lang, task, ts, &mut || {
            detected = true;
            Ok(50261)
        })
        .unwrap();
        (p.ids, detected)
    }

    #[test]
    fn multilingual_prefixes() {
        let g = multilingual();
        assert_eq!(build(&g, Some(50259), None, false), (vec![50258, 50259, 50359, 50363], false));
        assert_eq!(build(&g, None, None, false), (vec![50258, 50261, 50359, 50363], true));
        assert_eq!(build(&g, Some(50261), Some(Task::Translate), true), (vec![50258, 50261, 50358], false));
        // A task without a language: the forced ids are ignored, the language is detected, the task appended.
        assert_eq!(build(&g, None, Some(Task::Translate), false), (vec![50258, 50261, 50358, 50363], true));
    }

    #[test]
    fn english_only_prefixes() {
        let g = english();
        assert_eq!(build(&g, None, None, false), (vec![50257, 50362], false));
        assert_eq!(build(&g, None, None, true), (vec![50257], false));
        let e = init_tokens(&g, Some(1), None, false, &mut || Ok(0)).unwrap_err().to_string();
        assert!(e.contains("English-only"), "{e}");
    }
}
