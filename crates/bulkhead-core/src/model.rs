//! What a model is made of: the files of a Hugging Face style folder or a bare `.onnx`, and the
//! sentence-transformers settings (pooling, normalisation, maximum sequence length) found beside them.
//!
//! Discovery only reads small JSON files; weights are opened by the engines.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ModelError;
use crate::prompts::{Matryoshka, Prompts};

/// How token states become one vector per input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean of the non-padding token states.
    Mean,
    /// The first (`[CLS]`) token state.
    Cls,
    /// Element-wise maximum over non-padding tokens.
    Max,
    /// Sum of non-padding token states divided by sqrt(length).
    MeanSqrtLen,
    /// The last non-padding token state.
    LastToken,
}

/// Which weight files the folder has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightsFormat {
    /// An ONNX graph.
    Onnx,
    /// Hugging Face safetensors.
    Safetensors,
}

/// A model on disk, discovered from a folder or an `.onnx` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFiles {
    /// A display name (the folder name unless given).
    pub name: String,
    /// The folder or file the user gave.
    pub source: PathBuf,
    /// `config.json`, when present.
    pub config: Option<PathBuf>,
    /// `tokenizer.json`, when present.
    pub tokenizer: Option<PathBuf>,
    /// `model.safetensors`, when present.
    pub safetensors: Option<PathBuf>,
    /// `model.onnx` / `onnx/model.onnx` / the file given.
    pub onnx: Option<PathBuf>,
    /// Pooling mode.
    pub pooling: Pooling,
    /// Whether embeddings are L2-normalised (sentence-transformers `Normalize` module).
    pub normalize: bool,
    /// Inputs are truncated to this many tokens.
    pub max_seq_length: usize,
    /// Padding token id.
    pub pad_token_id: i64,
    /// `architectures[0]` of config.json, when present.
    pub architecture: Option<String>,
    /// `model_type` of config.json, when present.
    pub model_type: Option<String>,
    /// Named prompts and the default one (`config_sentence_transformers.json`).
    pub prompts: Prompts,
    /// Whether pooling includes the prompt's tokens (sentence-transformers `Pooling` `include_prompt`, default
    /// true); when false the leading tokens a prompt occupies are left out of the pooled vector.
    pub include_prompt: bool,
    /// The output sizes `dimensions` may ask for (config.json `matryoshka_dimensions`; any by default).
    pub matryoshka: Matryoshka,
}

fn read_json(path: &Path) -> Result<Value, ModelError> {
    let text = fs::read_to_string(path)
        .map_err(|e| ModelError::Unreadable { path: path.to_path_buf(), reason: e.to_string() })?;
    serde_json::from_str(&text)
        .map_err(|e| ModelError::Invalid { path: path.to_path_buf(), reason: format!("not valid JSON: {e}") })
}

fn existing(path: PathBuf) -> Option<PathBuf> {
    path.is_file().then_some(path)
}

