//! `ModernBertModel` (ModernBERT-base/large, gte-modernbert, nomic-modernbert): a pre-norm encoder without biases,
//! rotary position embeddings with one base for global layers and another for local ones, alternating global
//! attention (every `global_attn_every_n_layers`-th layer, or as `layer_types` says) and sliding-window attention
//! (keys within `local_attention / 2` positions), a GeGLU MLP (`Wo(act(input) · gate)`, `Wi` holding `input` then
//! `gate`), no attention norm on the first layer, and a final norm.
//!
//! Reference: transformers' `modeling_modernbert.py` (4.48+; 5.x reads the same checkpoints and configs, and
//! writes `layer_types` and `rope_parameters` instead of `global_attn_every_n_layers` and the two rope thetas).

use crate::config::Cfg;
use crate::graph::Graph;
use crate::layers::{
    apply_rotary, attention, embed, gelu, inv_freq, layer_norm, linear, padding_bias, position_bias, positions,
    rotary_tables, silu, split_heads, Heads, PositionMask,
};
use crate::GraphError;

/// Tensors every ModernBERT checkpoint has (`model.` prefixed in `ModernBertForMaskedLM` checkpoints).
pub(crate) const ANCHORS: &[&str] = &["embeddings.tok_embeddings.weight"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Gelu,
    Silu,
}

/// Hyper-parameters of a ModernBERT encoder.
#[derive(Debug, Clone)]
pub(crate) struct ModernBertConfig {
    pub hidden: usize,
    heads: usize,
    intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    eps: f32,
    norm_bias: bool,
    attention_bias: bool,
    mlp_bias: bool,
    act: Act,
    /// Per layer: whether it attends globally.
    global: Vec<bool>,
    /// Half the local window: a key at distance <= this is seen by local layers.
    half_window: usize,
    global_inv_freq: Vec<f32>,
    local_inv_freq: Vec<f32>,
}

