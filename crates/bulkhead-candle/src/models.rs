//! The architectures the candle engine runs, on candle-transformers 0.11's implementations: BERT, XLM-RoBERTa,
//! ModernBERT, NomicBERT and Qwen3. Their configs are read from config.json with the defaults the Hugging Face
//! configs have (and transformers 5's `rope_parameters`), and their tensors with or without the checkpoint's
//! prefix (`model.` for ModernBERT and Qwen3, which candle expects; none for the others).
//!
//! Architectures candle-transformers has no implementation of, or none that matches the reference exactly, are
//! refused with the reason: GTE `NewModel` (no implementation), Qwen2 / Mistral / Llama (their candle models
//! have no padding mask, only the causal one, and were not validated here: the `ort:` units run them).

use candle_core::Tensor;
use candle_nn::VarBuilder;
use candle_transformers::models::{bert, modernbert, nomic_bert, qwen3, xlm_roberta};
use serde_json::{json, Value};

/// Why a model did not load: its config (name config.json) or its weights (name the weights).
pub(crate) enum LoadError {
    Config(String),
    Weights(String),
}

/// A loaded model.
pub(crate) enum Model {
    Bert(bert::BertModel),
    XlmRoberta(xlm_roberta::XLMRobertaModel),
    ModernBert(modernbert::ModernBert),
    Nomic(nomic_bert::NomicBertModel),
    /// Qwen3 keeps a KV cache across calls; a fresh clone (tensors are shared) runs each batch.
    Qwen3(qwen3::Model),
}

/// Architecture families and the names they go by.
const FAMILIES: &[(&str, &[&str], &[&str])] = &[
    ("bert", &["BertModel", "BertForMaskedLM", "BertForPreTraining"], &["bert"]),
    (
        "xlm-roberta",
        &["XLMRobertaModel", "XLMRobertaForMaskedLM", "RobertaModel", "RobertaForMaskedLM"],
        &["xlm-roberta", "roberta"],
    ),
    ("modernbert", &["ModernBertModel", "ModernBertForMaskedLM"], &["modernbert"]),
    ("nomic_bert", &["NomicBertModel", "NomicBertForPreTraining"], &["nomic_bert"]),
    ("qwen3", &["Qwen3Model", "Qwen3ForCausalLM"], &["qwen3"]),
];

/// The architectures this engine runs, for error messages.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &[
    "BertModel",
    "BertForMaskedLM",
    "BertForPreTraining",
    "XLMRobertaModel",
    "XLMRobertaForMaskedLM",
    "RobertaModel",
    "RobertaForMaskedLM",
    "ModernBertModel",
    "ModernBertForMaskedLM",
    "NomicBertModel",
    "NomicBertForPreTraining",
    "Qwen3Model",
    "Qwen3ForCausalLM",
];

/// The family of a config (`architectures[0]`, else `model_type`), or why candle cannot run it.
pub(crate) fn family(config: &Value) -> Result<&'static str, String> {
    let arch = config.pointer("/architectures/0").and_then(Value::as_str);
    let model_type = config.get("model_type").and_then(Value::as_str);
    let found = FAMILIES.iter().find(|(_, archs, types)| match arch {
        Some(a) => archs.contains(&a),
        None => model_type.is_some_and(|t| types.contains(&t)),
    });
    if let Some((f, _, _)) = found {
        return Ok(f);
    }
    let why = match model_type {
        Some("new") => "candle-transformers 0.11 has no GTE `NewModel`",
        Some("qwen2" | "mistral" | "llama") => {
            "candle-transformers' decoders of this family have no padding mask and are not validated against the \
             reference here"
        }
        _ => "candle-transformers 0.11 has no implementation bulkhead uses for it",
    };
    Err(format!(
        "architecture {} (model_type {}) is not supported by the candle engine ({why}; supported: {}); the ort: \
         units build it into an ONNX graph",
        arch.unwrap_or("(none)"),
        model_type.unwrap_or("(none)"),
        SUPPORTED_ARCHITECTURES.join(", ")
    ))
}