impl ModelFiles {
    /// Discovers the model at `path` (a folder or an `.onnx` file).
    pub fn open(path: &Path) -> Result<ModelFiles, ModelError> {
        let meta = fs::metadata(path).map_err(|e| ModelError::Unreadable {
            path: path.to_path_buf(),
            reason: format!("{e}; give a Hugging Face model folder or an .onnx file"),
        })?;
        let (root, onnx_file) = if meta.is_file() {
            if path.extension().and_then(|e| e.to_str()) != Some("onnx") {
                return Err(ModelError::Invalid {
                    path: path.to_path_buf(),
                    reason: "not an .onnx file; give an .onnx file or a Hugging Face model folder".into(),
                });
            }
            (path.parent().unwrap_or(Path::new(".")).to_path_buf(), Some(path.to_path_buf()))
        } else {
            (path.to_path_buf(), None)
        };
        // Reading the folder itself surfaces permission problems early with the folder's name.
        fs::read_dir(&root).map_err(|e| ModelError::Unreadable { path: root.clone(), reason: e.to_string() })?;

        let onnx = onnx_file
            .or_else(|| existing(root.join("model.onnx")))
            .or_else(|| existing(root.join("onnx").join("model.onnx")));
        let safetensors = existing(root.join("model.safetensors"));
        if onnx.is_none() && safetensors.is_none() {
            return Err(ModelError::Missing {
                path: root,
                reason: "no model.safetensors, model.onnx or onnx/model.onnx in this folder".into(),
            });
        }

        let config = existing(root.join("config.json"));
        let config_json = config.as_deref().map(read_json).transpose()?;
        let field = |k: &str| config_json.as_ref().and_then(|c| c.get(k));

        let mut files = ModelFiles {
            name: default_name(path),
            source: path.to_path_buf(),
            tokenizer: existing(root.join("tokenizer.json")),
            safetensors,
            onnx,
            pooling: Pooling::Mean,
            normalize: false,
            max_seq_length: field("max_position_embeddings").and_then(Value::as_u64).unwrap_or(512) as usize,
            pad_token_id: field("pad_token_id").and_then(Value::as_i64).unwrap_or(0),
            architecture: field("architectures").and_then(|a| a.get(0)).and_then(Value::as_str).map(str::to_string),
            model_type: field("model_type").and_then(Value::as_str).map(str::to_string),
            prompts: Prompts::default(),
            include_prompt: true,
            matryoshka: match &config {
                Some(path) => Matryoshka::from_config(path, config_json.as_ref())?,
                None => Matryoshka::Any,
            },
            config,
        };
        files.read_sentence_transformers(&root)?;
        Ok(files)
    }

    /// Uses the tokenizer at `path` instead of the one beside the model.
    pub fn with_tokenizer(mut self, path: &Path) -> Result<ModelFiles, ModelError> {
        if !path.is_file() {
            return Err(ModelError::Unreadable { path: path.to_path_buf(), reason: "no such file".into() });
        }
        self.tokenizer = Some(path.to_path_buf());
        Ok(self)
    }

    /// Whether this is a plain tensor model rather than an embedding model: an ONNX graph with no tokenizer and no
    /// safetensors beside it. Such a model takes and returns named tensors (KServe v2 infer) instead of texts.
    pub fn is_tensor_model(&self) -> bool {
        self.onnx.is_some() && self.tokenizer.is_none() && self.safetensors.is_none()
    }

    /// The weight formats present, ONNX first.
    pub fn formats(&self) -> Vec<WeightsFormat> {
        let mut v = vec![];
        if self.onnx.is_some() {
            v.push(WeightsFormat::Onnx);
        }
        if self.safetensors.is_some() {
            v.push(WeightsFormat::Safetensors);
        }
        v
    }

    fn read_sentence_transformers(&mut self, root: &Path) -> Result<(), ModelError> {
        let mut pooling_dir = root.join("1_Pooling");
        if let Some(modules_path) = existing(root.join("modules.json")) {
            let modules = read_json(&modules_path)?;
            let list = modules.as_array().ok_or_else(|| ModelError::Invalid {
                path: modules_path.clone(),
                reason: "expected a JSON array of modules".into(),
            })?;
            for m in list {
                let ty = m.get("type").and_then(Value::as_str).unwrap_or_default();
                if ty.ends_with(".Normalize") {
                    self.normalize = true;
                }
                if ty.ends_with(".Pooling") {
                    if let Some(p) = m.get("path").and_then(Value::as_str) {
                        pooling_dir = root.join(p);
                    }
                }
            }
        }
        if let Some(pooling_path) = existing(pooling_dir.join("config.json")) {
            let p = read_json(&pooling_path)?;
            let on = |k: &str| p.get(k).and_then(Value::as_bool).unwrap_or(false);
            self.pooling = if on("pooling_mode_cls_token") {
                Pooling::Cls
            } else if on("pooling_mode_lasttoken") {
                Pooling::LastToken
            } else if on("pooling_mode_max_tokens") {
                Pooling::Max
            } else if on("pooling_mode_mean_sqrt_len_tokens") {
                Pooling::MeanSqrtLen
            } else {
                Pooling::Mean
            };
            self.include_prompt = p.get("include_prompt").and_then(Value::as_bool).unwrap_or(true);
        }
        self.prompts = Prompts::read(root)?;
        if let Some(st) = existing(root.join("sentence_bert_config.json")) {
            if let Some(n) = read_json(&st)?.get("max_seq_length").and_then(Value::as_u64) {
                self.max_seq_length = n as usize;
            }
        }
        Ok(())
    }
}

