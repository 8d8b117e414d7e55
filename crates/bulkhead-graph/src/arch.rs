//! The architecture a model folder holds, parsed from its config.json, and what the builder needs to know about it
//! independently of the family: graph inputs, hidden size, the embedding table, the longest sequence.

use crate::bert::{self, BertConfig};
use crate::config::{Cfg, Family};
use crate::decoder::{self, DecoderConfig};
use crate::graph::Graph;
use crate::gte::{self, GteConfig};
use crate::modernbert::{self, ModernBertConfig};
use crate::nomic::{self, NomicConfig};
use crate::GraphError;

/// A parsed architecture.
pub(crate) enum Arch {
    Bert(BertConfig),
    Gte(GteConfig),
    Nomic(NomicConfig),
    ModernBert(ModernBertConfig),
    Decoder(DecoderConfig),
}

const ENCODER_INPUTS: &[&str] = &["input_ids", "attention_mask", "token_type_ids"];
const NO_TYPE_INPUTS: &[&str] = &["input_ids", "attention_mask"];

impl Arch {
    /// Parses config.json; an unknown architecture or a missing or bad field is an error naming the file.
    pub fn parse(c: &Cfg) -> Result<Arch, GraphError> {
        Ok(match c.family()? {
            f @ (Family::Bert | Family::XlmRoberta) => Arch::Bert(BertConfig::parse(c, f)?),
            Family::Gte => Arch::Gte(GteConfig::parse(c)?),
            Family::Nomic => Arch::Nomic(NomicConfig::parse(c)?),
            Family::ModernBert => Arch::ModernBert(ModernBertConfig::parse(c)?),
            Family::Decoder => Arch::Decoder(DecoderConfig::parse(c)?),
        })
    }

    /// Prefix-less names of a tensor every checkpoint of the family has.
    pub fn anchors(&self) -> &'static [&'static str] {
        match self {
            Arch::Bert(_) => bert::ANCHORS,
            Arch::Gte(_) => gte::ANCHORS,
            Arch::Nomic(_) => nomic::ANCHORS,
            Arch::ModernBert(_) => modernbert::ANCHORS,
            Arch::Decoder(_) => decoder::ANCHORS,
        }
    }

    /// The graph's inputs, in order (no `token_type_ids` where the model has no token type embeddings).
    pub fn inputs(&self) -> &'static [&'static str] {
        match self {
            Arch::Bert(_) => ENCODER_INPUTS,
            Arch::Gte(c) => c.inputs(),
            Arch::Nomic(c) => c.inputs(),
            Arch::ModernBert(_) | Arch::Decoder(_) => NO_TYPE_INPUTS,
        }
    }

    /// Width of `last_hidden_state`.
    pub fn hidden(&self) -> usize {
        match self {
            Arch::Bert(c) => c.hidden,
            Arch::Gte(c) => c.hidden,
            Arch::Nomic(c) => c.hidden,
            Arch::ModernBert(c) => c.hidden,
            Arch::Decoder(c) => c.hidden,
        }
    }

    /// The token embedding table (prefix-less name) and its rows.
    pub fn embedding_table(&self) -> (&'static str, usize) {
        match self {
            Arch::Bert(c) => ("embeddings.word_embeddings.weight", c.vocab),
            Arch::Gte(c) => ("embeddings.word_embeddings.weight", c.vocab),
            Arch::Nomic(c) => ("embeddings.word_embeddings.weight", c.vocab),
            Arch::ModernBert(c) => ("embeddings.tok_embeddings.weight", c.vocab),
            Arch::Decoder(c) => ("embed_tokens.weight", c.vocab),
        }
    }

    /// The longest sequence the model takes (`max_position_embeddings`, less XLM-RoBERTa's offset).
    pub fn max_tokens(&self) -> usize {
        match self {
            Arch::Bert(c) => c.max_tokens(),
            Arch::Gte(c) => c.max_positions,
            Arch::Nomic(_) => usize::MAX,
            Arch::ModernBert(c) => c.max_positions,
            Arch::Decoder(c) => c.max_positions,
        }
    }

    /// The graph's name.
    pub fn name(&self) -> &'static str {
        match self {
            Arch::Bert(c) if c.roberta_pad.is_some() => "xlm-roberta",
            Arch::Bert(_) => "bert",
            Arch::Gte(_) => "gte",
            Arch::Nomic(_) => "nomic-bert",
            Arch::ModernBert(_) => "modernbert",
            Arch::Decoder(_) => "decoder",
        }
    }

    /// Writes the model's nodes; the output is `last_hidden_state`.
    pub fn build(&self, g: &mut Graph<'_>) -> Result<(), GraphError> {
        match self {
            Arch::Bert(c) => bert::build(g, c),
            Arch::Gte(c) => gte::build(g, c),
            Arch::Nomic(c) => nomic::build(g, c),
            Arch::ModernBert(c) => modernbert::build(g, c),
            Arch::Decoder(c) => decoder::build(g, c),
        }
    }
}
