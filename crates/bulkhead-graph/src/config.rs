//! Which architecture a `config.json` describes, and typed access to its fields: every error names the file and
//! the field.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::GraphError;

/// The architecture families the builder writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// BERT encoders (all-MiniLM, bge, e5, gte-small...).
    Bert,
    /// RoBERTa / XLM-RoBERTa encoders (bge-m3, multilingual-e5): BERT with positions counted from `pad + 1`.
    XlmRoberta,
    /// Alibaba GTE `NewModel` (gte-base-en-v1.5, gte-multilingual-base).
    Gte,
    /// `NomicBertModel` (nomic-embed-text-v1 / v1.5).
    Nomic,
    /// `ModernBertModel` (gte-modernbert, nomic-modernbert, ModernBERT-base).
    ModernBert,
    /// Qwen3 / Qwen2 / Mistral / Llama decoders (Qwen3-Embedding, gte-Qwen2, stella, e5-mistral).
    Decoder,
}

/// `(architectures[0], family)` the builder accepts.
pub const ARCHITECTURES: &[(&str, Family)] = &[
    ("BertModel", Family::Bert),
    ("BertForMaskedLM", Family::Bert),
    ("BertForPreTraining", Family::Bert),
    ("BertForSequenceClassification", Family::Bert),
    ("XLMRobertaModel", Family::XlmRoberta),
    ("XLMRobertaForMaskedLM", Family::XlmRoberta),
    ("XLMRobertaForSequenceClassification", Family::XlmRoberta),
    ("RobertaModel", Family::XlmRoberta),
    ("RobertaForMaskedLM", Family::XlmRoberta),
    ("RobertaForSequenceClassification", Family::XlmRoberta),
    ("NewModel", Family::Gte),
    ("NewForMaskedLM", Family::Gte),
    ("NewForSequenceClassification", Family::Gte),
    ("NomicBertModel", Family::Nomic),
    ("NomicBertForPreTraining", Family::Nomic),
    ("ModernBertModel", Family::ModernBert),
    ("ModernBertForMaskedLM", Family::ModernBert),
    ("ModernBertForSequenceClassification", Family::ModernBert),
    ("Qwen3Model", Family::Decoder),
    ("Qwen3ForCausalLM", Family::Decoder),
    ("Qwen3ForSequenceClassification", Family::Decoder),
    ("Qwen2Model", Family::Decoder),
    ("Qwen2ForCausalLM", Family::Decoder),
    ("Qwen2ForSequenceClassification", Family::Decoder),
    ("MistralModel", Family::Decoder),
    ("MistralForCausalLM", Family::Decoder),
    ("LlamaModel", Family::Decoder),
    ("LlamaForCausalLM", Family::Decoder),
];

/// `(model_type, family)` accepted when config.json has no `architectures`.
const MODEL_TYPES: &[(&str, Family)] = &[
    ("bert", Family::Bert),
    ("xlm-roberta", Family::XlmRoberta),
    ("roberta", Family::XlmRoberta),
    ("new", Family::Gte),
    ("nomic_bert", Family::Nomic),
    ("modernbert", Family::ModernBert),
    ("qwen3", Family::Decoder),
    ("qwen2", Family::Decoder),
    ("mistral", Family::Decoder),
    ("llama", Family::Decoder),
];

/// The architecture names, for [`crate::supported_architectures`].
pub const SUPPORTED_ARCHITECTURES: &[&str] = &[
    "BertModel",
    "BertForMaskedLM",
    "BertForPreTraining",
    "BertForSequenceClassification",
    "XLMRobertaModel",
    "XLMRobertaForMaskedLM",
    "XLMRobertaForSequenceClassification",
    "RobertaModel",
    "RobertaForMaskedLM",
    "RobertaForSequenceClassification",
    "NewModel",
    "NewForMaskedLM",
    "NewForSequenceClassification",
    "NomicBertModel",
    "NomicBertForPreTraining",
    "ModernBertModel",
    "ModernBertForMaskedLM",
    "ModernBertForSequenceClassification",
    "Qwen3Model",
    "Qwen3ForCausalLM",
    "Qwen3ForSequenceClassification",
    "Qwen2Model",
    "Qwen2ForCausalLM",
    "Qwen2ForSequenceClassification",
    "MistralModel",
    "MistralForCausalLM",
    "LlamaModel",
    "LlamaForCausalLM",
];

