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
use crate::task::ModelTask;

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
    /// Mean of the non-padding token states weighted by their position (1, 2, 3...).
    WeightedMean,
}

impl Pooling {
    /// The mode named as sentence-transformers names it (`pooling_mode` of 1_Pooling/config.json).
    pub fn from_sentence_transformers(name: &str) -> Option<Pooling> {
        Some(match name {
            "mean" => Pooling::Mean,
            "cls" => Pooling::Cls,
            "max" => Pooling::Max,
            "mean_sqrt_len_tokens" => Pooling::MeanSqrtLen,
            "lasttoken" => Pooling::LastToken,
            "weightedmean" => Pooling::WeightedMean,
            _ => return None,
        })
    }
}

/// Which side the tokenizer pads (`padding_side` of tokenizer_config.json). bulkhead always pads on the right:
/// with right padding no real token sees a padding token (bidirectional models mask it, causal models never look
/// ahead), and last-token pooling picks the last real token either way, as sentence-transformers does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaddingSide {
    /// Pads after the tokens (the default).
    #[default]
    Right,
    /// Pads before the tokens (decoder embedding models such as Qwen3-Embedding).
    Left,
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
    /// `model.safetensors`, or the first shard of a sharded checkpoint, when present.
    pub safetensors: Option<PathBuf>,
    /// Every safetensors file of the weights: `[model.safetensors]`, or the shards that
    /// `model.safetensors.index.json` lists, in name order; empty without safetensors.
    #[serde(default)]
    pub safetensors_shards: Vec<PathBuf>,
    /// `model.safetensors.index.json` of a sharded checkpoint.
    #[serde(default)]
    pub safetensors_index: Option<PathBuf>,
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
    /// The tokenizer's padding side (informational: see [`PaddingSide`]).
    #[serde(default)]
    pub padding_side: PaddingSide,
    /// `architectures[0]` of config.json, when present.
    pub architecture: Option<String>,
    /// `model_type` of config.json, when present.
    pub model_type: Option<String>,
    /// Named prompts and the default one (`config_sentence_transformers.json`).
    #[serde(default)]
    pub prompts: Prompts,
    /// Whether pooling includes the prompt's tokens (sentence-transformers `Pooling` `include_prompt`, default
    /// true); when false the leading tokens a prompt occupies are left out of the pooled vector.
    #[serde(default = "yes")]
    pub include_prompt: bool,
    /// The output sizes `dimensions` may ask for (config.json `matryoshka_dimensions`; any by default).
    #[serde(default)]
    pub matryoshka: Matryoshka,
    /// What the model computes: embeddings, or scores of a cross-encoder (config.json `architectures`).
    #[serde(default)]
    pub task: ModelTask,
}