/// `config` with `defaults` filled in where absent (or null).
fn with_defaults(config: &Value, defaults: Value) -> Value {
    let mut v = config.clone();
    if let (Some(obj), Some(d)) = (v.as_object_mut(), defaults.as_object()) {
        for (k, x) in d {
            if obj.get(k).is_none_or(Value::is_null) {
                obj.insert(k.clone(), x.clone());
            }
        }
    }
    v
}

fn parse<T: serde::de::DeserializeOwned>(config: Value, what: &str) -> Result<T, LoadError> {
    serde_json::from_value(config).map_err(|e| LoadError::Config(format!("not a {what} config: {e}")))
}

/// The field at a JSON pointer, as f64.
fn number(config: &Value, pointers: &[&str]) -> Option<f64> {
    pointers.iter().find_map(|p| config.pointer(p).and_then(Value::as_f64))
}

/// `vb` reading `prefix`-less names when the checkpoint has no `prefix` (candle's models ask for `model.…`).
fn with_prefix(vb: VarBuilder<'static>, names: &[String], prefix: &'static str) -> VarBuilder<'static> {
    if names.iter().any(|n| n.starts_with(prefix)) {
        vb
    } else {
        vb.rename_f(move |n: &str| n.strip_prefix(prefix).unwrap_or(n).to_string())
    }
}

/// candle-transformers' ModernBERT config from a transformers one (transformers 5 writes `norm_eps`, `layer_types`
/// and `rope_parameters`).
fn modernbert_config(config: &Value) -> Value {
    let mut c = with_defaults(
        config,
        json!({"global_attn_every_n_layers": 3, "local_attention": 128,
        "max_position_embeddings": 8192, "pad_token_id": 50283}),
    );
    c["layer_norm_eps"] = json!(number(config, &["/norm_eps", "/layer_norm_eps"]).unwrap_or(1e-5));
    c["global_rope_theta"] = json!(number(
        config,
        &["/rope_parameters/full_attention/rope_theta", "/global_rope_theta"]
    )
    .unwrap_or(160000.0));
    c["local_rope_theta"] =
        json!(
            number(config, &["/rope_parameters/sliding_attention/rope_theta", "/local_rope_theta"]).unwrap_or(10000.0)
        );
    if let Some(types) = config.get("layer_types").and_then(Value::as_array) {
        let every = types.iter().skip(1).position(|t| t == "full_attention").map_or(types.len(), |i| i + 1);
        c["global_attn_every_n_layers"] = json!(every);
    }
    c.as_object_mut().map(|o| o.remove("classifier_pooling"));
    c
}

/// candle-transformers' NomicBERT config: SwiGLU without rotary scaling only; the vocabulary padded and the gated
/// MLP rounded up to a multiple of 256 as NomicBertModel does.
fn nomic_config(config: &Value) -> Result<Value, LoadError> {
    let mut c = with_defaults(
        config,
        json!({"type_vocab_size": 2, "layer_norm_epsilon": 1e-5,
        "rotary_emb_fraction": 0.0, "rotary_emb_base": 10000.0, "rotary_emb_interleaved": false,
        "qkv_proj_bias": true, "mlp_fc1_bias": true, "mlp_fc2_bias": true, "activation_function": "gelu",
        "prenorm": false, "n_positions": 2048}),
    );
    if c["activation_function"] != "swiglu" || c.get("rotary_scaling_factor").is_some_and(|v| !v.is_null()) {
        return Err(LoadError::Config("only SwiGLU NomicBERT without rotary scaling runs on candle".into()));
    }
    let hidden = c["n_embd"].as_u64().unwrap_or(768);
    let multiple = c.get("pad_vocab_size_multiple").and_then(Value::as_u64).unwrap_or(1).max(1);
    let vocab = c["vocab_size"].as_u64().unwrap_or(0);
    c["vocab_size"] = json!(vocab.div_ceil(multiple) * multiple);
    let inner = c.get("n_inner").and_then(Value::as_u64).unwrap_or(8 * hidden / 3);
    c["n_inner"] = json!(inner.div_ceil(256) * 256);
    Ok(c)
}

