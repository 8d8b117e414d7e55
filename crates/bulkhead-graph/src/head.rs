//! Sequence-classification heads on top of an encoder's or a decoder's `last_hidden_state`: what makes a
//! `*ForSequenceClassification` checkpoint a reranker (one label) or a classifier (several). The graph's output is
//! then `logits` `[batch, labels]` instead of the token states.
//!
//! * BERT (`BertForSequenceClassification`) and GTE (`NewForSequenceClassification`, gte-multilingual-reranker-base):
//!   the pooler, `tanh(dense(h[:, 0]))` (`bert.pooler.dense`, `new.pooler.dense`), then `classifier` (dropout is the
//!   identity at inference);
//! * RoBERTa / XLM-RoBERTa (`XLMRobertaForSequenceClassification`): `out_proj(tanh(dense(h[:, 0])))`, both under
//!   `classifier.`, with no pooler;
//! * ModernBERT (`ModernBertForSequenceClassification`): the encoder's output (after its final norm) pooled as
//!   `classifier_pooling` says (`cls`: the first token; `mean`: the mean over the attention mask), then
//!   `head.norm(act(head.dense(x)))` (`act` is `classifier_activation`, `gelu` when the config names none, as
//!   transformers defaults it; the norm is a LayerNorm with a bias only when `norm_bias`, like the encoder's; the
//!   dense layer has one only when `classifier_bias`), then `classifier` (always with a bias);
//! * Qwen3 / Qwen2 (`Qwen3ForSequenceClassification`, the seq-cls conversions of Qwen3-Reranker;
//!   `Qwen2ForSequenceClassification`): transformers' `GenericForSequenceClassification`, the linear `score` (no
//!   bias) on the hidden state of the last token that is not padding. transformers takes the rightmost position whose
//!   id differs from `pad_token_id` (so a trailing token equal to the pad token, such as an appended
//!   `<|endoftext|>` that is also the pad token, is skipped too); without a `pad_token_id` it takes the last position.
//!   The graph takes the rightmost position whose id differs from `pad_token_id` *and* whose attention mask is set:
//!   the same token for every row transformers can score, independent of how the batch is padded.
//!
//! The head's tensors sit beside the prefixed encoder (`classifier.weight` next to `bert.encoder...`, `score.weight`
//! next to `model.layers...`), so they are looked up by their exact names; the BERT pooler is part of the encoder
//! (`bert.pooler.dense`, `new.pooler.dense`). A missing head tensor is an error naming it and the head.
//!
//! References: transformers 5 `modeling_bert.py`, `modeling_xlm_roberta.py`, `modeling_modernbert.py`
//! (`ModernBertPredictionHead`, `ModernBertForSequenceClassification`) and `modeling_layers.py`
//! (`GenericForSequenceClassification`); GTE's remote code `modeling.py` of Alibaba-NLP/new-impl (`NewPooler`,
//! `NewForSequenceClassification`).

use crate::config::{Cfg, Family};
use crate::graph::{attr_float, attr_int, attr_ints, Graph, FLOAT, INT64};
use crate::layers::{gelu, positions, silu};
use crate::GraphError;

/// The `*ForSequenceClassification` architectures whose head the builder writes, for errors.
const SUPPORTED_HEADS: &str = "BertForSequenceClassification, XLMRobertaForSequenceClassification, \
                               RobertaForSequenceClassification, NewForSequenceClassification, \
                               ModernBertForSequenceClassification, Qwen3ForSequenceClassification, \
                               Qwen2ForSequenceClassification";

/// A classification head and its label count.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Head {
    /// BERT's (and GTE's) pooler + `classifier`.
    BertPooler { labels: usize },
    /// RoBERTa's `classifier.dense` + `tanh` + `classifier.out_proj`.
    Roberta { labels: usize },
    /// ModernBERT's pooling + `head` (dense, activation, norm) + `classifier`.
    ModernBert(ModernBertHead),
    /// The decoders' `score` on the last token that is not padding; `pad` is `pad_token_id`, if the config has one.
    LastToken { labels: usize, pad: Option<i64> },
    /// A SPLADE model's MLM head and pooling (`splade`): the pooled vocabulary-sized vector.
    Splade(crate::splade::Splade),
}