fn yes() -> bool {
    true
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
            .or_else(|| existing(root.join("onnx").join("model.onnx")))
            // A model of several graphs exported as the ONNX community does (SAM2: the image encoder beside the
            // prompt encoder + mask decoder); its loader finds the others next to this one.
            .or_else(|| existing(root.join("vision_encoder.onnx")))
            .or_else(|| existing(root.join("onnx").join("vision_encoder.onnx")));
        let (safetensors_shards, safetensors_index) = safetensors_files(&root)?;
        let safetensors = safetensors_shards.first().cloned();
        if onnx.is_none() && safetensors.is_none() {
            return Err(ModelError::Missing {
                path: root,
                reason: "no model.safetensors, model.onnx or onnx/model.onnx in this folder".into(),
            });
        }

        let config = existing(root.join("config.json"));
        let config_json = config.as_deref().map(read_json).transpose()?;
        let field = |k: &str| config_json.as_ref().and_then(|c| c.get(k));

        let tokenizer_config = existing(root.join("tokenizer_config.json")).map(|p| read_json(&p)).transpose()?;
        let tok_field = |k: &str| tokenizer_config.as_ref().and_then(|c| c.get(k));
        let model_type = field("model_type").and_then(Value::as_str);
        let pad_token_id = field("pad_token_id").and_then(Value::as_i64).unwrap_or(0);
        let mut files = ModelFiles {
            name: default_name(path),
            source: path.to_path_buf(),
            tokenizer: existing(root.join("tokenizer.json")),
            safetensors,
            safetensors_shards,
            safetensors_index,
            onnx,
            pooling: Pooling::Mean,
            normalize: false,
            max_seq_length: default_max_seq_length(
                field("max_position_embeddings").and_then(Value::as_u64),
                tok_field("model_max_length").and_then(Value::as_f64),
                model_type,
                pad_token_id,
            ),
            pad_token_id,
            padding_side: match tok_field("padding_side").and_then(Value::as_str) {
                Some("left") => PaddingSide::Left,
                _ => PaddingSide::Right,
            },
            architecture: field("architectures").and_then(|a| a.get(0)).and_then(Value::as_str).map(str::to_string),
            model_type: field("model_type").and_then(Value::as_str).map(str::to_string),
            prompts: Prompts::default(),
            include_prompt: true,
            matryoshka: match &config {
                Some(path) => Matryoshka::from_config(path, config_json.as_ref())?,
                None => Matryoshka::Any,
            },
            task: config_json.as_ref().map(ModelTask::from_config).unwrap_or_default(),
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
    /// safetensors beside it. Such a model takes and returns named tensors (KServe v2 infer) instead of texts. A
    /// segmentation model's exported graphs are not one: it takes images and prompts.
    pub fn is_tensor_model(&self) -> bool {
        self.onnx.is_some()
            && self.tokenizer.is_none()
            && self.safetensors.is_none()
            && self.task != ModelTask::Segmentation
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
            let config = self.config.as_deref().map(read_json).transpose()?;
            if let Some(spec) = crate::sparse::SparseSpec::read(root, list, config.as_ref())? {
                self.task = ModelTask::SparseEmbedding(spec);
            }
        }
        if let Some(pooling_path) = existing(pooling_dir.join("config.json")) {
            self.pooling = read_pooling(&pooling_path)?;
            self.include_prompt =
                read_json(&pooling_path)?.get("include_prompt").and_then(Value::as_bool).unwrap_or(true);
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

/// The sequence limit sentence-transformers uses when `sentence_bert_config.json` sets none: the smaller of
/// `max_position_embeddings` and the tokenizer's `model_max_length`. RoBERTa-style models (XLM-RoBERTa) number
/// positions from `pad_token_id + 1`, so their table holds `pad_token_id + 1` fewer tokens than its size.
fn default_max_seq_length(
    max_positions: Option<u64>,
    tokenizer_max: Option<f64>,
    model_type: Option<&str>,
    pad: i64,
) -> usize {
    let mut limit = max_positions.unwrap_or(512);
    if matches!(model_type, Some("xlm-roberta" | "roberta" | "camembert")) {
        limit = limit.saturating_sub(pad.max(0) as u64 + 1).max(1);
    }
    if let Some(t) = tokenizer_max.filter(|t| *t >= 1.0 && *t < 1e12) {
        limit = limit.min(t as u64);
    }
    limit as usize
}

/// The safetensors files of the folder: `model.safetensors`, or the shards `model.safetensors.index.json` lists
/// (every shard must exist: a missing one is an error naming it and the index).
fn safetensors_files(root: &Path) -> Result<(Vec<PathBuf>, Option<PathBuf>), ModelError> {
    if let Some(single) = existing(root.join("model.safetensors")) {
        return Ok((vec![single], None));
    }
    let Some(index) = existing(root.join("model.safetensors.index.json")) else { return Ok((vec![], None)) };
    let v = read_json(&index)?;
    let invalid = |reason: String| ModelError::Invalid { path: index.clone(), reason };
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("no `weight_map` object (tensor name -> shard file)".into()))?;
    let mut shards: Vec<String> = vec![];
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| invalid(format!("`weight_map.{tensor}` is not a file name")))?;
        if file.contains('/') || file.contains("..") {
            return Err(invalid(format!("shard `{file}` of tensor `{tensor}` is not a file of this folder")));
        }
        if !shards.iter().any(|s| s == file) {
            shards.push(file.to_string());
        }
    }
    shards.sort();
    let mut paths = vec![];
    for s in shards {
        let p = root.join(&s);
        if !p.is_file() {
            return Err(ModelError::Missing {
                path: index.clone(),
                reason: format!("lists the shard `{s}`, which is not in the folder; download every shard"),
            });
        }
        paths.push(p);
    }
    if paths.is_empty() {
        return Err(invalid("`weight_map` is empty".into()));
    }
    Ok((paths, Some(index)))
}

/// The number of token ids a `tokenizer.json` can produce: the largest id of its vocabulary (`model.vocab`: an
/// object of token -> id for WordPiece/BPE, a list of `[token, score]` for Unigram) and of `added_tokens`, plus one.
/// Reads the JSON only; used to check that an embedding table covers every id before a model is loaded.
pub fn tokenizer_vocab_size(path: &Path) -> Result<usize, ModelError> {
    let v = read_json(path)?;
    let mut max: Option<u64> = None;
    let mut see = |id: Option<u64>| {
        if let Some(id) = id {
            max = Some(max.map_or(id, |m| m.max(id)));
        }
    };
    match v.pointer("/model/vocab") {
        Some(Value::Object(m)) => m.values().for_each(|id| see(id.as_u64())),
        Some(Value::Array(a)) if !a.is_empty() => see(Some(a.len() as u64 - 1)),
        _ => {}
    }
    if let Some(Value::Array(added)) = v.get("added_tokens") {
        added.iter().for_each(|t| see(t.get("id").and_then(Value::as_u64)));
    }
    max.map(|m| m as usize + 1).ok_or_else(|| ModelError::Invalid {
        path: path.to_path_buf(),
        reason: "no vocabulary (`model.vocab`) in this tokenizer".into(),
    })
}

