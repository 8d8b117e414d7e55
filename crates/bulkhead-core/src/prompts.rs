//! Prompts and output-size settings of a sentence-transformers model folder.
//!
//! sentence-transformers keeps named prompts in `config_sentence_transformers.json`
//! (`{"prompts": {"query": "query: "}, "default_prompt_name": "query"}`) and prepends the chosen prompt's text to
//! every input *before* tokenization. [`Prompts::resolve`] picks the text the way `SentenceTransformer.encode`
//! does: an explicit prompt (a name given with it is ignored), else a named one, else the default; the empty
//! prompt is no prompt.
//!
//! [`Matryoshka`] says which output sizes a model accepts for `dimensions` (keep the first N values).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ModelError;

/// The default prompt: a named prompt of the model, or a literal text (set by the user at start-up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultPrompt {
    /// A key of [`Prompts::named`].
    Named(String),
    /// A text of its own.
    Text(String),
}

/// The model's prompts and the one applied when a request names none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompts {
    /// Prompt texts by name (`prompts` of `config_sentence_transformers.json`).
    pub named: BTreeMap<String, String>,
    /// Applied to every text input of a request without `prompt` or `prompt_name` (`None`: no prompt).
    pub default: Option<DefaultPrompt>,
}

/// A prompt that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    /// The name is not one of the model's prompts.
    #[error("unknown prompt name `{name}`; {}", available(.names))]
    UnknownName {
        /// The name asked for.
        name: String,
        /// The names the model has.
        names: Vec<String>,
    },
}

fn available(names: &[String]) -> String {
    if names.is_empty() {
        "this model declares no prompts (config_sentence_transformers.json `prompts`)".into()
    } else {
        format!("this model's prompts: {}", names.join(", "))
    }
}

impl Prompts {
    /// Reads `config_sentence_transformers.json` of `root` (no file: no prompts). A `default_prompt_name` that is
    /// not one of the prompts is an error naming the file, as sentence-transformers refuses such a model.
    pub fn read(root: &Path) -> Result<Prompts, ModelError> {
        let path = root.join("config_sentence_transformers.json");
        if !path.is_file() {
            return Ok(Prompts::default());
        }
        let invalid = |reason: String| ModelError::Invalid { path: path.clone(), reason };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ModelError::Unreadable { path: path.clone(), reason: e.to_string() })?;
        let config: Value = serde_json::from_str(&text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        let mut named = BTreeMap::new();
        match config.get("prompts") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (name, text) in map {
                    // sentence-transformers turns a null prompt into the empty prompt.
                    let text = match text {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => return Err(invalid(format!("prompt `{name}` must be a string, not {other}"))),
                    };
                    named.insert(name.clone(), text);
                }
            }
            Some(other) => return Err(invalid(format!("`prompts` must be an object of name: text, not {other}"))),
        }
        let default = match config.get("default_prompt_name") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) if named.contains_key(name) => Some(DefaultPrompt::Named(name.clone())),
            Some(Value::String(name)) => {
                return Err(invalid(format!(
                    "`default_prompt_name` is `{name}`, which is not one of its prompts ({})",
                    named.keys().cloned().collect::<Vec<_>>().join(", ")
                )))
            }
            Some(other) => return Err(invalid(format!("`default_prompt_name` must be a string, not {other}"))),
        };
        Ok(Prompts { named, default })
    }

    /// The prompt names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.named.keys().cloned().collect()
    }

    /// Replaces the default with the named prompt `name`, which must exist.
    pub fn set_default_name(&mut self, name: &str) -> Result<(), PromptError> {
        if !self.named.contains_key(name) {
            return Err(PromptError::UnknownName { name: name.into(), names: self.names() });
        }
        self.default = Some(DefaultPrompt::Named(name.into()));
        Ok(())
    }

    /// Replaces the default with the literal `text` (the empty text: no default prompt).
    pub fn set_default_text(&mut self, text: &str) {
        self.default = (!text.is_empty()).then(|| DefaultPrompt::Text(text.into()));
    }

    /// The text to prepend for a request that gave `prompt` and/or `prompt_name`: the prompt itself (a name given
    /// with it is ignored, as sentence-transformers does), else the named prompt, else the default. `None` means no
    /// prompt (the empty prompt is none).
    pub fn resolve(&self, prompt: Option<&str>, prompt_name: Option<&str>) -> Result<Option<String>, PromptError> {
        let text = match (prompt, prompt_name) {
            (Some(p), _) => Some(p.to_string()),
            (None, Some(name)) => Some(
                self.named
                    .get(name)
                    .cloned()
                    .ok_or_else(|| PromptError::UnknownName { name: name.into(), names: self.names() })?,
            ),
            (None, None) => match &self.default {
                None => None,
                Some(DefaultPrompt::Text(t)) => Some(t.clone()),
                Some(DefaultPrompt::Named(n)) => self.named.get(n).cloned(),
            },
        };
        Ok(text.filter(|t| !t.is_empty()))
    }
}

/// Which output sizes a model accepts for `dimensions` (Matryoshka truncation: keep the first N values).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Matryoshka {
    /// Any size from 1 to the native one (the model says nothing).
    #[default]
    Any,
    /// Only these sizes (`matryoshka_dimensions` of config.json): the model was trained for them.
    Only(Vec<usize>),
}