/// ModernBERT's classification head, as its config describes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ModernBertHead {
    labels: usize,
    pooling: Pooling,
    act: Activation,
    /// `classifier_bias`: whether `head.dense` has a bias.
    dense_bias: bool,
    /// `norm_bias`: whether `head.norm` has a bias.
    norm_bias: bool,
    /// `norm_eps`.
    eps: f32,
}

/// How ModernBERT's head pools the token states (`classifier_pooling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pooling {
    /// The first token's state.
    Cls,
    /// The mean of the states under the attention mask.
    Mean,
}

/// The activation of ModernBERT's head (`classifier_activation`, named as transformers' `ACT2FN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// `gelu`, `gelu_python`: the exact (erf) GELU.
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`, `gelu_python_tanh`: the tanh approximation.
    GeluTanh,
    /// `silu`, `swish`.
    Silu,
    /// `relu`.
    Relu,
    /// `tanh`.
    Tanh,
}

impl Head {
    /// The head `config.json` describes (`None` for a model without one); an architecture whose head the builder
    /// does not write, or a head option it does not express, is an error naming it.
    pub fn parse(c: &Cfg, family: Family) -> Result<Option<Head>, GraphError> {
        let arch = c.get("architectures").and_then(|a| a.get(0)).and_then(|a| a.as_str()).unwrap_or_default();
        if !arch.ends_with("ForSequenceClassification") {
            return Ok(None);
        }
        let labels = match c.get("id2label").and_then(|m| m.as_object()) {
            Some(m) if !m.is_empty() => m.len(),
            _ => c.usize_of(&["num_labels"], Some(2))?,
        };
        match family {
            Family::Bert | Family::Gte => Ok(Some(Head::BertPooler { labels })),
            Family::XlmRoberta => Ok(Some(Head::Roberta { labels })),
            Family::ModernBert => Ok(Some(Head::ModernBert(ModernBertHead::parse(c, labels)?))),
            Family::Decoder => {
                let pad = match c.get("pad_token_id") {
                    None => None,
                    Some(v) => Some(
                        v.as_i64()
                            .ok_or_else(|| c.err(format!("`pad_token_id` must be an integer or null, found {v}")))?,
                    ),
                };
                Ok(Some(Head::LastToken { labels, pad }))
            }
            Family::Nomic => Err(c.unsupported(format!(
                "the classification head of {arch} is not written by the ONNX graph builder (supported: \
                 {SUPPORTED_HEADS}); export it to ONNX and give the .onnx file"
            ))),
        }
    }

    /// The number of logits per row.
    pub fn labels(&self) -> usize {
        match self {
            Head::BertPooler { labels } | Head::Roberta { labels } | Head::LastToken { labels, .. } => *labels,
            Head::ModernBert(h) => h.labels,
            Head::Splade(s) => s.vocab(),
        }
    }

    /// What to call the head in errors.
    fn describe(&self) -> &'static str {
        match self {
            Head::BertPooler { .. } => "BERT / GTE (pooler + classifier)",
            Head::Roberta { .. } => "RoBERTa (classifier.dense + classifier.out_proj)",
            Head::ModernBert(_) => "ModernBERT (head.dense + head.norm + classifier)",
            Head::LastToken { .. } => "decoder (score on the last token)",
            Head::Splade(_) => "SPLADE (masked-language-model head + SpladePooling)",
        }
    }

    /// Writes the head on `states` (`[batch, seq, hidden]`); the output is `logits` `[batch, labels]`.
    pub fn build(&self, g: &mut Graph<'_>, states: &str, hidden: usize) -> Result<(), GraphError> {
        let logits = self.logits(g, states, hidden).map_err(|e| match e {
            GraphError::Weights { path, reason } => GraphError::Weights {
                path,
                reason: format!("{reason}: the {} classification head needs it", self.describe()),
            },
            e => e,
        })?;
        g.node_to("Identity", &[&logits], "logits", vec![]);
        Ok(())
    }

    fn logits(&self, g: &mut Graph<'_>, states: &str, hidden: usize) -> Result<String, GraphError> {
        Ok(match self {
            Head::BertPooler { labels } => {
                let first = first_token(g, states);
                let w = g.weight("pooler.dense.weight", &[hidden, hidden])?;
                let b = g.weight("pooler.dense.bias", &[hidden])?;
                let pooled = dense(g, &first, &w, Some(&b), "pooler");
                let pooled = g.node("Tanh", "pooler_tanh", &[&pooled], vec![]);
                let w = g.weight_exact("classifier.weight", &[*labels, hidden])?;
                let b = g.weight_exact("classifier.bias", &[*labels])?;
                dense(g, &pooled, &w, Some(&b), "classifier")
            }
            Head::Roberta { labels } => {
                let first = first_token(g, states);
                let w = g.weight_exact("classifier.dense.weight", &[hidden, hidden])?;
                let b = g.weight_exact("classifier.dense.bias", &[hidden])?;
                let x = dense(g, &first, &w, Some(&b), "classifier_dense");
                let x = g.node("Tanh", "classifier_tanh", &[&x], vec![]);
                let w = g.weight_exact("classifier.out_proj.weight", &[*labels, hidden])?;
                let b = g.weight_exact("classifier.out_proj.bias", &[*labels])?;
                dense(g, &x, &w, Some(&b), "classifier_out_proj")
            }
            Head::ModernBert(h) => h.logits(g, states, hidden)?,
            Head::Splade(s) => s.pooled(g, states, hidden)?,
            Head::LastToken { labels, pad } => {
                let last = last_token(g, states, hidden, *pad);
                let w = g.weight_exact("score.weight", &[*labels, hidden])?;
                dense(g, &last, &w, None, "score")
            }
        })
    }
}

impl ModernBertHead {
    fn parse(c: &Cfg, labels: usize) -> Result<ModernBertHead, GraphError> {
        let pooling = match c.str_or("classifier_pooling", "cls") {
            "cls" => Pooling::Cls,
            "mean" => Pooling::Mean,
            other => {
                return Err(c.unsupported(format!("classifier_pooling `{other}` is not supported (cls, mean)")));
            }
        };
        let act = match c.str_or("classifier_activation", "gelu") {
            "gelu" | "gelu_python" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" | "gelu_python_tanh" => Activation::GeluTanh,
            "silu" | "swish" => Activation::Silu,
            "relu" => Activation::Relu,
            "tanh" => Activation::Tanh,
            other => {
                return Err(c.unsupported(format!(
                    "classifier_activation `{other}` is not supported (gelu, gelu_python, gelu_new, \
                     gelu_pytorch_tanh, gelu_fast, silu, swish, relu, tanh)"
                )));
            }
        };
        Ok(ModernBertHead {
            labels,
            pooling,
            act,
            dense_bias: c.bool_or("classifier_bias", false)?,
            norm_bias: c.bool_or("norm_bias", false)?,
            eps: c.eps(&["norm_eps"], 1e-5)?,
        })
    }

    fn logits(&self, g: &mut Graph<'_>, states: &str, h: usize) -> Result<String, GraphError> {
        let pooled = match self.pooling {
            Pooling::Cls => first_token(g, states),
            Pooling::Mean => masked_mean(g, states),
        };
        let w = g.weight_exact("head.dense.weight", &[h, h])?;
        let b = if self.dense_bias { Some(g.weight_exact("head.dense.bias", &[h])?) } else { None };
        let x = dense(g, &pooled, &w, b.as_deref(), "head_dense");
        let x = match self.act {
            Activation::Gelu => gelu(g, &x),
            Activation::GeluTanh => gelu_tanh(g, &x),
            Activation::Silu => silu(g, &x),
            Activation::Relu => g.node("Relu", "head_relu", &[&x], vec![]),
            Activation::Tanh => g.node("Tanh", "head_tanh", &[&x], vec![]),
        };
        let gamma = g.weight_exact("head.norm.weight", &[h])?;
        let beta = if self.norm_bias {
            g.weight_exact("head.norm.bias", &[h])?
        } else {
            g.const_f32(&format!("zeros_{h}"), &[h as i64], &vec![0.0; h])
        };
        let attrs = vec![attr_int("axis", -1), attr_float("epsilon", self.eps)];
        let x = g.node("LayerNormalization", "head_norm", &[&x, &gamma, &beta], attrs);
        let w = g.weight_exact("classifier.weight", &[self.labels, h])?;
        let b = g.weight_exact("classifier.bias", &[self.labels])?;
        Ok(dense(g, &x, &w, Some(&b), "classifier"))
    }
}

/// `states[:, 0]`: `[batch, hidden]`.
fn first_token(g: &mut Graph<'_>, states: &str) -> String {
    let zero = g.const_i64("const_head_first_token", &[], &[0]);
    g.node("Gather", "head_first_token", &[states, &zero], vec![attr_int("axis", 1)])
}

/// `sum(states · mask) / sum(mask)` over the sequence: `[batch, hidden]`.
fn masked_mean(g: &mut Graph<'_>, states: &str) -> String {
    let mask = g.node("Cast", "head_mask_float", &["attention_mask"], vec![attr_int("to", FLOAT)]);
    let mask3 = g.unsqueeze(&mask, &[2], "head_mask_3d");
    let masked = g.node("Mul", "head_masked_states", &[states, &mask3], vec![]);
    let sum = g.reduce_sum(&masked, &[1], false, "head_state_sum");
    let count = g.reduce_sum(&mask, &[1], true, "head_token_count");
    g.node("Div", "head_mean", &[&sum, &count], vec![])
}

/// The state of the rightmost token that is real (attention mask set) and not `pad`: `[batch, hidden]`. As
/// transformers computes it: `argmax(position · keep)` over the sequence (0 when no token is kept).
fn last_token(g: &mut Graph<'_>, states: &str, hidden: usize, pad: Option<i64>) -> String {
    let pos = positions(g);
    let mut keep = g.node("Cast", "head_keep_mask", &["attention_mask"], vec![attr_int("to", INT64)]);
    if let Some(pad) = pad {
        let pad = g.scalar_i64(pad);
        let is_pad = g.node("Equal", "head_is_pad", &["input_ids", &pad], vec![]);
        let real = g.node("Not", "head_not_pad", &[&is_pad], vec![]);
        let real = g.node("Cast", "head_not_pad_i64", &[&real], vec![attr_int("to", INT64)]);
        keep = g.node("Mul", "head_keep", &[&keep, &real], vec![]);
    }
    let weighted = g.node("Mul", "head_kept_positions", &[&keep, &pos], vec![]);
    // ArgMax on float: every execution provider has it (positions are exact in f32 far past any context length).
    let weighted = g.node("Cast", "head_kept_positions_f", &[&weighted], vec![attr_int("to", FLOAT)]);
    let last = g.node("ArgMax", "head_last_token", &[&weighted], vec![attr_int("axis", 1), attr_int("keepdims", 1)]);
    let last = g.unsqueeze(&last, &[2], "head_last_token_3d");
    let width = g.const_i64(&format!("head_gather_shape_{hidden}"), &[3], &[1, 1, hidden as i64]);
    let index = g.node("Expand", "head_last_token_index", &[&last, &width], vec![]);
    let picked = g.node("GatherElements", "head_last_state", &[states, &index], vec![attr_int("axis", 1)]);
    g.squeeze(&picked, &[1], "head_last_state_2d")
}

/// The tanh approximation of GELU: `0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))`.
fn gelu_tanh(g: &mut Graph<'_>, x: &str) -> String {
    let three = g.scalar(3.0);
    let coef = g.scalar(0.044715);
    let scale = g.scalar((2.0 / std::f32::consts::PI).sqrt());
    let one = g.scalar(1.0);
    let half = g.scalar(0.5);
    let cube = g.node("Pow", "gelu_tanh_cube", &[x, &three], vec![]);
    let cube = g.node("Mul", "gelu_tanh_cube_coef", &[&cube, &coef], vec![]);
    let inner = g.node("Add", "gelu_tanh_inner", &[x, &cube], vec![]);
    let inner = g.node("Mul", "gelu_tanh_scaled", &[&inner, &scale], vec![]);
    let t = g.node("Tanh", "gelu_tanh_tanh", &[&inner], vec![]);
    let t = g.node("Add", "gelu_tanh_one", &[&t, &one], vec![]);
    let m = g.node("Mul", "gelu_tanh_mul", &[x, &t], vec![]);
    g.node("Mul", "gelu_tanh", &[&m, &half], vec![])
}

/// `x @ W^T (+ b)` for a weight in Hugging Face layout `[out, in]`.
fn dense(g: &mut Graph<'_>, x: &str, w: &str, b: Option<&str>, hint: &str) -> String {
    let wt = g.node("Transpose", &format!("{hint}_weight_t"), &[w], vec![attr_ints("perm", &[1, 0])]);
    let mm = g.node("MatMul", &format!("{hint}_matmul"), &[x, &wt], vec![]);
    match b {
        Some(b) => g.node("Add", &format!("{hint}_out"), &[&mm, b], vec![]),
        None => mm,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn head(text: &str) -> Result<Option<Head>, GraphError> {
        let c = Cfg::parse(Path::new("config.json"), text)?;
        let family = c.family()?;
        Head::parse(&c, family)
    }

    #[test]
    fn heads_from_configs() {
        assert_eq!(head(r#"{"architectures":["BertModel"]}"#).unwrap(), None);
        let h = head(r#"{"architectures":["BertForSequenceClassification"],"id2label":{"0":"LABEL_0"}}"#);
        assert_eq!(h.unwrap(), Some(Head::BertPooler { labels: 1 }));
        let h = head(r#"{"architectures":["XLMRobertaForSequenceClassification"],"num_labels":3}"#).unwrap();
        assert_eq!(h.map(|h| h.labels()), Some(3));
        let h = head(r#"{"architectures":["Qwen3ForSequenceClassification"],"num_labels":1,"pad_token_id":151643}"#);
        assert_eq!(h.unwrap(), Some(Head::LastToken { labels: 1, pad: Some(151643) }));
        let h = head(r#"{"architectures":["Qwen2ForSequenceClassification"],"pad_token_id":null}"#);
        assert_eq!(h.unwrap(), Some(Head::LastToken { labels: 2, pad: None }));
        let e = head(r#"{"architectures":["Qwen3ForSequenceClassification"],"pad_token_id":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("`pad_token_id` must be an integer"), "{e}");
    }

    #[test]
    fn modernbert_heads_follow_the_config() {
        let h = head(r#"{"architectures":["ModernBertForSequenceClassification"],"num_labels":1}"#).unwrap();
        let want = ModernBertHead {
            labels: 1,
            pooling: Pooling::Cls,
            act: Activation::Gelu,
            dense_bias: false,
            norm_bias: false,
            eps: 1e-5,
        };
        assert_eq!(h, Some(Head::ModernBert(want)));
        let h = head(
            r#"{"architectures":["ModernBertForSequenceClassification"],"id2label":{"0":"a","1":"b","2":"c"},
            "classifier_pooling":"mean","classifier_activation":"gelu_pytorch_tanh","classifier_bias":true,
            "norm_bias":true,"norm_eps":1e-6}"#,
        );
        let Some(Head::ModernBert(h)) = h.unwrap() else { panic!("a ModernBERT head") };
        assert_eq!(
            (h.labels, h.pooling, h.act, h.dense_bias, h.norm_bias),
            (3, Pooling::Mean, Activation::GeluTanh, true, true)
        );
        let e = head(r#"{"architectures":["ModernBertForSequenceClassification"],"classifier_pooling":"max"}"#);
        assert!(e.unwrap_err().to_string().contains("classifier_pooling `max`"));
        let e = head(r#"{"architectures":["ModernBertForSequenceClassification"],"classifier_activation":"mish"}"#);
        assert!(e.unwrap_err().to_string().contains("classifier_activation `mish`"));
    }

    #[test]
    fn other_heads_are_refused_naming_the_supported_ones() {
        let h = head(r#"{"architectures":["NewForSequenceClassification"],"model_type":"new","num_labels":1}"#);
        assert_eq!(h.unwrap(), Some(Head::BertPooler { labels: 1 }), "GTE's head is BERT's pooler + classifier");
        // NomicBertForSequenceClassification is not an architecture the builder knows at all.
        let e = head(r#"{"architectures":["NomicBertForSequenceClassification"],"model_type":"nomic_bert"}"#);
        let e = e.unwrap_err().to_string();
        assert!(e.contains("NomicBertForSequenceClassification") && e.contains("NewForSequenceClassification"), "{e}");
        let e = head(r#"{"architectures":["LlamaForSequenceClassification"],"model_type":"llama"}"#).unwrap_err();
        assert!(e.to_string().contains("Qwen3ForSequenceClassification"), "{e}");
    }
}
