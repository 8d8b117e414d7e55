//! The SPLADE head of a sparse embedding model: a BERT masked-language-model head on the encoder's token states,
//! then SPLADE's pooling, so the graph answers the pooled vocabulary-sized vector (`logits` `[batch, vocab]`), not
//! `[batch, seq, vocab]` MLM logits.
//!
//! * The MLM head (transformers' `BertLMPredictionHead`): `cls.predictions.transform.dense`, the encoder's
//!   activation (`hidden_act`), `cls.predictions.transform.LayerNorm` (`layer_norm_eps`), then the decoder
//!   `x @ E^T + cls.predictions.bias`, whose weight is `cls.predictions.decoder.weight` when the checkpoint stores
//!   it and the word embeddings `E` when it is tied to them (transformers then saves it only once);
//! * SPLADE's pooling (sentence-transformers `SpladePooling`): padding positions zeroed (as its `logits · mask`
//!   does), then `log(1 + relu(x))` (twice `log1p` for `log1p_relu`), then the maximum (or the sum) over the
//!   tokens. For `max`, `log1p ∘ relu` is non-decreasing, so it is applied after the maximum (rounding is
//!   monotone too), and so is the decoder's bias (the same at every position); a zeroed padding position can only
//!   matter where every real value is below zero, and relu makes those 0 either way, so padding is left out of the
//!   maximum instead. Both ride in the decoder's matrix product (see `Splade::pooled`): the only pass over
//!   `[batch, seq, vocab]` after it is the maximum itself, the element-wise work is on `[batch, vocab]`.
//!
//! Which folders get this head is decided by sentence-transformers' `modules.json` (a `SpladePooling` module:
//! [`bulkhead_core::SparseSpec`]), not by config.json: a plain `BertForMaskedLM` still builds as an encoder.
//! References: transformers 5 `modeling_bert.py` (`BertPredictionHeadTransform`, `BertLMPredictionHead`);
//! sentence-transformers 6 `sparse_encoder/modules/splade_pooling.py`.

use bulkhead_core::{SparseActivation, SparsePooling, SparseSpec};

use crate::config::{Cfg, Family};
use crate::graph::{attr_int, attr_ints, Graph, FLOAT};
use crate::layers::gelu;
use crate::GraphError;

/// The form of the SPLADE head's graph, part of its cache key: a change here is a new graph.
pub(crate) const SPLADE_GRAPH: &str = "splade head 2: padding and bias folded around the maximum";

/// What a padding position's logits are lowered by before the maximum (MLM logits are within a few tens of zero).
const PADDING: f32 = 1.0e4;

/// A SPLADE head as the config and the sentence-transformers modules describe it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Splade {
    spec: SparseSpec,
    /// `hidden_act` of the transform: exact GELU (`false`) or ReLU (`true`).
    relu: bool,
    /// `layer_norm_eps` of the transform's norm.
    eps: f32,
}

impl Splade {
    /// The head of a SPLADE model; an architecture whose MLM head is not written here is an error naming it.
    pub fn parse(c: &Cfg, family: Family, spec: &SparseSpec) -> Result<Splade, GraphError> {
        let arch = c.get("architectures").and_then(|a| a.get(0)).and_then(|a| a.as_str()).unwrap_or("?");
        if family != Family::Bert || !arch.ends_with("ForMaskedLM") {
            return Err(c.unsupported(format!(
                "{arch}: the ONNX graph builder writes the SPLADE head (masked-language-model head + SpladePooling) \
                 of BertForMaskedLM only; export this sparse model to ONNX with its pooling and give the .onnx file"
            )));
        }
        let relu = match c.str_or("hidden_act", "gelu") {
            "gelu" | "gelu_python" => false,
            "relu" => true,
            other => return Err(c.unsupported(format!("hidden_act `{other}` of the MLM head is not supported"))),
        };
        let vocab = c.usize("vocab_size")?;
        if vocab != spec.vocab {
            return Err(c.err(format!("vocab_size {vocab} differs from the sparse model's {}", spec.vocab)));
        }
        Ok(Splade { spec: spec.clone(), relu, eps: c.eps(&["layer_norm_eps"], 1e-12)? })
    }