/// A parsed config.json.
pub(crate) struct Cfg {
    pub path: PathBuf,
    pub v: Value,
}

impl Cfg {
    /// Parses `text` (the content of `path`).
    pub fn parse(path: &Path, text: &str) -> Result<Cfg, GraphError> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| GraphError::Config { path: path.to_path_buf(), reason: format!("not valid JSON: {e}") })?;
        Ok(Cfg { path: path.to_path_buf(), v })
    }

    /// A config error naming the file.
    pub fn err(&self, reason: String) -> GraphError {
        GraphError::Config { path: self.path.clone(), reason }
    }

    /// An unsupported-variant error naming the file.
    pub fn unsupported(&self, reason: String) -> GraphError {
        GraphError::Unsupported { path: self.path.clone(), reason }
    }

    /// The field at a JSON pointer-like dotted path (`rope_scaling.type`).
    pub fn get(&self, key: &str) -> Option<&Value> {
        let mut v = &self.v;
        for part in key.split('.') {
            v = v.get(part)?;
        }
        (!v.is_null()).then_some(v)
    }

    /// A positive integer field (the first of `keys` present); missing without `default` is an error.
    pub fn usize_of(&self, keys: &[&str], default: Option<usize>) -> Result<usize, GraphError> {
        match keys.iter().find_map(|k| self.get(k).map(|v| (k, v))) {
            Some((k, x)) => x
                .as_u64()
                .filter(|&n| n > 0 && n <= 1 << 24)
                .map(|n| n as usize)
                .ok_or_else(|| self.err(format!("`{k}` must be a positive integer, found {x}"))),
            None => default.ok_or_else(|| self.err(format!("`{}` is missing", keys[0]))),
        }
    }

    /// A required positive integer field.
    pub fn usize(&self, key: &str) -> Result<usize, GraphError> {
        self.usize_of(&[key], None)
    }

    /// A non-negative integer field with a default.
    pub fn count_or(&self, key: &str, default: usize) -> Result<usize, GraphError> {
        match self.get(key) {
            None => Ok(default),
            Some(x) => x
                .as_u64()
                .filter(|&n| n <= 1 << 24)
                .map(|n| n as usize)
                .ok_or_else(|| self.err(format!("`{key}` must be a non-negative integer, found {x}"))),
        }
    }

    /// A positive number field (the first of `keys` present) with a default.
    pub fn f64_of(&self, keys: &[&str], default: Option<f64>) -> Result<f64, GraphError> {
        match keys.iter().find_map(|k| self.get(k).map(|v| (k, v))) {
            Some((k, x)) => x
                .as_f64()
                .filter(|e| *e > 0.0 && e.is_finite())
                .ok_or_else(|| self.err(format!("`{k}` must be a positive number, found {x}"))),
            None => default.ok_or_else(|| self.err(format!("`{}` is missing", keys[0]))),
        }
    }

    /// A layer-norm epsilon (the first of `keys` present), in `(0, 1)`.
    pub fn eps(&self, keys: &[&str], default: f64) -> Result<f32, GraphError> {
        let e = self.f64_of(keys, Some(default))?;
        if e >= 1.0 {
            return Err(self.err(format!("`{}` must be below 1, found {e}", keys[0])));
        }
        Ok(e as f32)
    }

    /// A string field with a default.
    pub fn str_or<'s>(&'s self, key: &str, default: &'s str) -> &'s str {
        self.get(key).and_then(Value::as_str).unwrap_or(default)
    }

    /// A boolean field with a default.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, GraphError> {
        match self.get(key) {
            None => Ok(default),
            Some(x) => x.as_bool().ok_or_else(|| self.err(format!("`{key}` must be true or false, found {x}"))),
        }
    }

    /// `hidden` split into `heads`, checked.
    pub fn head_size(&self, hidden: usize, heads: usize) -> Result<usize, GraphError> {
        if !hidden.is_multiple_of(heads) {
            return Err(self.err(format!("hidden_size {hidden} is not a multiple of num_attention_heads {heads}")));
        }
        Ok(hidden / heads)
    }

    /// The architecture family, or an error listing the supported architectures.
    pub fn family(&self) -> Result<Family, GraphError> {
        let architecture = self.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str);
        let model_type = self.get("model_type").and_then(Value::as_str);
        let found = match architecture {
            Some(a) => ARCHITECTURES.iter().find(|(n, _)| *n == a).map(|(_, f)| *f),
            None => MODEL_TYPES.iter().find(|(t, _)| Some(*t) == model_type).map(|(_, f)| *f),
        };
        found.ok_or_else(|| unsupported_architecture(architecture, model_type))
    }
}

