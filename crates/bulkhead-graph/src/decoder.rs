//! Decoder-only embedding models: Qwen3 (Qwen3-Embedding), Qwen2 (gte-Qwen2, stella), Mistral (e5-mistral) and
//! Llama. Pre-norm blocks with RMSNorm, rotary position embeddings, grouped-query attention under a causal mask
//! (and a sliding window where the config asks for one), a SwiGLU MLP (`down(silu(gate(x)) · up(x))`) and a final
//! norm. Qwen3 normalises each query and key head (`q_norm`, `k_norm`) before the rotary embedding; Qwen2 has
//! biases on Q, K and V. Biases and head norms are taken from the checkpoint: present tensors are used.
//!
//! Reference: transformers' `modeling_qwen3.py`, `modeling_qwen2.py`, `modeling_mistral.py`, `modeling_llama.py`.

use crate::config::{Cfg, RopeScaling};
use crate::graph::Graph;
use crate::layers::{
    apply_rotary, attention, embed, inv_freq, linear, padding_bias, position_bias, positions, rms_norm, rotary_tables,
    silu, split_heads, Heads, PositionMask,
};
use crate::GraphError;

/// Tensors every decoder checkpoint has (`model.` prefixed in `*ForCausalLM` checkpoints).
pub(crate) const ANCHORS: &[&str] = &["embed_tokens.weight"];

/// Hyper-parameters of a decoder.
#[derive(Debug, Clone)]
pub(crate) struct DecoderConfig {
    pub hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    layers: usize,
    intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    eps: f32,
    inv_freq: Vec<f32>,
    /// Keys further back than this many positions are masked (sliding-window attention).
    window: Option<usize>,
}

impl DecoderConfig {
    pub fn parse(c: &Cfg) -> Result<DecoderConfig, GraphError> {
        let hidden = c.usize("hidden_size")?;
        let heads = c.usize("num_attention_heads")?;
        let kv_heads = c.usize_of(&["num_key_value_heads"], Some(heads))?;
        if !heads.is_multiple_of(kv_heads) {
            return Err(
                c.err(format!("num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"))
            );
        }
        let head_dim = match c.get("head_dim") {
            Some(_) => c.usize("head_dim")?,
            None => c.head_size(hidden, heads)?,
        };
        let act = c.str_or("hidden_act", "silu");
        if act != "silu" {
            return Err(c.unsupported(format!("hidden_act `{act}` is not supported (silu)")));
        }
        let mut freq = inv_freq(c.rope_theta(10000.0)?, head_dim);
        match c.rope_scaling(&["linear"])? {
            RopeScaling::Linear(f) => freq.iter_mut().for_each(|x| *x = (*x as f64 / f) as f32),
            RopeScaling::None => {}
            RopeScaling::Ntk(_) => return Err(c.unsupported("`rope_scaling` type `ntk` is not supported".into())),
        }
        let model_type = c.str_or("model_type", "");
        let window_on = match model_type {
            "mistral" => true,
            "qwen2" | "qwen3" => c.bool_or("use_sliding_window", false)?,
            _ => false,
        };
        let window = match (window_on, c.get("sliding_window")) {
            (true, Some(_)) => {
                if c.get("max_window_layers").is_some() && model_type != "mistral" {
                    return Err(c.unsupported(
                        "`use_sliding_window` with `max_window_layers` (sliding windows on some layers only) is not \
                         supported"
                            .into(),
                    ));
                }
                Some(c.usize("sliding_window")?)
            }
            _ => None,
        };
        Ok(DecoderConfig {
            hidden,
            heads,
            kv_heads,
            head_dim,
            layers: c.usize("num_hidden_layers")?,
            intermediate: c.usize("intermediate_size")?,
            vocab: c.usize("vocab_size")?,
            max_positions: c.usize_of(&["max_position_embeddings"], Some(32768))?,
            eps: c.eps(&["rms_norm_eps"], 1e-6)?,
            inv_freq: freq,
            window,
        })
    }
}

/// `{prefix}` linear with a bias when the checkpoint has one.
fn proj(g: &mut Graph<'_>, x: &str, prefix: &str, din: usize, dout: usize) -> Result<String, GraphError> {
    let bias = g.has_weight(&format!("{prefix}.bias"));
    linear(g, x, prefix, din, dout, bias)
}

/// Builds the decoder; the output is `last_hidden_state` (after the final norm).
pub(crate) fn build(g: &mut Graph<'_>, cfg: &DecoderConfig) -> Result<(), GraphError> {
    let (h, d) = (cfg.hidden, cfg.head_dim);
    let mut x = embed(g, "embed_tokens.weight", cfg.vocab, h, "input_ids")?;
    let pos = positions(g);
    let (cos, sin) = rotary_tables(g, &pos, &cfg.inv_freq, "rope");
    let padding = padding_bias(g);
    let mut bias = position_bias(g, &pos, PositionMask::Causal);
    if let Some(w) = cfg.window {
        // Keep keys with query - key < window (and, with the causal mask, key <= query).
        let win = position_bias(g, &pos, PositionMask::Window(w.saturating_sub(1)));
        bias = g.node("Add", "causal_window_bias", &[&bias, &win], vec![]);
    }
    let bias = g.node("Add", "attention_bias", &[&padding, &bias], vec![]);

    for l in 0..cfg.layers {
        let p = format!("layers.{l}");
        let a = format!("{p}.self_attn");
        let normed = rms_norm(g, &x, &format!("{p}.input_layernorm.weight"), h, cfg.eps)?;
        let q = proj(g, &normed, &format!("{a}.q_proj"), h, cfg.heads * d)?;
        let k = proj(g, &normed, &format!("{a}.k_proj"), h, cfg.kv_heads * d)?;
        let v = proj(g, &normed, &format!("{a}.v_proj"), h, cfg.kv_heads * d)?;
        let mut q = split_heads(g, &q, cfg.heads, d);
        let mut k = split_heads(g, &k, cfg.kv_heads, d);
        let v = split_heads(g, &v, cfg.kv_heads, d);
        if g.has_weight(&format!("{a}.q_norm.weight")) {
            q = rms_norm(g, &q, &format!("{a}.q_norm.weight"), d, cfg.eps)?;
            k = rms_norm(g, &k, &format!("{a}.k_norm.weight"), d, cfg.eps)?;
        }
        let q = apply_rotary(g, &q, &cos, &sin, d, d);
        let k = apply_rotary(g, &k, &cos, &sin, d, d);
        let ctx = attention(g, &q, &k, &v, &bias, Heads { heads: cfg.heads, kv_heads: cfg.kv_heads, d });
        let out = proj(g, &ctx, &format!("{a}.o_proj"), cfg.heads * d, h)?;
        x = g.node("Add", "attention_residual", &[&x, &out], vec![]);

        let normed = rms_norm(g, &x, &format!("{p}.post_attention_layernorm.weight"), h, cfg.eps)?;
        let gate = proj(g, &normed, &format!("{p}.mlp.gate_proj"), h, cfg.intermediate)?;
        let up = proj(g, &normed, &format!("{p}.mlp.up_proj"), h, cfg.intermediate)?;
        let gate = silu(g, &gate);
        let gated = g.node("Mul", "gated", &[&gate, &up], vec![]);
        let down = proj(g, &gated, &format!("{p}.mlp.down_proj"), cfg.intermediate, h)?;
        x = g.node("Add", "mlp_residual", &[&x, &down], vec![]);
    }
    let out = rms_norm(g, &x, "norm.weight", h, cfg.eps)?;
    g.node_to("Identity", &[&out], "last_hidden_state", vec![]);
    Ok(())
}