impl ModernBertConfig {
    pub fn parse(c: &Cfg) -> Result<ModernBertConfig, GraphError> {
        let hidden = c.usize("hidden_size")?;
        let heads = c.usize("num_attention_heads")?;
        let d = c.head_size(hidden, heads)?;
        let layers = c.usize("num_hidden_layers")?;
        let global = match c.get("layer_types").and_then(|v| v.as_array()) {
            Some(types) => {
                if types.len() != layers {
                    return Err(
                        c.err(format!("`layer_types` has {} entries for num_hidden_layers {layers}", types.len()))
                    );
                }
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        Some("full_attention") => Ok(true),
                        Some("sliding_attention") => Ok(false),
                        _ => Err(c.err(format!("`layer_types` entry {t} is not full_attention or sliding_attention"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            None => {
                let every = c.usize_of(&["global_attn_every_n_layers"], Some(3))?;
                (0..layers).map(|i| i % every == 0).collect()
            }
        };
        let theta = |kind: &str, old: &str, default: f64| -> Result<f64, GraphError> {
            let ty = c.get(&format!("rope_parameters.{kind}.rope_type")).and_then(|v| v.as_str());
            if ty.is_some_and(|t| t != "default") || c.get("rope_scaling").is_some() {
                return Err(c.unsupported(format!(
                    "rotary scaling (`rope_parameters.{kind}.rope_type` {ty:?} or `rope_scaling`) is not supported \
                     (supported: default)"
                )));
            }
            c.f64_of(&[&format!("rope_parameters.{kind}.rope_theta"), old], Some(default))
        };
        let act = match c.str_or("hidden_activation", "gelu") {
            "gelu" => Act::Gelu,
            "silu" => Act::Silu,
            other => return Err(c.unsupported(format!("hidden_activation `{other}` is not supported (gelu, silu)"))),
        };
        Ok(ModernBertConfig {
            hidden,
            heads,
            intermediate: c.usize("intermediate_size")?,
            vocab: c.usize("vocab_size")?,
            max_positions: c.usize_of(&["max_position_embeddings"], Some(8192))?,
            eps: c.eps(&["norm_eps"], 1e-5)?,
            norm_bias: c.bool_or("norm_bias", false)?,
            attention_bias: c.bool_or("attention_bias", false)?,
            mlp_bias: c.bool_or("mlp_bias", false)?,
            act,
            global,
            half_window: c.usize_of(&["local_attention"], Some(128))? / 2,
            global_inv_freq: inv_freq(theta("full_attention", "global_rope_theta", 160000.0)?, d),
            local_inv_freq: inv_freq(theta("sliding_attention", "local_rope_theta", 10000.0)?, d),
        })
    }
}

/// Builds the encoder; the output is `last_hidden_state` (after the final norm).
pub(crate) fn build(g: &mut Graph<'_>, cfg: &ModernBertConfig) -> Result<(), GraphError> {
    let h = cfg.hidden;
    let d = h / cfg.heads;
    let x = embed(g, "embeddings.tok_embeddings.weight", cfg.vocab, h, "input_ids")?;
    let mut x = layer_norm(g, &x, "embeddings.norm", h, cfg.eps, cfg.norm_bias)?;
    let pos = positions(g);
    let global_rope = rotary_tables(g, &pos, &cfg.global_inv_freq, "rope_global");
    let local_rope = rotary_tables(g, &pos, &cfg.local_inv_freq, "rope_local");
    let global_bias = padding_bias(g);
    let window = position_bias(g, &pos, PositionMask::Window(cfg.half_window));
    let local_bias = g.node("Add", "local_bias", &[&global_bias, &window], vec![]);

    for (l, &global) in cfg.global.iter().enumerate() {
        let p = format!("layers.{l}");
        let normed =
            if l == 0 { x.clone() } else { layer_norm(g, &x, &format!("{p}.attn_norm"), h, cfg.eps, cfg.norm_bias)? };
        let qkv = linear(g, &normed, &format!("{p}.attn.Wqkv"), h, 3 * h, cfg.attention_bias)?;
        let parts = g.split(&qkv, -1, &[h as i64, h as i64, h as i64], "qkv");
        let (cos, sin) = if global { &global_rope } else { &local_rope };
        let q = split_heads(g, &parts[0], cfg.heads, d);
        let k = split_heads(g, &parts[1], cfg.heads, d);
        let v = split_heads(g, &parts[2], cfg.heads, d);
        let q = apply_rotary(g, &q, cos, sin, d, d);
        let k = apply_rotary(g, &k, cos, sin, d, d);
        let bias = if global { &global_bias } else { &local_bias };
        let ctx = attention(g, &q, &k, &v, bias, Heads::mha(cfg.heads, d));
        let out = linear(g, &ctx, &format!("{p}.attn.Wo"), h, h, cfg.attention_bias)?;
        x = g.node("Add", "attention_residual", &[&x, &out], vec![]);

        let normed = layer_norm(g, &x, &format!("{p}.mlp_norm"), h, cfg.eps, cfg.norm_bias)?;
        let wi = linear(g, &normed, &format!("{p}.mlp.Wi"), h, 2 * cfg.intermediate, cfg.mlp_bias)?;
        let i = cfg.intermediate as i64;
        let halves = g.split(&wi, -1, &[i, i], "wi");
        let act = match cfg.act {
            Act::Gelu => gelu(g, &halves[0]),
            Act::Silu => silu(g, &halves[0]),
        };
        let gated = g.node("Mul", "gated", &[&act, &halves[1]], vec![]);
        let out = linear(g, &gated, &format!("{p}.mlp.Wo"), cfg.intermediate, h, cfg.mlp_bias)?;
        x = g.node("Add", "mlp_residual", &[&x, &out], vec![]);
    }
    let out = layer_norm(g, &x, "final_norm", h, cfg.eps, cfg.norm_bias)?;
    g.node_to("Identity", &[&out], "last_hidden_state", vec![]);
    Ok(())
}
