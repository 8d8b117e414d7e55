//! BERT and XLM-RoBERTa encoders, written in the exact shapes ONNX Runtime's CPU graph optimiser fuses:
//!
//! * embeddings: `Gather(word) + Gather(position, Expand(Unsqueeze(Range(0, Shape[1], 1))))` then
//!   `+ Gather(token_type)` then `LayerNormalization` → **EmbedLayerNormalization** (BERT; XLM-RoBERTa numbers
//!   positions from `pad_token_id + 1` over non-padding tokens, `CumSum` of `input_ids != pad`, which the fusion
//!   does not match, so its embeddings stay unfused: they run once per batch);
//! * self-attention: `MatMul+Add` for Q, K, V → `Reshape [0,0,N,H]` → `Transpose` (K: `0,2,3,1`) → `MatMul` →
//!   `Div sqrt(H)` → `Add` of the mask bias `Mul(Sub(1, Cast(Unsqueeze(Unsqueeze(mask)))), -10000)` → `Softmax(3)` →
//!   `MatMul V` → `Transpose` → `Reshape [0,0,W]` → **Attention**;
//! * residual `Add` + `LayerNormalization` → **SkipLayerNormalization**;
//! * `MatMul+Add` then `x * (1 + Erf(x / sqrt 2))` then `* 0.5` → **Gelu** → **BiasGelu**.
//!
//! The opset matters: ONNX Runtime's attention fusion only matches the pre-13 versions of `Add`, `Mul`, `Sub`,
//! `Div`, `Softmax`, `Reshape`, `Transpose`, `Unsqueeze` (axes as an attribute) and `Cast`, and the
//! LayerNormalization registered for opsets below 17; in dynamic mode the layer-norm fusions only fire once attention
//! is fused. The default opset is therefore 12. The test `onnx_runtime_fuses_attention_gelu_and_layer_norm_on_cpu`
//! checks the optimised graph.

use crate::config::{Cfg, Family};
use crate::graph::{attr_int, attr_ints, Graph, FLOAT, INT64};
use crate::layers::{gelu, layer_norm, linear};
use crate::GraphError;

/// The feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// Exact GELU, `x * 0.5 * (1 + erf(x / sqrt(2)))`.
    Gelu,
    /// `max(x, 0)`.
    Relu,
}

/// Hyper-parameters of a BERT or XLM-RoBERTa encoder.
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
    /// XLM-RoBERTa: positions start at `pad + 1` and count only non-padding tokens.
    pub roberta_pad: Option<i64>,
}

/// Tensors every BERT-family checkpoint has (with or without a `bert.`/`roberta.` prefix).
pub(crate) const ANCHORS: &[&str] = &["embeddings.word_embeddings.weight"];

impl BertConfig {
    /// Parses and checks `config.json`.
    pub fn parse(c: &Cfg, family: Family) -> Result<BertConfig, GraphError> {
        let activation = match c.str_or("hidden_act", "gelu") {
            "gelu" | "gelu_python" => Activation::Gelu,
            "relu" => Activation::Relu,
            other => {
                let candle = if other == "geluapproximate" {
                    "; the `candle:` units can still run this model"
                } else {
                    "; no bulkhead engine runs it from safetensors: export it to ONNX and give the .onnx file"
                };
                return Err(c.unsupported(format!(
                    "hidden_act `{other}` is not supported by the ONNX graph builder (supported: gelu, relu){candle}"
                )));
            }
        };
        let pos = c.str_or("position_embedding_type", "absolute");
        if pos != "absolute" {
            return Err(c.unsupported(format!(
                "position_embedding_type `{pos}` is not supported (only `absolute`); no bulkhead engine runs it from \
                 safetensors: export it to ONNX and give the .onnx file"
            )));
        }
        let roberta_pad = match family {
            Family::XlmRoberta => Some(c.count_or("pad_token_id", 1)? as i64),
            _ => None,
        };
        let cfg = BertConfig {
            hidden: c.usize("hidden_size")?,
            heads: c.usize("num_attention_heads")?,
            layers: c.usize("num_hidden_layers")?,
            intermediate: c.usize("intermediate_size")?,
            vocab: c.usize("vocab_size")?,
            max_positions: c.usize_of(&["max_position_embeddings"], Some(512))?,
            type_vocab: c.usize_of(&["type_vocab_size"], Some(2))?,
            eps: c.eps(&["layer_norm_eps"], 1e-12)?,
            activation,
            roberta_pad,
        };
        c.head_size(cfg.hidden, cfg.heads)?;
        if let Some(pad) = roberta_pad {
            if pad as usize + 2 > cfg.max_positions {
                return Err(c.err(format!(
                    "pad_token_id {pad} leaves no position in max_position_embeddings {}",
                    cfg.max_positions
                )));
            }
        }
        Ok(cfg)
    }

