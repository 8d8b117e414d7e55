//! The parts of a Hugging Face `config.json` the BERT builder needs, and the architecture check.

use std::path::Path;

use serde_json::Value;

use crate::GraphError;

/// Architectures (`architectures[0]` of config.json) the builder turns into a graph; a config with
/// `model_type: "bert"` and no `architectures` is accepted too.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["BertModel", "BertForMaskedLM", "BertForPreTraining"];

/// The feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// Exact GELU, `x * 0.5 * (1 + erf(x / sqrt(2)))`.
    Gelu,
    /// `max(x, 0)`.
    Relu,
}

/// Hyper-parameters of a BERT encoder.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BertConfig {
    pub hidden: usize,
    pub heads: usize,
    pub layers: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    pub eps: f32,
    pub activation: Activation,
}

impl BertConfig {
    /// Parses and checks `config.json`.
    pub fn parse(path: &Path, text: &str) -> Result<BertConfig, GraphError> {
        let invalid = |reason: String| GraphError::Config { path: path.to_path_buf(), reason };
        let v: Value = serde_json::from_str(text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        let architecture = v.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str);
        let model_type = v.get("model_type").and_then(Value::as_str);
        check_architecture(architecture, model_type)?;

        let int = |k: &str, default: Option<usize>| -> Result<usize, GraphError> {
            match v.get(k) {
                Some(x) => x
                    .as_u64()
                    .filter(|&n| n > 0 && n <= 1 << 24)
                    .map(|n| n as usize)
                    .ok_or_else(|| invalid(format!("`{k}` must be a positive integer, found {x}"))),
                None => default.ok_or_else(|| invalid(format!("`{k}` is missing"))),
            }
        };
        let unsupported = |reason: String| GraphError::Unsupported { path: path.to_path_buf(), reason };
        let activation = match v.get("hidden_act").and_then(Value::as_str).unwrap_or("gelu") {
            "gelu" | "gelu_python" => Activation::Gelu,
            "relu" => Activation::Relu,
            other => {
                let candle = if other == "geluapproximate" {
                    "; the `candle:` units can still run this model"
                } else {
                    "; no bulkhead engine runs it from safetensors: export it to ONNX and give the .onnx file"
                };
                return Err(unsupported(format!(
                    "hidden_act `{other}` is not supported by the ONNX graph builder (supported: gelu, relu){candle}"
                )));
            }
        };
        let pos = v.get("position_embedding_type").and_then(Value::as_str).unwrap_or("absolute");
        if pos != "absolute" {
            return Err(unsupported(format!(
                "position_embedding_type `{pos}` is not supported (only `absolute`); no bulkhead engine runs it from \
                 safetensors: export it to ONNX and give the .onnx file"
            )));
        }
        let eps = match v.get("layer_norm_eps") {
            None => 1e-12,
            Some(x) => x
                .as_f64()
                .filter(|e| *e > 0.0 && *e < 1.0)
                .ok_or_else(|| invalid(format!("bad `layer_norm_eps` {x}")))? as f32,
        };
        let c = BertConfig {
            hidden: int("hidden_size", None)?,
            heads: int("num_attention_heads", None)?,
            layers: int("num_hidden_layers", None)?,
            intermediate: int("intermediate_size", None)?,
            vocab: int("vocab_size", None)?,
            max_positions: int("max_position_embeddings", Some(512))?,
            type_vocab: int("type_vocab_size", Some(2))?,
            eps,
            activation,
        };
        if !c.hidden.is_multiple_of(c.heads) {
            return Err(invalid(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                c.hidden, c.heads
            )));
        }
        Ok(c)
    }

    /// Size of one attention head.
    pub fn head_size(&self) -> usize {
        self.hidden / self.heads
    }
}

/// Accepts the BERT family; anything else is an error naming the architecture.
pub(crate) fn check_architecture(architecture: Option<&str>, model_type: Option<&str>) -> Result<(), GraphError> {
    let ok = match architecture {
        Some(a) => SUPPORTED_ARCHITECTURES.contains(&a),
        None => model_type == Some("bert"),
    };
    if ok {
        return Ok(());
    }
    // The candle engine accepts the same BERT family (any `model_type: "bert"`): say so only when true.
    let hint = if model_type == Some("bert") {
        "the `candle:` units can still run it".to_string()
    } else {
        "no bulkhead engine runs it from safetensors (the `candle:` units support the same BERT family); export it \
         to ONNX and give the .onnx file"
            .to_string()
    };
    Err(GraphError::UnsupportedArchitecture {
        architecture: architecture.unwrap_or("(none)").to_string(),
        model_type: model_type.unwrap_or("(none)").to_string(),
        supported: SUPPORTED_ARCHITECTURES.join(", "),
        hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BertConfig, GraphError> {
        BertConfig::parse(Path::new("config.json"), text)
    }

    const MINILM: &str = r#"{"architectures":["BertModel"],"hidden_act":"gelu","hidden_size":384,
        "intermediate_size":1536,"layer_norm_eps":1e-12,"max_position_embeddings":512,"model_type":"bert",
        "num_attention_heads":12,"num_hidden_layers":6,"position_embedding_type":"absolute","type_vocab_size":2,
        "vocab_size":30522}"#;

    #[test]
    fn parses_minilm() {
        let c = parse(MINILM).unwrap();
        assert_eq!((c.hidden, c.heads, c.layers, c.intermediate, c.head_size()), (384, 12, 6, 1536, 32));
        assert_eq!(c.activation, Activation::Gelu);
    }

    #[test]
    fn rejects_other_architectures_by_name() {
        let e = parse(r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama"}"#).unwrap_err().to_string();
        assert!(e.contains("LlamaForCausalLM") && e.contains("llama") && e.contains("no bulkhead engine"), "{e}");
        let e = parse(r#"{"architectures":["BertForTokenClassification"],"model_type":"bert"}"#).unwrap_err();
        assert!(e.to_string().contains("candle:` units can still run it"), "{e}");
        let e = parse(&MINILM.replace("\"gelu\"", "\"gelu_new\"")).unwrap_err().to_string();
        assert!(e.contains("gelu_new"), "{e}");
        let e = parse(&MINILM.replace("\"absolute\"", "\"relative_key\"")).unwrap_err().to_string();
        assert!(e.contains("relative_key"), "{e}");
        let e = parse(&MINILM.replace("\"num_attention_heads\":12", "\"num_attention_heads\":7")).unwrap_err();
        assert!(e.to_string().contains("multiple"), "{e}");
        let e = parse(&MINILM.replace("\"hidden_size\":384", "\"hidden_size\":-1")).unwrap_err();
        assert!(e.to_string().contains("hidden_size"), "{e}");
        assert!(parse("{").unwrap_err().to_string().contains("not valid JSON"));
    }
}
