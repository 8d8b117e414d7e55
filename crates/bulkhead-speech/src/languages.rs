//! Whisper's languages: codes and English names in the order of the language tokens (`<|en|>` first), the aliases
//! transformers accepts, and the lookup `generate(language=...)` does: a token (`<|de|>`), a code (`de`) or a name
//! (`german`), case-insensitive.

use std::collections::BTreeMap;

use crate::SpeechError;

/// `(code, name)` of every Whisper language, in token order (transformers' `LANGUAGES`; `yue` is large-v3's).
pub(crate) const LANGUAGES: &[(&str, &str)] = &[
    ("en", "english"),
    ("zh", "chinese"),
    ("de", "german"),
    ("es", "spanish"),
    ("ru", "russian"),
    ("ko", "korean"),
    ("fr", "french"),
    ("ja", "japanese"),
    ("pt", "portuguese"),
    ("tr", "turkish"),
    ("pl", "polish"),
    ("ca", "catalan"),
    ("nl", "dutch"),
    ("ar", "arabic"),
    ("sv", "swedish"),
    ("it", "italian"),
    ("id", "indonesian"),
    ("hi", "hindi"),
    ("fi", "finnish"),
    ("vi", "vietnamese"),
    ("he", "hebrew"),
    ("uk", "ukrainian"),
    ("el", "greek"),
    ("ms", "malay"),
    ("cs", "czech"),
    ("ro", "romanian"),
    ("da", "danish"),
    ("hu", "hungarian"),
    ("ta", "tamil"),
    ("no", "norwegian"),
    ("th", "thai"),
    ("ur", "urdu"),
    ("hr", "croatian"),
    ("bg", "bulgarian"),
    ("lt", "lithuanian"),
    ("la", "latin"),
    ("mi", "maori"),
    ("ml", "malayalam"),
    ("cy", "welsh"),
    ("sk", "slovak"),
    ("te", "telugu"),
    ("fa", "persian"),
    ("lv", "latvian"),
    ("bn", "bengali"),
    ("sr", "serbian"),
    ("az", "azerbaijani"),
    ("sl", "slovenian"),
    ("kn", "kannada"),
    ("et", "estonian"),
    ("mk", "macedonian"),
    ("br", "breton"),
    ("eu", "basque"),
    ("is", "icelandic"),
    ("hy", "armenian"),
    ("ne", "nepali"),
    ("mn", "mongolian"),
    ("bs", "bosnian"),
    ("kk", "kazakh"),
    ("sq", "albanian"),
    ("sw", "swahili"),
    ("gl", "galician"),
    ("mr", "marathi"),
    ("pa", "punjabi"),
    ("si", "sinhala"),
    ("km", "khmer"),
    ("sn", "shona"),
    ("yo", "yoruba"),
    ("so", "somali"),
    ("af", "afrikaans"),
    ("oc", "occitan"),
    ("ka", "georgian"),
    ("be", "belarusian"),
    ("tg", "tajik"),
    ("sd", "sindhi"),
    ("gu", "gujarati"),
    ("am", "amharic"),
    ("yi", "yiddish"),
    ("lo", "lao"),
    ("uz", "uzbek"),
    ("fo", "faroese"),
    ("ht", "haitian creole"),
    ("ps", "pashto"),
    ("tk", "turkmen"),
    ("nn", "nynorsk"),
    ("mt", "maltese"),
    ("sa", "sanskrit"),
    ("lb", "luxembourgish"),
    ("my", "myanmar"),
    ("bo", "tibetan"),
    ("tl", "tagalog"),
    ("mg", "malagasy"),
    ("as", "assamese"),
    ("tt", "tatar"),
    ("haw", "hawaiian"),
    ("ln", "lingala"),
    ("ha", "hausa"),
    ("ba", "bashkir"),
    ("jw", "javanese"),
    ("su", "sundanese"),
    ("yue", "cantonese"),
];
/// Other names transformers accepts for a language.
pub(crate) const ALIASES: &[(&str, &str)] = &[
    ("burmese", "my"),
    ("valencian", "ca"),
    ("flemish", "nl"),
    ("haitian", "ht"),
    ("letzeburgesch", "lb"),
    ("pushto", "ps"),
    ("panjabi", "pa"),
    ("moldavian", "ro"),
    ("moldovan", "ro"),
    ("sinhalese", "si"),
    ("castilian", "es"),
    ("mandarin", "zh"),
];

/// The language token of `language` (a token such as `<|de|>`, a code such as `de`, or a name such as `German`)
/// and its id in `lang_to_id`; an unknown language, or one the model has no token for, is an error that says which.
pub fn language_token(language: &str, lang_to_id: &BTreeMap<String, i64>) -> Result<(String, i64), SpeechError> {
    let lower = language.trim().to_lowercase();
    let token = if lang_to_id.contains_key(&lower) {
        lower.clone()
    } else if let Some((code, _)) = LANGUAGES.iter().find(|(_, name)| *name == lower) {
        format!("<|{code}|>")
    } else if let Some((_, code)) = ALIASES.iter().find(|(name, _)| *name == lower) {
        format!("<|{code}|>")
    } else if LANGUAGES.iter().any(|(code, _)| *code == lower) {
        format!("<|{lower}|>")
    } else {
        return Err(SpeechError::Language(format!(
            "unknown language `{language}`; give a code (en, de, fr...) or an English name (english, german...)"
        )));
    };
    match lang_to_id.get(&token) {
        Some(id) => Ok((token, *id)),
        None if lang_to_id.is_empty() => Err(SpeechError::Language(format!(
            "this model is English-only (its generation config has no `lang_to_id`): it takes no language, got \
             `{language}`"
        ))),
        None => Err(SpeechError::Language(format!(
            "{token} is not one of the model's languages (its generation config's `lang_to_id`)"
        ))),
    }
}

/// The English name of a language code (`de` → `german`), as OpenAI's `verbose_json` names the language.
pub fn language_name(code: &str) -> Option<&'static str> {
    LANGUAGES.iter().find(|(c, _)| *c == code).map(|(_, name)| *name)
}

/// The language code of a language token (`<|de|>` → `de`).
pub fn code_of(token: &str) -> &str {
    token.trim_start_matches("<|").trim_end_matches("|>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> BTreeMap<String, i64> {
        [("<|en|>", 50259), ("<|de|>", 50261), ("<|ca|>", 50270)].into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    #[test]
    fn tokens_codes_names_and_aliases() {
        assert_eq!(language_token("de", &ids()).unwrap(), ("<|de|>".to_string(), 50261));
        assert_eq!(language_token("German", &ids()).unwrap().1, 50261);
        assert_eq!(language_token("<|en|>", &ids()).unwrap().1, 50259);
        assert_eq!(language_token("valencian", &ids()).unwrap().1, 50270);
        assert_eq!(code_of("<|haw|>"), "haw");
        assert_eq!((language_name("de"), language_name("xx")), (Some("german"), None));
        assert_eq!(LANGUAGES.len(), 100);
    }

    #[test]
    fn unknown_and_unsupported_languages() {
        assert!(language_token("klingon", &ids()).unwrap_err().to_string().contains("unknown language `klingon`"));
        assert!(language_token("fr", &ids()).unwrap_err().to_string().contains("<|fr|> is not one of"));
        let e = language_token("en", &BTreeMap::new()).unwrap_err().to_string();
        assert!(e.contains("English-only"), "{e}");
    }
}
