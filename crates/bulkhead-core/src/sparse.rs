//! Sparse embeddings (SPLADE): what a sentence-transformers `SparseEncoder` folder says about its output
//! ([`SparseSpec`], read from `modules.json`, the `SpladePooling` module's `config.json` and
//! `config_sentence_transformers.json`), and how one vocabulary-sized vector becomes the active dimensions a route
//! returns ([`SparseSpec::sparsify`]).
//!
//! A SPLADE model is a masked-language model (`*ForMaskedLM`) whose MLM logits go through
//! `log(1 + relu(logits))` (twice `log1p` for `log1p_relu`) and are pooled over the tokens (`max`, or `sum`), one
//! value per vocabulary entry; `max_active_dims` keeps the largest values of each vector, as
//! `SparseEncoder.encode` does. The pooling runs inside the model's graph; the sparsification runs on its output.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ModelError;

/// How SPLADE pools the per-token values over the sequence (`pooling_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SparsePooling {
    /// The largest value per vocabulary entry over the tokens (SPLADE v2 and later).
    #[default]
    Max,
    /// The sum over the tokens (the first SPLADE).
    Sum,
}

/// What SPLADE applies to the MLM logits before pooling (`activation_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SparseActivation {
    /// `log(1 + relu(x))`.
    #[default]
    Relu,
    /// `log(1 + log(1 + relu(x)))` (OpenSearch's SPLADE models).
    Log1pRelu,
}

/// The sparse output of a SPLADE model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SparseSpec {
    /// Dimensions of the pooled vector: the vocabulary size of the MLM head (`vocab_size` of config.json).
    pub vocab: usize,
    /// Pooling over the tokens.
    pub pooling: SparsePooling,
    /// Activation before pooling.
    pub activation: SparseActivation,
    /// Keep only this many largest values per vector (`max_active_dims`; `None`: every non-zero value).
    pub max_active_dims: Option<usize>,
}

/// One active dimension of a sparse vector: a vocabulary index and its weight.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SparseValue {
    /// The vocabulary index (token id).
    pub index: u32,
    /// Its weight.
    pub value: f32,
}

impl SparseSpec {
    /// The spec of the sentence-transformers folder `root` whose `modules.json` lists `modules`: `Some` when one
    /// of them is a `SpladePooling`; `config` is config.json (for `vocab_size`).
    pub fn read(root: &Path, modules: &[Value], config: Option<&Value>) -> Result<Option<SparseSpec>, ModelError> {
        let Some(module) = modules
            .iter()
            .find(|m| m.get("type").and_then(Value::as_str).is_some_and(|t| t.ends_with("SpladePooling")))
        else {
            return Ok(None);
        };
        let dir = root.join(module.get("path").and_then(Value::as_str).unwrap_or_default());
        let pooling_config = dir.join("config.json");
        let pooling_json = read_optional(&pooling_config)?;
        let field = |k: &str| pooling_json.as_ref().and_then(|c| c.get(k)).and_then(Value::as_str);
        let invalid = |path: &Path, reason: String| ModelError::Invalid { path: path.to_path_buf(), reason };
        let pooling = match field("pooling_strategy").unwrap_or("max") {
            "max" => SparsePooling::Max,
            "sum" => SparsePooling::Sum,
            other => {
                return Err(invalid(&pooling_config, format!("pooling_strategy `{other}` is not `max` or `sum`")));
            }
        };
        let activation = match field("activation_function").unwrap_or("relu") {
            "relu" => SparseActivation::Relu,
            "log1p_relu" => SparseActivation::Log1pRelu,
            other => {
                return Err(invalid(
                    &pooling_config,
                    format!("activation_function `{other}` is not `relu` or `log1p_relu`"),
                ));
            }
        };
        let config_path = root.join("config.json");
        let vocab = config.and_then(|c| c.get("vocab_size")).and_then(Value::as_u64).ok_or_else(|| {
            invalid(&config_path, "a SPLADE model's config.json needs `vocab_size` (its MLM head's outputs)".into())
        })? as usize;
        let st_path = root.join("config_sentence_transformers.json");
        let max_active_dims = match read_optional(&st_path)?.as_ref().and_then(|c| c.get("max_active_dims")) {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Some(n as usize),
                _ => return Err(invalid(&st_path, format!("max_active_dims must be a positive integer, found {v}"))),
            },
        };
        Ok(Some(SparseSpec { vocab, pooling, activation, max_active_dims }))
    }

    /// Bytes that tell specs apart in cache keys of the graphs built for them.
    pub fn digest(&self) -> Vec<u8> {
        format!("splade {:?} {:?} {}", self.pooling, self.activation, self.vocab).into_bytes()
    }

    /// The active dimensions of one pooled vector, indices ascending: every value that is not zero or, with
    /// `max_active_dims`, the largest that many by magnitude (as `SparseEncoder.encode` keeps them; equal values
    /// at the cut keep the lower indices).
    pub fn sparsify(&self, vector: &[f32]) -> Vec<SparseValue> {
        let mut active: Vec<SparseValue> = vector
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0.0)
            .map(|(i, &value)| SparseValue { index: i as u32, value })
            .collect();
        if let Some(k) = self.max_active_dims.filter(|&k| k < active.len()) {
            active.sort_by(|a, b| b.value.abs().total_cmp(&a.value.abs()).then(a.index.cmp(&b.index)));
            active.truncate(k);
            active.sort_by_key(|v| v.index);
        }
        active
    }
}

fn read_optional(path: &Path) -> Result<Option<Value>, ModelError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ModelError::Unreadable { path: path.to_path_buf(), reason: e.to_string() })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ModelError::Invalid { path: path.to_path_buf(), reason: format!("not valid JSON: {e}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(k: Option<usize>) -> SparseSpec {
        SparseSpec { vocab: 6, pooling: SparsePooling::Max, activation: SparseActivation::Relu, max_active_dims: k }
    }

    #[test]
    fn sparsify_keeps_non_zeros_or_the_top_k_in_index_order() {
        let v = [0.0, 0.5, 0.0, 2.0, 1.0, 0.25];
        let all: Vec<u32> = spec(None).sparsify(&v).iter().map(|s| s.index).collect();
        assert_eq!(all, vec![1, 3, 4, 5]);
        let top = spec(Some(2)).sparsify(&v);
        assert_eq!(top, vec![SparseValue { index: 3, value: 2.0 }, SparseValue { index: 4, value: 1.0 }]);
        assert_eq!(spec(Some(10)).sparsify(&v).len(), 4);
        assert!(spec(None).sparsify(&[0.0; 4]).is_empty());
    }

    #[test]
    fn reads_the_fixture_folders() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/retrieval/splade-bert-top8");
        let modules: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(root.join("modules.json")).unwrap()).unwrap();
        let config: Value = serde_json::from_str(&std::fs::read_to_string(root.join("config.json")).unwrap()).unwrap();
        let s = SparseSpec::read(&root, &modules, Some(&config)).unwrap().unwrap();
        assert_eq!(s, SparseSpec { max_active_dims: Some(8), vocab: 420, ..spec(None) });
        assert_eq!(SparseSpec::read(&root, &[], Some(&config)).unwrap(), None);
    }
}