impl Matryoshka {
    /// Reads `matryoshka_dimensions` from a parsed config.json (absent or null: any size).
    pub fn from_config(path: &Path, config: Option<&Value>) -> Result<Matryoshka, ModelError> {
        let Some(v) = config.and_then(|c| c.get("matryoshka_dimensions")).filter(|v| !v.is_null()) else {
            return Ok(Matryoshka::Any);
        };
        let sizes: Option<Vec<usize>> =
            v.as_array().and_then(|a| a.iter().map(|d| d.as_u64().filter(|&d| d > 0).map(|d| d as usize)).collect());
        match sizes {
            Some(mut sizes) if !sizes.is_empty() => {
                sizes.sort_unstable();
                sizes.dedup();
                Ok(Matryoshka::Only(sizes))
            }
            _ => Err(ModelError::Invalid {
                path: path.to_path_buf(),
                reason: format!("`matryoshka_dimensions` must be a non-empty array of positive integers, not {v}"),
            }),
        }
    }

    /// The accepted sizes for a model of `native` dimensions when the model lists them (the native size always
    /// included); `None` when any size from 1 to `native` is accepted.
    pub fn sizes(&self, native: usize) -> Option<Vec<usize>> {
        match self {
            Matryoshka::Any => None,
            Matryoshka::Only(sizes) => {
                let mut v: Vec<usize> = sizes.iter().copied().filter(|&s| s <= native).collect();
                if !v.contains(&native) {
                    v.push(native);
                }
                Some(v)
            }
        }
    }

    /// Checks a requested output size against the native size: `Err` says why it is refused.
    pub fn check(&self, requested: usize, native: usize) -> Result<(), String> {
        if requested == 0 {
            return Err("`dimensions` must be at least 1".into());
        }
        if requested > native {
            return Err(format!("`dimensions` = {requested} is larger than the model's {native} dimensions"));
        }
        match self.sizes(native) {
            Some(sizes) if !sizes.contains(&requested) => Err(format!(
                "`dimensions` = {requested} is not supported: the model's config.json `matryoshka_dimensions` allows {}",
                sizes.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str, config: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("bulkhead-prompts-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("config_sentence_transformers.json"), config).unwrap();
        d
    }

    #[test]
    fn resolves_as_sentence_transformers_does() {
        let d = dir(
            "ok",
            r#"{"prompts": {"query": "query: ", "passage": "passage: ", "none": null}, "default_prompt_name": "query"}"#,
        );
        let p = Prompts::read(&d).unwrap();
        assert_eq!(p.resolve(None, None).unwrap().as_deref(), Some("query: "));
        assert_eq!(p.resolve(None, Some("passage")).unwrap().as_deref(), Some("passage: "));
        assert_eq!(p.resolve(Some("Represent: "), None).unwrap().as_deref(), Some("Represent: "));
        assert_eq!(p.resolve(None, Some("none")).unwrap(), None, "a null prompt is the empty prompt");
        assert_eq!(p.resolve(Some("a: "), Some("doc")).unwrap().as_deref(), Some("a: "), "the prompt wins");
        assert_eq!(p.resolve(Some(""), None).unwrap(), None, "the empty prompt overrides the default");
        let err = p.resolve(None, Some("doc")).unwrap_err().to_string();
        assert!(err.contains("`doc`") && err.contains("none, passage, query"), "{err}");

        let mut p = p;
        p.set_default_text("");
        assert_eq!(p.resolve(None, None).unwrap(), None);
        p.set_default_name("passage").unwrap();
        assert_eq!(p.resolve(None, None).unwrap().as_deref(), Some("passage: "));
        assert!(p.set_default_name("nope").is_err());
    }

    #[test]
    fn bad_configs_name_the_file() {
        let d = dir("bad-default", r#"{"prompts": {"query": "q: "}, "default_prompt_name": "doc"}"#);
        let err = Prompts::read(&d).unwrap_err().to_string();
        assert!(err.contains("config_sentence_transformers.json") && err.contains("`doc`"), "{err}");
        let d = dir("bad-json", "{");
        assert!(Prompts::read(&d).unwrap_err().to_string().contains("not valid JSON"));
        let d = dir("bad-type", r#"{"prompts": ["q"]}"#);
        assert!(Prompts::read(&d).unwrap_err().to_string().contains("must be an object"));
        let none = std::env::temp_dir().join("bulkhead-prompts-absent-folder");
        assert_eq!(Prompts::read(&none).unwrap(), Prompts::default());
    }

    #[test]
    fn matryoshka_sizes() {
        let p = Path::new("config.json");
        assert_eq!(Matryoshka::from_config(p, None).unwrap(), Matryoshka::Any);
        let any = Matryoshka::Any;
        assert!(any.check(1, 384).is_ok() && any.check(384, 384).is_ok());
        assert!(any.check(0, 384).unwrap_err().contains("at least 1"));
        assert!(any.check(385, 384).unwrap_err().contains("larger than"));
        let cfg = serde_json::json!({"matryoshka_dimensions": [256, 64, 128]});
        let only = Matryoshka::from_config(p, Some(&cfg)).unwrap();
        assert_eq!(only, Matryoshka::Only(vec![64, 128, 256]));
        assert!(only.check(128, 384).is_ok() && only.check(384, 384).is_ok());
        assert!(only.check(100, 384).unwrap_err().contains("64, 128, 256, 384"));
        let bad = serde_json::json!({"matryoshka_dimensions": "all"});
        assert!(Matryoshka::from_config(p, Some(&bad)).is_err());
    }
}