fn default_name(path: &Path) -> String {
    let clean = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let stem = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().into_owned());
    match stem(&clean) {
        // Folders called `model` or `onnx` (as Python packages ship them) are named after their parent.
        Some(s) if s == "model" || s == "onnx" => clean.parent().and_then(stem).unwrap_or(s),
        Some(s) => s,
        None => "model".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let p = dir.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bulkhead-core-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_sentence_transformers_settings() {
        let d = tmp("st");
        write(&d, "model.safetensors", "x");
        write(
            &d,
            "config.json",
            r#"{"architectures":["BertModel"],"model_type":"bert","max_position_embeddings":512,"pad_token_id":0}"#,
        );
        write(
            &d,
            "modules.json",
            r#"[{"type":"sentence_transformers.models.Pooling","path":"1_Pooling"},{"type":"sentence_transformers.models.Normalize","path":"2_Normalize"}]"#,
        );
        write(&d, "1_Pooling/config.json", r#"{"pooling_mode_cls_token":true}"#);
        write(&d, "sentence_bert_config.json", r#"{"max_seq_length":256}"#);
        let m = ModelFiles::open(&d).unwrap();
        assert_eq!(m.pooling, Pooling::Cls);
        assert!(m.normalize);
        assert_eq!(m.max_seq_length, 256);
        assert_eq!(m.architecture.as_deref(), Some("BertModel"));
        assert_eq!(m.formats(), vec![WeightsFormat::Safetensors]);
        assert!(m.include_prompt, "pooling includes the prompt unless its config says otherwise");
        assert_eq!(m.prompts, Prompts::default());

        write(&d, "1_Pooling/config.json", r#"{"pooling_mode_mean_tokens":true,"include_prompt":false}"#);
        write(
            &d,
            "config_sentence_transformers.json",
            r#"{"prompts":{"query":"query: "},"default_prompt_name":"query"}"#,
        );
        let m = ModelFiles::open(&d).unwrap();
        assert!(!m.include_prompt);
        assert_eq!(m.prompts.resolve(None, None).unwrap().as_deref(), Some("query: "));
    }

    #[test]
    fn errors_name_the_file() {
        let d = tmp("bad");
        let err = ModelFiles::open(&d.join("nope")).unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("No such file"), "{err}");
        let err = ModelFiles::open(&d).unwrap_err().to_string();
        assert!(err.contains("no model.safetensors"), "{err}");
        write(&d, "onnx/model.onnx", "x");
        write(&d, "config.json", "{not json");
        let err = ModelFiles::open(&d).unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains("not valid JSON"), "{err}");
        write(&d, "config.json", "{}");
        let m = ModelFiles::open(&d).unwrap();
        assert!(m.is_tensor_model(), "an ONNX graph without a tokenizer takes tensors");
        assert!(m.onnx.unwrap().ends_with("onnx/model.onnx"));
        assert_eq!((m.pooling, m.normalize, m.max_seq_length), (Pooling::Mean, false, 512));
        let err = ModelFiles::open(&d.join("config.json")).unwrap_err().to_string();
        assert!(err.contains("not an .onnx file"), "{err}");
    }

    #[test]
    fn names_package_folders_after_their_parent() {
        let d = tmp("pkg").join("my_model").join("model");
        write(&d, "model.onnx", "x");
        assert_eq!(ModelFiles::open(&d).unwrap().name, "my_model");
    }
}