/// The pooling mode of a sentence-transformers `Pooling` config: `pooling_mode` (a name, or a list of one name;
/// sentence-transformers 6) or the `pooling_mode_*` booleans (earlier versions, what hub models carry). Several
/// modes concatenated is an error naming the file.
fn read_pooling(path: &Path) -> Result<Pooling, ModelError> {
    let p = read_json(path)?;
    let invalid = |reason: String| ModelError::Invalid { path: path.to_path_buf(), reason };
    if let Some(mode) = p.get("pooling_mode") {
        let names: Vec<&str> = match mode {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            other => return Err(invalid(format!("`pooling_mode` {other} is neither a name nor a list of names"))),
        };
        let [name] = names.as_slice() else {
            return Err(invalid(format!(
                "`pooling_mode` {mode} concatenates several poolings; bulkhead supports one (cls, mean, max, \
                 mean_sqrt_len_tokens, weightedmean, lasttoken)"
            )));
        };
        return Pooling::from_sentence_transformers(name)
            .ok_or_else(|| invalid(format!("unknown `pooling_mode` `{name}`")));
    }
    let on = |k: &str| p.get(k).and_then(Value::as_bool).unwrap_or(false);
    let modes: Vec<Pooling> = [
        ("pooling_mode_cls_token", Pooling::Cls),
        ("pooling_mode_lasttoken", Pooling::LastToken),
        ("pooling_mode_max_tokens", Pooling::Max),
        ("pooling_mode_mean_sqrt_len_tokens", Pooling::MeanSqrtLen),
        ("pooling_mode_weightedmean_tokens", Pooling::WeightedMean),
        ("pooling_mode_mean_tokens", Pooling::Mean),
    ]
    .into_iter()
    .filter(|(k, _)| on(k))
    .map(|(_, m)| m)
    .collect();
    match modes.as_slice() {
        [] => Ok(Pooling::Mean),
        [one] => Ok(*one),
        _ => Err(invalid(format!(
            "several `pooling_mode_*` flags are true ({modes:?}); bulkhead supports one pooling mode"
        ))),
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
    fn reads_sentence_transformers_6_pooling_shards_and_tokenizer_limits() {
        let d = tmp("st6");
        write(&d, "config.json", r#"{"model_type":"xlm-roberta","max_position_embeddings":514,"pad_token_id":1}"#);
        write(
            &d,
            "model.safetensors.index.json",
            r#"{"weight_map":{"a":"model-2.safetensors","b":"model-1.safetensors"}}"#,
        );
        write(&d, "model-1.safetensors", "x");
        write(&d, "model-2.safetensors", "x");
        write(&d, "1_Pooling/config.json", r#"{"embedding_dimension":8,"pooling_mode":"lasttoken"}"#);
        write(&d, "tokenizer_config.json", r#"{"padding_side":"left"}"#);
        let m = ModelFiles::open(&d).unwrap();
        assert_eq!(m.pooling, Pooling::LastToken);
        assert_eq!(m.padding_side, PaddingSide::Left);
        // XLM-RoBERTa numbers positions from pad + 1: 514 rows hold 512 tokens.
        assert_eq!(m.max_seq_length, 512);
        let names: Vec<_> = m.safetensors_shards.iter().map(|p| p.file_name().unwrap().to_owned()).collect();
        assert_eq!(names, ["model-1.safetensors", "model-2.safetensors"]);
        assert!(m.safetensors.as_ref().unwrap().ends_with("model-1.safetensors") && m.safetensors_index.is_some());

        write(&d, "tokenizer_config.json", r#"{"model_max_length":128}"#);
        write(&d, "1_Pooling/config.json", r#"{"pooling_mode":["cls","mean"]}"#);
        let err = ModelFiles::open(&d).unwrap_err().to_string();
        assert!(err.contains("1_Pooling") && err.contains("several poolings"), "{err}");
        write(&d, "1_Pooling/config.json", r#"{"pooling_mode_weightedmean_tokens":true}"#);
        let m = ModelFiles::open(&d).unwrap();
        assert_eq!((m.pooling, m.max_seq_length), (Pooling::WeightedMean, 128));

        std::fs::remove_file(d.join("model-2.safetensors")).unwrap();
        let err = ModelFiles::open(&d).unwrap_err().to_string();
        assert!(err.contains("model.safetensors.index.json") && err.contains("model-2.safetensors"), "{err}");
    }

    #[test]
    fn counts_tokenizer_ids() {
        let d = tmp("tok");
        write(&d, "wp.json", r#"{"model":{"vocab":{"[PAD]":0,"a":1,"b":7}},"added_tokens":[{"id":9}]}"#);
        assert_eq!(tokenizer_vocab_size(&d.join("wp.json")).unwrap(), 10);
        write(&d, "uni.json", r#"{"model":{"vocab":[["<s>",0.0],["a",-1.0],["b",-2.0]]}}"#);
        assert_eq!(tokenizer_vocab_size(&d.join("uni.json")).unwrap(), 3);
        write(&d, "none.json", r#"{"model":{}}"#);
        assert!(tokenizer_vocab_size(&d.join("none.json")).unwrap_err().to_string().contains("no vocabulary"));
    }

    #[test]
    fn names_package_folders_after_their_parent() {
        let d = tmp("pkg").join("my_model").join("model");
        write(&d, "model.onnx", "x");
        assert_eq!(ModelFiles::open(&d).unwrap().name, "my_model");
    }
}