/// The error for an architecture the builder does not write.
fn unsupported_architecture(architecture: Option<&str>, model_type: Option<&str>) -> GraphError {
    // The candle engine runs the BERT, XLM-RoBERTa, ModernBERT, NomicBERT and Qwen2/Qwen3/Mistral families; say so
    // only when it is true for this model type.
    let candle_runs = matches!(
        model_type,
        Some("bert" | "xlm-roberta" | "modernbert" | "nomic_bert" | "qwen3" | "qwen2" | "mistral")
    );
    let hint = if architecture.is_some_and(|a| crate::vision::TOWER_ARCHITECTURES.contains(&a)) {
        "it is a two-tower image-text model: build its vision and text graphs with `build_tower_cached`".to_string()
    } else if model_type == Some("whisper") {
        "it is a speech-to-text model: it runs as an encoder and a decoder step (crate bulkhead-speech, on the \
         graphs of bulkhead_graph::whisper), not as an embedding model"
            .to_string()
    } else if model_type == Some("qwen3_asr") {
        "it is a speech-to-text model: it runs as an audio encoder and a decoder with key/value caches (crate \
         bulkhead-speech, on the graphs of bulkhead_graph::qwen3_asr), not as an embedding model"
            .to_string()
    } else if model_type == Some("sam2") {
        "SAM2 is built as two graphs (vision encoder, prompt encoder + mask decoder) by \
         `bulkhead_graph::sam2::build_sam2_cached`"
            .to_string()
    } else if candle_runs {
        "the `candle:` units may still run it".to_string()
    } else {
        "no bulkhead engine runs it from safetensors; export it to ONNX and give the .onnx file".to_string()
    };
    GraphError::UnsupportedArchitecture {
        architecture: architecture.unwrap_or("(none)").to_string(),
        model_type: model_type.unwrap_or("(none)").to_string(),
        supported: SUPPORTED_ARCHITECTURES.join(", "),
        hint,
    }
}

/// Rotary scaling of the decoders and GTE: `rope_scaling` (`type` or `rope_type`) or, as transformers 5 writes it,
/// `rope_parameters.rope_type`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RopeScaling {
    /// Plain rotary embeddings.
    None,
    /// Positions divided by `factor` (`linear`).
    Linear(f64),
    /// GTE's fixed NTK scaling: `base · factor`, frequencies divided by `factor^(2 / dim)` (`ntk`, no `mixed_b`).
    Ntk(f64),
}

impl Cfg {
    /// The rotary base: `rope_theta`, or `rope_parameters.rope_theta`.
    pub fn rope_theta(&self, default: f64) -> Result<f64, GraphError> {
        self.f64_of(&["rope_theta", "rope_parameters.rope_theta"], Some(default))
    }