/// candle-transformers' Qwen3 config: no sliding window, default rotary only; defaults as transformers has them.
fn qwen3_config(config: &Value) -> Result<Value, LoadError> {
    if config.get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
        return Err(LoadError::Config("`use_sliding_window` true is not supported on candle".into()));
    }
    let scaling = config
        .pointer("/rope_scaling/rope_type")
        .or_else(|| config.pointer("/rope_scaling/type"))
        .or_else(|| config.pointer("/rope_parameters/rope_type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    if scaling != "default" {
        return Err(LoadError::Config(format!(
            "`rope_scaling` type `{scaling}` is not supported (supported: default)"
        )));
    }
    let heads = config.get("num_attention_heads").and_then(Value::as_u64).unwrap_or(1);
    let hidden = config.get("hidden_size").and_then(Value::as_u64).unwrap_or(0);
    let mut c = with_defaults(
        config,
        json!({"attention_bias": false, "max_window_layers": 0,
        "tie_word_embeddings": true, "use_sliding_window": false, "hidden_act": "silu",
        "rms_norm_eps": 1e-6, "head_dim": hidden / heads.max(1), "num_key_value_heads": heads,
        "max_position_embeddings": 32768}),
    );
    c["rope_theta"] = json!(number(config, &["/rope_theta", "/rope_parameters/rope_theta"]).unwrap_or(10000.0));
    Ok(c)
}

impl Model {
    /// Loads the `family` model; returns it and its hidden size.
    pub fn load(
        family: &str,
        config: &Value,
        vb: VarBuilder<'static>,
        names: &[String],
    ) -> Result<(Model, usize), LoadError> {
        let err = |e: candle_core::Error| LoadError::Weights(first_line(&e));
        match family {
            "bert" => {
                let c: bert::Config = parse(config.clone(), "BERT")?;
                Ok((Model::Bert(bert::BertModel::load(vb, &c).map_err(err)?), c.hidden_size))
            }
            "xlm-roberta" => {
                let defaults = json!({"attention_probs_dropout_prob": 0.0, "hidden_dropout_prob": 0.0,
                    "position_embedding_type": "absolute", "hidden_act": "gelu", "type_vocab_size": 1,
                    "pad_token_id": 1, "layer_norm_eps": 1e-5});
                let c: xlm_roberta::Config = parse(with_defaults(config, defaults), "XLM-RoBERTa")?;
                let vb = if names.iter().any(|n| n.starts_with("roberta.")) { vb.pp("roberta") } else { vb };
                Ok((Model::XlmRoberta(xlm_roberta::XLMRobertaModel::new(&c, vb).map_err(err)?), c.hidden_size))
            }
            "modernbert" => {
                let c: modernbert::Config = parse(modernbert_config(config), "ModernBERT")?;
                let vb = with_prefix(vb, names, "model.");
                Ok((Model::ModernBert(modernbert::ModernBert::load(vb, &c).map_err(err)?), c.hidden_size))
            }
            "nomic_bert" => {
                let c: nomic_bert::Config = parse(nomic_config(config)?, "NomicBERT")?;
                Ok((Model::Nomic(nomic_bert::NomicBertModel::load(vb, &c).map_err(err)?), c.n_embd))
            }
            "qwen3" => {
                let c: qwen3::Config = parse(qwen3_config(config)?, "Qwen3")?;
                let vb = with_prefix(vb, names, "model.");
                Ok((Model::Qwen3(qwen3::Model::new(&c, vb).map_err(err)?), c.hidden_size))
            }
            other => Err(LoadError::Config(format!("no candle model for `{other}`"))),
        }
    }

    /// `[batch, seq, hidden]` token states of a right-padded batch.
    pub fn forward(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Model::Bert(m) => m.forward(ids, types, Some(mask)),
            Model::XlmRoberta(m) => m.forward(ids, mask, types, None, None, None),
            Model::ModernBert(m) => m.forward(ids, mask),
            Model::Nomic(m) => m.forward(ids, Some(types), Some(mask)),
            // Causal attention: with right padding no real token sees a padding token, so the causal mask is the
            // whole mask; the states of padding positions are never pooled.
            Model::Qwen3(m) => m.clone().forward(ids, 0),
        }
    }
}

/// The first line of a candle error: with `RUST_BACKTRACE` set, candle appends a backtrace to its message.
pub(crate) fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().trim_end().to_string()
}