    /// Size of one attention head.
    pub fn head_size(&self) -> usize {
        self.hidden / self.heads
    }

    /// The longest sequence the position table covers.
    pub fn max_tokens(&self) -> usize {
        match self.roberta_pad {
            Some(pad) => self.max_positions - pad as usize - 1,
            None => self.max_positions,
        }
    }
}

/// Position ids `[batch, seq]`: `0..seq` (BERT) or `cumsum(ids != pad) · (ids != pad) + pad` (XLM-RoBERTa).
fn position_ids(g: &mut Graph<'_>, roberta_pad: Option<i64>) -> String {
    let ids_shape = g.node("Shape", "ids_shape", &["input_ids"], vec![]);
    match roberta_pad {
        None => {
            let one = g.const_i64("const_one_i64", &[], &[1]);
            let zero = g.const_i64("const_zero_i64", &[], &[0]);
            let seq_len = g.node("Gather", "seq_len", &[&ids_shape, &one], vec![attr_int("axis", 0)]);
            let range = g.node("Range", "positions", &[&zero, &seq_len, &one], vec![]);
            let row = g.unsqueeze(&range, &[0], "positions_row");
            g.node("Expand", "position_ids", &[&row, &ids_shape], vec![])
        }
        Some(pad) => {
            let pad_c = g.scalar_i64(pad);
            let is_pad = g.node("Equal", "is_pad", &["input_ids", &pad_c], vec![]);
            let real = g.node("Not", "is_real", &[&is_pad], vec![]);
            let real = g.node("Cast", "real_i64", &[&real], vec![attr_int("to", INT64)]);
            let axis = g.scalar_i64(1);
            let count = g.node("CumSum", "real_count", &[&real, &axis], vec![]);
            let count = g.node("Mul", "real_positions", &[&count, &real], vec![]);
            g.node("Add", "position_ids", &[&count, &pad_c], vec![])
        }
    }
}