    /// The rotary scaling; `accepted` lists the types this architecture's reference implements (an unknown type is
    /// an error naming the field and the accepted types).
    pub fn rope_scaling(&self, accepted: &[&str]) -> Result<RopeScaling, GraphError> {
        let (field, ty, params) = if let Some(s) = self.get("rope_scaling") {
            let ty = s.get("type").or_else(|| s.get("rope_type")).and_then(Value::as_str).unwrap_or("default");
            ("rope_scaling", ty.to_string(), s.clone())
        } else if let Some(p) = self.get("rope_parameters") {
            let ty = p.get("rope_type").and_then(Value::as_str).unwrap_or("default");
            ("rope_parameters", ty.to_string(), p.clone())
        } else {
            return Ok(RopeScaling::None);
        };
        if ty == "default" {
            return Ok(RopeScaling::None);
        }
        if !accepted.contains(&ty.as_str()) {
            return Err(self.unsupported(format!(
                "`{field}` type `{ty}` is not supported (supported: default, {}); no bulkhead engine runs it from \
                 safetensors",
                accepted.join(", ")
            )));
        }
        let factor = params
            .get("factor")
            .and_then(Value::as_f64)
            .filter(|f| *f > 0.0 && f.is_finite())
            .ok_or_else(|| self.err(format!("`{field}.factor` must be a positive number for rope type `{ty}`")))?;
        match ty.as_str() {
            "linear" => Ok(RopeScaling::Linear(factor)),
            "ntk" => {
                if params.get("mixed_b").is_some_and(|m| !m.is_null()) {
                    return Err(self.unsupported(format!("`{field}.mixed_b` (mixed NTK scaling) is not supported")));
                }
                Ok(RopeScaling::Ntk(factor))
            }
            _ => Err(self.unsupported(format!("`{field}` type `{ty}` is not supported"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Cfg {
        Cfg::parse(Path::new("config.json"), text).unwrap()
    }

    #[test]
    fn the_supported_list_is_the_table() {
        let names: Vec<&str> = ARCHITECTURES.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, SUPPORTED_ARCHITECTURES);
    }

    #[test]
    fn families_by_architecture_or_model_type() {
        assert_eq!(cfg(r#"{"architectures":["XLMRobertaModel"]}"#).family().unwrap(), Family::XlmRoberta);
        assert_eq!(cfg(r#"{"model_type":"qwen3"}"#).family().unwrap(), Family::Decoder);
        let e = cfg(r#"{"architectures":["LlamaForSequenceClassification"],"model_type":"llama"}"#).family();
        let e = e.unwrap_err().to_string();
        assert!(e.contains("LlamaForSequenceClassification") && e.contains("Qwen3Model"), "{e}");
        let e = cfg(r#"{"architectures":["T5EncoderModel"],"model_type":"t5"}"#).family().unwrap_err().to_string();
        assert!(e.contains("no bulkhead engine"), "{e}");
    }

    #[test]
    fn rope_scaling_types() {
        let c = cfg(r#"{"rope_scaling":{"type":"ntk","factor":2.0}}"#);
        assert_eq!(c.rope_scaling(&["ntk"]).unwrap(), RopeScaling::Ntk(2.0));
        let c = cfg(r#"{"rope_parameters":{"rope_type":"default","rope_theta":1000000.0}}"#);
        assert_eq!(c.rope_scaling(&["linear"]).unwrap(), RopeScaling::None);
        assert_eq!(c.rope_theta(10000.0).unwrap(), 1e6);
        let c = cfg(r#"{"rope_scaling":{"rope_type":"yarn","factor":4.0}}"#);
        let e = c.rope_scaling(&["linear"]).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("`rope_scaling` type `yarn`"), "{e}");
        let c = cfg(r#"{"rope_scaling":{"type":"linear"}}"#);
        assert!(c.rope_scaling(&["linear"]).unwrap_err().to_string().contains("rope_scaling.factor"));
    }

    #[test]
    fn missing_and_bad_fields_are_named() {
        let c = cfg(r#"{"hidden_size":-1}"#);
        assert!(c.usize("hidden_size").unwrap_err().to_string().contains("`hidden_size` must be a positive"));
        assert!(c.usize("num_hidden_layers").unwrap_err().to_string().contains("`num_hidden_layers` is missing"));
    }
}
