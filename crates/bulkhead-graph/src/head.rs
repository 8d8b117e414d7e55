//! Sequence-classification heads on top of an encoder's `last_hidden_state`: what makes a `*ForSequenceClassification`
//! checkpoint a reranker (one label) or a classifier (several). The graph's output is then `logits`
//! `[batch, labels]` instead of the token states.
//!
//! * BERT (`BertForSequenceClassification`): the pooler, `tanh(dense(h[:, 0]))`, then `classifier` (dropout is the
//!   identity at inference);
//! * RoBERTa / XLM-RoBERTa (`XLMRobertaForSequenceClassification`): `out_proj(tanh(dense(h[:, 0])))`, both under
//!   `classifier.`, with no pooler.
//!
//! The head's tensors sit beside the prefixed encoder (`classifier.weight` next to `bert.encoder...`), so they are
//! looked up by their exact names; the pooler is part of the encoder (`bert.pooler.dense`).

use crate::config::{Cfg, Family};
use crate::graph::{attr_int, attr_ints, Graph};
use crate::GraphError;

/// A classification head and its label count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Head {
    /// BERT's pooler + `classifier`.
    BertPooler { labels: usize },
    /// RoBERTa's `classifier.dense` + `tanh` + `classifier.out_proj`.
    Roberta { labels: usize },
}

impl Head {
    /// The head `config.json` describes (`None` for an encoder without one); an architecture whose head the builder
    /// does not write is an error naming it.
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
            Family::Bert => Ok(Some(Head::BertPooler { labels })),
            Family::XlmRoberta => Ok(Some(Head::Roberta { labels })),
            _ => Err(c.unsupported(format!(
                "the classification head of {arch} is not written by the ONNX graph builder (supported: \
                 BertForSequenceClassification, XLMRobertaForSequenceClassification, \
                 RobertaForSequenceClassification); export it to ONNX and give the .onnx file"
            ))),
        }
    }

    /// The number of logits per row.
    pub fn labels(&self) -> usize {
        match self {
            Head::BertPooler { labels } | Head::Roberta { labels } => *labels,
        }
    }

    /// Writes the head on `states` (`[batch, seq, hidden]`); the output is `logits` `[batch, labels]`.
    pub fn build(&self, g: &mut Graph<'_>, states: &str, hidden: usize) -> Result<(), GraphError> {
        let zero = g.const_i64("const_head_first_token", &[], &[0]);
        let first = g.node("Gather", "head_first_token", &[states, &zero], vec![attr_int("axis", 1)]);
        let logits = match *self {
            Head::BertPooler { labels } => {
                let w = g.weight("pooler.dense.weight", &[hidden, hidden])?;
                let b = g.weight("pooler.dense.bias", &[hidden])?;
                let pooled = dense(g, &first, &w, &b, "pooler");
                let pooled = g.node("Tanh", "pooler_tanh", &[&pooled], vec![]);
                let w = g.weight_exact("classifier.weight", &[labels, hidden])?;
                let b = g.weight_exact("classifier.bias", &[labels])?;
                dense(g, &pooled, &w, &b, "classifier")
            }
            Head::Roberta { labels } => {
                let w = g.weight_exact("classifier.dense.weight", &[hidden, hidden])?;
                let b = g.weight_exact("classifier.dense.bias", &[hidden])?;
                let x = dense(g, &first, &w, &b, "classifier_dense");
                let x = g.node("Tanh", "classifier_tanh", &[&x], vec![]);
                let w = g.weight_exact("classifier.out_proj.weight", &[labels, hidden])?;
                let b = g.weight_exact("classifier.out_proj.bias", &[labels])?;
                dense(g, &x, &w, &b, "classifier_out_proj")
            }
        };
        g.node_to("Identity", &[&logits], "logits", vec![]);
        Ok(())
    }
}

/// `x @ W^T + b` for a weight in Hugging Face layout `[out, in]`.
fn dense(g: &mut Graph<'_>, x: &str, w: &str, b: &str, hint: &str) -> String {
    let wt = g.node("Transpose", &format!("{hint}_weight_t"), &[w], vec![attr_ints("perm", &[1, 0])]);
    let mm = g.node("MatMul", &format!("{hint}_matmul"), &[x, &wt], vec![]);
    g.node("Add", &format!("{hint}_out"), &[&mm, b], vec![])
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
    }
}