/// Builds the encoder; the output is `last_hidden_state`.
pub(crate) fn build(g: &mut Graph<'_>, cfg: &BertConfig) -> Result<(), GraphError> {
    let h = cfg.hidden;
    let word = g.weight("embeddings.word_embeddings.weight", &[cfg.vocab, h])?;
    let position = g.weight("embeddings.position_embeddings.weight", &[cfg.max_positions, h])?;
    let token_type = g.weight("embeddings.token_type_embeddings.weight", &[cfg.type_vocab, h])?;
    let word_e = g.node("Gather", "word_embed", &[&word, "input_ids"], vec![]);
    let position_ids = position_ids(g, cfg.roberta_pad);
    let pos_e = g.node("Gather", "pos_embed", &[&position, &position_ids], vec![]);
    let type_e = g.node("Gather", "type_embed", &[&token_type, "token_type_ids"], vec![]);
    let sum1 = g.node("Add", "embed_sum", &[&word_e, &pos_e], vec![]);
    let sum2 = g.node("Add", "embed_sum", &[&sum1, &type_e], vec![]);
    let mut x = layer_norm(g, &sum2, "embeddings.LayerNorm", h, cfg.eps, true)?;

    // Additive attention mask, shared by all layers: (1 - mask) * -10000, shape [batch, 1, 1, seq] (the constant
    // and the node sequence ONNX Runtime's attention fusion matches).
    let m1 = g.unsqueeze("attention_mask", &[1], "mask_unsqueeze1");
    let m2 = g.unsqueeze(&m1, &[2], "mask_unsqueeze2");
    let m3 = g.node("Cast", "mask_float", &[&m2], vec![attr_int("to", FLOAT)]);
    let one_f = g.const_f32("const_one_f32", &[], &[1.0]);
    let inverted = g.node("Sub", "mask_inverted", &[&one_f, &m3], vec![]);
    let big_neg = g.const_f32("const_mask_value", &[], &[-10000.0]);
    let mask_bias = g.node("Mul", "mask_bias", &[&inverted, &big_neg], vec![]);

    let heads = cfg.heads as i64;
    let head_size = cfg.head_size() as i64;
    let split_shape = g.const_i64("shape_split_heads", &[4], &[0, 0, heads, head_size]);
    let merge_shape = g.const_i64("shape_merge_heads", &[3], &[0, 0, h as i64]);
    let scale = g.const_f32("const_sqrt_head_size", &[], &[(head_size as f32).sqrt()]);

    for l in 0..cfg.layers {
        let p = format!("encoder.layer.{l}");
        let att = format!("{p}.attention.self");
        let q = linear(g, &x, &format!("{att}.query"), h, h, true)?;
        let k = linear(g, &x, &format!("{att}.key"), h, h, true)?;
        let v = linear(g, &x, &format!("{att}.value"), h, h, true)?;
        let q = g.node("Reshape", "q_heads", &[&q, &split_shape], vec![]);
        let q = g.node("Transpose", "q_t", &[&q], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let k = g.node("Reshape", "k_heads", &[&k, &split_shape], vec![]);
        let k = g.node("Transpose", "k_t", &[&k], vec![attr_ints("perm", &[0, 2, 3, 1])]);
        let v = g.node("Reshape", "v_heads", &[&v, &split_shape], vec![]);
        let v = g.node("Transpose", "v_t", &[&v], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let scores = g.node("MatMul", "scores", &[&q, &k], vec![]);
        let scores = g.node("Div", "scores_scaled", &[&scores, &scale], vec![]);
        let scores = g.node("Add", "scores_masked", &[&scores, &mask_bias], vec![]);
        let probs = g.node("Softmax", "probs", &[&scores], vec![attr_int("axis", 3)]);
        let ctx = g.node("MatMul", "context", &[&probs, &v], vec![]);
        let ctx = g.node("Transpose", "context_t", &[&ctx], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let ctx = g.node("Reshape", "context_merged", &[&ctx, &merge_shape], vec![]);
        let out = linear(g, &ctx, &format!("{p}.attention.output.dense"), h, h, true)?;
        let res = g.node("Add", "attention_residual", &[&out, &x], vec![]);
        let attn = layer_norm(g, &res, &format!("{p}.attention.output.LayerNorm"), h, cfg.eps, true)?;

        let inter = linear(g, &attn, &format!("{p}.intermediate.dense"), h, cfg.intermediate, true)?;
        let act = match cfg.activation {
            Activation::Gelu => gelu(g, &inter),
            Activation::Relu => g.node("Relu", "relu", &[&inter], vec![]),
        };
        let out = linear(g, &act, &format!("{p}.output.dense"), cfg.intermediate, h, true)?;
        let res = g.node("Add", "output_residual", &[&out, &attn], vec![]);
        x = layer_norm(g, &res, &format!("{p}.output.LayerNorm"), h, cfg.eps, true)?;
    }
    g.node_to("Identity", &[&x], "last_hidden_state", vec![]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Result<BertConfig, GraphError> {
        let c = Cfg::parse(Path::new("config.json"), text)?;
        let family = c.family()?;
        BertConfig::parse(&c, family)
    }

    const MINILM: &str = r#"{"architectures":["BertModel"],"hidden_act":"gelu","hidden_size":384,
        "intermediate_size":1536,"layer_norm_eps":1e-12,"max_position_embeddings":512,"model_type":"bert",
        "num_attention_heads":12,"num_hidden_layers":6,"position_embedding_type":"absolute","type_vocab_size":2,
        "vocab_size":30522}"#;

    #[test]
    fn parses_minilm_and_xlm_roberta() {
        let c = parse(MINILM).unwrap();
        assert_eq!((c.hidden, c.heads, c.layers, c.intermediate, c.head_size()), (384, 12, 6, 1536, 32));
        assert_eq!((c.activation, c.roberta_pad, c.max_tokens()), (Activation::Gelu, None, 512));
        let x = MINILM.replace("BertModel", "XLMRobertaModel").replace("512", "514");
        let c = parse(&x.replace("\"vocab_size\"", "\"pad_token_id\":1,\"vocab_size\"")).unwrap();
        assert_eq!((c.roberta_pad, c.max_tokens()), (Some(1), 512));
    }

    #[test]
    fn rejects_other_variants_by_name() {
        let e = parse(r#"{"architectures":["BertForTokenClassification"],"model_type":"bert"}"#).unwrap_err();
        assert!(e.to_string().contains("candle:` units may still run it"), "{e}");
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