    /// The vocabulary size: the pooled vector's length.
    pub fn vocab(&self) -> usize {
        self.spec.vocab
    }

    /// Writes the MLM head and the pooling on `states` (`[batch, seq, hidden]`): `[batch, vocab]`.
    pub fn pooled(&self, g: &mut Graph<'_>, states: &str, h: usize) -> Result<String, GraphError> {
        let v = self.spec.vocab;
        let x = linear_exact(g, states, "cls.predictions.transform.dense", h, h)?;
        let x = if self.relu { g.node("Relu", "mlm_relu", &[&x], vec![]) } else { gelu(g, &x) };
        let x = layer_norm_exact(g, &x, "cls.predictions.transform.LayerNorm", h, self.eps)?;
        let decoder = if g.weights().contains_exact("cls.predictions.decoder.weight") {
            g.weight_exact("cls.predictions.decoder.weight", &[v, h])?
        } else {
            g.weight("embeddings.word_embeddings.weight", &[v, h])?
        };
        let bias = if g.weights().contains_exact("cls.predictions.bias") {
            g.weight_exact("cls.predictions.bias", &[v])?
        } else {
            g.weight_exact("cls.predictions.decoder.bias", &[v])?
        };
        Ok(match self.spec.pooling {
            SparsePooling::Max => {
                // One pass over `[batch, seq, vocab]`: the padding goes into the decoder's matrix product as one
                // more input column, `(mask - 1) · PADDING` against a column of ones, so a padding position's
                // logits sit far below any real token's and the maximum never picks them; a real token's logits
                // get exactly 0 added. The bias is the same at every position, so it is added after the maximum.
                let mask = g.node("Cast", "splade_mask", &["attention_mask"], vec![attr_int("to", FLOAT)]);
                let one = g.scalar(1.0);
                let big = g.scalar(PADDING);
                let pad = g.node("Sub", "splade_pad", &[&mask, &one], vec![]);
                let pad = g.node("Mul", "splade_pad_big", &[&pad, &big], vec![]);
                let pad = g.unsqueeze(&pad, &[2], "splade_pad_3d");
                let x = g.node("Concat", "splade_states_pad", &[&x, &pad], vec![attr_int("axis", 2)]);
                let ones = g.const_f32("splade_ones_column", &[v as i64, 1], &vec![1.0; v]);
                let w = g.node("Concat", "mlm_decoder_pad", &[&decoder, &ones], vec![attr_int("axis", 1)]);
                let wt = g.node("Transpose", "mlm_decoder_t", &[&w], vec![attr_ints("perm", &[1, 0])]);
                let logits = g.node("MatMul", "mlm_logits", &[&x, &wt], vec![]);
                let max = reduce_max(g, &logits, 1, "splade_max");
                let max = g.node("Add", "splade_max_bias", &[&max, &bias], vec![]);
                self.activation(g, &max)
            }
            SparsePooling::Sum => {
                let wt = g.node("Transpose", "mlm_decoder_t", &[&decoder], vec![attr_ints("perm", &[1, 0])]);
                let logits = g.node("MatMul", "mlm_decoder", &[&x, &wt], vec![]);
                let logits = g.node("Add", "mlm_logits", &[&logits, &bias], vec![]);
                // Padding positions to 0, as SpladePooling's `logits · mask`: after relu they add nothing.
                let mask = g.node("Cast", "splade_mask", &["attention_mask"], vec![attr_int("to", FLOAT)]);
                let mask = g.unsqueeze(&mask, &[2], "splade_mask_3d");
                let masked = g.node("Mul", "splade_masked", &[&logits, &mask], vec![]);
                let t = self.activation(g, &masked);
                g.reduce_sum(&t, &[1], false, "splade_sum")
            }
        })
    }

