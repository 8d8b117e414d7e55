//! Alibaba GTE's `NewModel` (gte-base-en-v1.5, gte-large-en-v1.5, gte-multilingual-base): a post-norm encoder with
//! rotary position embeddings (optionally with fixed NTK scaling), packed QKV projections and a gated MLP
//! (`down(act(gate) · up)`, `up_gate_proj` holding `up` then `gate`).
//!
//! Reference: `modeling.py` of Alibaba-NLP/new-impl (Hugging Face remote code); the parts used here are
//! `NewEmbeddings`, `NewAttention`, `NewGatedMLP`, `NewLayer` and the NTK `RotaryEmbedding`.

use crate::config::{Cfg, RopeScaling};
use crate::graph::Graph;
use crate::layers::{
    apply_rotary, attention, embed, gelu, inv_freq, layer_norm, linear, padding_bias, positions, rms_norm,
    rotary_tables, silu, split_heads, Heads,
};
use crate::GraphError;

/// Tensors every GTE checkpoint has.
pub(crate) const ANCHORS: &[&str] = &["embeddings.word_embeddings.weight"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Gelu,
    Silu,
    Relu,
}

/// Hyper-parameters of a GTE encoder.
#[derive(Debug, Clone)]
pub(crate) struct GteConfig {
    pub hidden: usize,
    heads: usize,
    layers: usize,
    intermediate: usize,
    pub vocab: usize,
    pub type_vocab: usize,
    pub max_positions: usize,
    eps: f32,
    rms_norm: bool,
    pack_qkv: bool,
    act: Act,
    /// `None`: absolute position embeddings; else the rotary inverse frequencies.
    rotary: Option<Vec<f32>>,
}

impl GteConfig {
    pub fn parse(c: &Cfg) -> Result<GteConfig, GraphError> {
        let hidden = c.usize("hidden_size")?;
        let heads = c.usize("num_attention_heads")?;
        let d = c.head_size(hidden, heads)?;
        if c.bool_or("logn_attention_scale", false)? {
            return Err(c.unsupported("`logn_attention_scale` true is not supported".into()));
        }
        let act = match c.str_or("hidden_act", "gelu") {
            "gelu" => Act::Gelu,
            "silu" | "swish" => Act::Silu,
            "relu" => Act::Relu,
            other => return Err(c.unsupported(format!("hidden_act `{other}` is not supported (gelu, silu, relu)"))),
        };
        let rms_norm = match c.str_or("layer_norm_type", "layer_norm") {
            "layer_norm" => false,
            "rms_norm" => true,
            other => return Err(c.unsupported(format!("layer_norm_type `{other}` is not supported"))),
        };
        let rotary = match c.str_or("position_embedding_type", "rope") {
            "absolute" => None,
            "rope" => {
                let base = c.rope_theta(10000.0)?;
                Some(match c.rope_scaling(&["ntk"])? {
                    RopeScaling::Ntk(f) => {
                        // NTKScalingRotaryEmbedding: base · factor, then every frequency / factor^(2 / dim).
                        let div = f.powf(2.0 / d as f64);
                        inv_freq(base * f, d).into_iter().map(|x| (x as f64 / div) as f32).collect()
                    }
                    _ => inv_freq(base, d),
                })
            }
            other => return Err(c.unsupported(format!("position_embedding_type `{other}` is not supported"))),
        };
        Ok(GteConfig {
            hidden,
            heads,
            layers: c.usize("num_hidden_layers")?,
            intermediate: c.usize("intermediate_size")?,
            vocab: c.usize("vocab_size")?,
            type_vocab: c.count_or("type_vocab_size", 1)?,
            max_positions: c.usize_of(&["max_position_embeddings"], Some(2048))?,
            eps: c.eps(&["layer_norm_eps"], 1e-12)?,
            rms_norm,
            pack_qkv: c.bool_or("pack_qkv", true)?,
            act,
            rotary,
        })
    }

    /// The graph inputs.
    pub fn inputs(&self) -> &'static [&'static str] {
        if self.type_vocab > 0 {
            &["input_ids", "attention_mask", "token_type_ids"]
        } else {
            &["input_ids", "attention_mask"]
        }
    }
}