    /// `log(1 + relu(x))`, once more `log1p` for `log1p_relu`.
    fn activation(&self, g: &mut Graph<'_>, x: &str) -> String {
        let one = g.scalar(1.0);
        let r = g.node("Relu", "splade_relu", &[x], vec![]);
        let p = g.node("Add", "splade_one_plus", &[&r, &one], vec![]);
        let mut y = g.node("Log", "splade_log1p", &[&p], vec![]);
        if self.spec.activation == SparseActivation::Log1pRelu {
            let p = g.node("Add", "splade_one_plus_again", &[&y, &one], vec![]);
            y = g.node("Log", "splade_log1p_again", &[&p], vec![]);
        }
        y
    }
}

/// `ReduceMax` over one axis without keeping it (axes as an attribute below opset 18, an input from 18).
fn reduce_max(g: &mut Graph<'_>, x: &str, axis: i64, hint: &str) -> String {
    let keep = attr_int("keepdims", 0);
    if g.opset < 18 {
        g.node("ReduceMax", hint, &[x], vec![attr_ints("axes", &[axis]), keep])
    } else {
        let axes = g.ints("axes", &[axis]);
        g.node("ReduceMax", hint, &[x, &axes], vec![keep])
    }
}

/// `x @ W^T + b` for a head tensor named exactly (beside the prefixed encoder, as `cls.` sits beside `bert.`).
fn linear_exact(g: &mut Graph<'_>, x: &str, prefix: &str, din: usize, dout: usize) -> Result<String, GraphError> {
    let w = g.weight_exact(&format!("{prefix}.weight"), &[dout, din])?;
    let b = g.weight_exact(&format!("{prefix}.bias"), &[dout])?;
    let wt = g.node("Transpose", &format!("{prefix}.weight_t"), &[&w], vec![attr_ints("perm", &[1, 0])]);
    let mm = g.node("MatMul", &format!("{prefix}.matmul"), &[x, &wt], vec![]);
    Ok(g.node("Add", &format!("{prefix}.out"), &[&mm, &b], vec![]))
}

/// `LayerNormalization` over the last axis for a head norm named exactly.
fn layer_norm_exact(g: &mut Graph<'_>, x: &str, prefix: &str, h: usize, eps: f32) -> Result<String, GraphError> {
    let gamma = g.weight_exact(&format!("{prefix}.weight"), &[h])?;
    let beta = g.weight_exact(&format!("{prefix}.bias"), &[h])?;
    let attrs = vec![attr_int("axis", -1), crate::graph::attr_float("epsilon", eps)];
    Ok(g.node("LayerNormalization", "mlm_layer_norm", &[x, &gamma, &beta], attrs))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str, vocab: usize) -> Result<Splade, GraphError> {
        let c = Cfg::parse(Path::new("config.json"), text)?;
        let spec = SparseSpec {
            vocab,
            pooling: SparsePooling::Max,
            activation: SparseActivation::Relu,
            max_active_dims: None,
        };
        Splade::parse(&c, c.family()?, &spec)
    }

    #[test]
    fn splade_heads_from_configs() {
        let h = parse(r#"{"architectures":["BertForMaskedLM"],"vocab_size":420,"layer_norm_eps":1e-5}"#, 420).unwrap();
        assert_eq!((h.vocab(), h.relu, h.eps), (420, false, 1e-5));
        let e = parse(r#"{"architectures":["XLMRobertaForMaskedLM"],"vocab_size":420}"#, 420).unwrap_err();
        assert!(e.to_string().contains("BertForMaskedLM only"), "{e}");
        let e = parse(r#"{"architectures":["BertModel"],"vocab_size":420}"#, 420).unwrap_err();
        assert!(e.to_string().contains("BertModel"), "{e}");
        let e = parse(r#"{"architectures":["BertForMaskedLM"],"vocab_size":420}"#, 30522).unwrap_err();
        assert!(e.to_string().contains("vocab_size 420 differs"), "{e}");
        let e = parse(r#"{"architectures":["BertForMaskedLM"],"vocab_size":4,"hidden_act":"mish"}"#, 4).unwrap_err();
        assert!(e.to_string().contains("hidden_act `mish`"), "{e}");
    }
}