fn norm(g: &mut Graph<'_>, cfg: &GteConfig, x: &str, prefix: &str) -> Result<String, GraphError> {
    if cfg.rms_norm {
        rms_norm(g, x, &format!("{prefix}.weight"), cfg.hidden, cfg.eps)
    } else {
        layer_norm(g, x, prefix, cfg.hidden, cfg.eps, true)
    }
}

/// Builds the encoder; the output is `last_hidden_state`.
pub(crate) fn build(g: &mut Graph<'_>, cfg: &GteConfig) -> Result<(), GraphError> {
    let h = cfg.hidden;
    let d = h / cfg.heads;
    let mut x = embed(g, "embeddings.word_embeddings.weight", cfg.vocab, h, "input_ids")?;
    if cfg.type_vocab > 0 {
        let t = embed(g, "embeddings.token_type_embeddings.weight", cfg.type_vocab, h, "token_type_ids")?;
        x = g.node("Add", "embed_sum", &[&x, &t], vec![]);
    }
    let pos = positions(g);
    let tables = match &cfg.rotary {
        Some(freq) => Some(rotary_tables(g, &pos, freq, "rope")),
        None => {
            let p = embed(g, "embeddings.position_embeddings.weight", cfg.max_positions, h, &pos)?;
            x = g.node("Add", "embed_sum", &[&x, &p], vec![]);
            None
        }
    };
    x = layer_norm(g, &x, "embeddings.LayerNorm", h, cfg.eps, true)?;
    let bias = padding_bias(g);

    for l in 0..cfg.layers {
        let p = format!("encoder.layer.{l}");
        let (q, k, v) = if cfg.pack_qkv {
            let qkv = linear(g, &x, &format!("{p}.attention.qkv_proj"), h, 3 * h, true)?;
            let parts = g.split(&qkv, -1, &[h as i64, h as i64, h as i64], "qkv");
            (parts[0].clone(), parts[1].clone(), parts[2].clone())
        } else {
            (
                linear(g, &x, &format!("{p}.attention.q_proj"), h, h, true)?,
                linear(g, &x, &format!("{p}.attention.k_proj"), h, h, true)?,
                linear(g, &x, &format!("{p}.attention.v_proj"), h, h, true)?,
            )
        };
        let mut q = split_heads(g, &q, cfg.heads, d);
        let mut k = split_heads(g, &k, cfg.heads, d);
        let v = split_heads(g, &v, cfg.heads, d);
        if let Some((cos, sin)) = &tables {
            q = apply_rotary(g, &q, cos, sin, d, d);
            k = apply_rotary(g, &k, cos, sin, d, d);
        }
        let ctx = attention(g, &q, &k, &v, &bias, Heads::mha(cfg.heads, d));
        let out = linear(g, &ctx, &format!("{p}.attention.o_proj"), h, h, true)?;
        let res = g.node("Add", "attention_residual", &[&x, &out], vec![]);
        let attn = norm(g, cfg, &res, &format!("{p}.attn_ln"))?;

        let up_gate = linear(g, &attn, &format!("{p}.mlp.up_gate_proj"), h, 2 * cfg.intermediate, false)?;
        let i = cfg.intermediate as i64;
        let parts = g.split(&up_gate, -1, &[i, i], "up_gate");
        let gate = match cfg.act {
            Act::Gelu => gelu(g, &parts[1]),
            Act::Silu => silu(g, &parts[1]),
            Act::Relu => g.node("Relu", "relu", &[&parts[1]], vec![]),
        };
        let gated = g.node("Mul", "gated", &[&gate, &parts[0]], vec![]);
        let down = linear(g, &gated, &format!("{p}.mlp.down_proj"), cfg.intermediate, h, true)?;
        let res = g.node("Add", "mlp_residual", &[&attn, &down], vec![]);
        x = norm(g, cfg, &res, &format!("{p}.mlp_ln"))?;
    }
    g.node_to("Identity", &[&x], "last_hidden_state", vec![]);
    Ok(())
}
