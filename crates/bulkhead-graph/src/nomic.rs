//! `NomicBertModel` (nomic-embed-text-v1 / v1.5): a post-norm BERT with rotary position embeddings, a fused `Wqkv`
//! projection and a gated MLP (`fc2(fc11(x) · act(fc12(x)))`, SwiGLU for the embedding models); GPT-2 style config
//! names (`n_embd`, `n_head`, `n_layer`, `n_inner`).
//!
//! Reference: `modeling_hf_nomic_bert.py` (Hugging Face remote code of nomic-ai/nomic-bert-2048, kept in
//! nomic-ai/contrastors): `NomicBertEmbeddings`, `NomicBertAttention`, `NomciBertGatedMLP`, `NomicBertBlock`.

use crate::config::Cfg;
use crate::graph::Graph;
use crate::layers::{
    apply_rotary, attention, embed, gelu, inv_freq, layer_norm, linear, padding_bias, positions, rotary_tables, silu,
    split_heads, Heads,
};
use crate::GraphError;

/// Tensors every NomicBERT checkpoint has.
pub(crate) const ANCHORS: &[&str] = &["embeddings.word_embeddings.weight"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mlp {
    /// `fc2(gelu(fc1(x)))`.
    Gelu,
    /// `fc2(fc11(x) · silu(fc12(x)))`.
    SwiGlu,
    /// `fc2(fc11(x) · gelu(fc12(x)))`.
    GeGlu,
    /// `fc2(fc11(x) · sigmoid(fc12(x)))`.
    Glu,
}

/// Hyper-parameters of a NomicBERT encoder.
#[derive(Debug, Clone)]
pub(crate) struct NomicConfig {
    pub hidden: usize,
    heads: usize,
    layers: usize,
    inner: usize,
    pub vocab: usize,
    pub type_vocab: usize,
    eps: f32,
    mlp: Mlp,
    qkv_bias: bool,
    fc1_bias: bool,
    fc2_bias: bool,
    rotary_dim: usize,
    inv_freq: Vec<f32>,
}

impl NomicConfig {
    pub fn parse(c: &Cfg) -> Result<NomicConfig, GraphError> {
        let hidden = c.usize_of(&["n_embd", "hidden_size"], None)?;
        let heads = c.usize_of(&["n_head", "num_attention_heads"], None)?;
        let d = c.head_size(hidden, heads)?;
        for (flag, what) in [
            ("prenorm", "pre-norm blocks"),
            ("parallel_block", "parallel blocks"),
            ("causal", "causal attention"),
            ("use_rms_norm", "RMS norms"),
            ("rotary_emb_interleaved", "interleaved rotary embeddings"),
        ] {
            if c.bool_or(flag, false)? {
                return Err(c.unsupported(format!("`{flag}` true ({what}) is not supported")));
            }
        }
        if c.get("rotary_scaling_factor").is_some() {
            return Err(c.unsupported(
                "`rotary_scaling_factor` (dynamic NTK rotary scaling past max_trained_positions) is not supported"
                    .into(),
            ));
        }
        let fraction = c.f64_of(&["rotary_emb_fraction"], Some(0.0)).unwrap_or(0.0);
        if fraction <= 0.0 || fraction > 1.0 {
            return Err(c.unsupported(format!(
                "`rotary_emb_fraction` {fraction}: only rotary position embeddings (0 < fraction <= 1) are supported"
            )));
        }
        let rotary_dim = (d as f64 * fraction) as usize;
        if rotary_dim == 0 || rotary_dim % 2 == 1 {
            return Err(c.err(format!("`rotary_emb_fraction` {fraction} gives an odd rotary dimension {rotary_dim}")));
        }
        let mlp = match c.str_or("activation_function", "gelu") {
            "swiglu" => Mlp::SwiGlu,
            "geglu" => Mlp::GeGlu,
            "glu" => Mlp::Glu,
            "gelu" => Mlp::Gelu,
            other => {
                return Err(
                    c.unsupported(format!("activation_function `{other}` is not supported (swiglu, geglu, glu, gelu)"))
                )
            }
        };
        // The gated MLPs round the inner size up to a multiple of 256 (`NomciBertGatedMLP(multiple_of=256)`).
        // Without `n_inner`: 4·hidden for the plain MLP, 8·hidden/3 for the gated ones.
        let default_inner = if mlp == Mlp::Gelu { 4 * hidden } else { 8 * hidden / 3 };
        let mut inner = c.usize_of(&["n_inner", "intermediate_size"], Some(default_inner))?;
        if mlp != Mlp::Gelu {
            inner = inner.div_ceil(256) * 256;
        }
        // NomicBertModel pads the vocabulary up to a multiple of `pad_vocab_size_multiple`.
        let mut vocab = c.usize("vocab_size")?;
        let multiple = c.usize_of(&["pad_vocab_size_multiple"], Some(1))?;
        if vocab % multiple != 0 {
            vocab += multiple - vocab % multiple;
        }
        Ok(NomicConfig {
            hidden,
            heads,
            layers: c.usize_of(&["n_layer", "num_hidden_layers"], None)?,
            inner,
            vocab,
            type_vocab: c.count_or("type_vocab_size", 2)?,
            eps: c.eps(&["layer_norm_epsilon", "layer_norm_eps"], 1e-5)?,
            mlp,
            qkv_bias: c.bool_or("qkv_proj_bias", true)?,
            fc1_bias: c.bool_or("mlp_fc1_bias", true)?,
            fc2_bias: c.bool_or("mlp_fc2_bias", true)?,
            rotary_dim,
            inv_freq: inv_freq(c.f64_of(&["rotary_emb_base"], Some(10000.0))?, rotary_dim),
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

/// Builds the encoder; the output is `last_hidden_state`.
pub(crate) fn build(g: &mut Graph<'_>, cfg: &NomicConfig) -> Result<(), GraphError> {
    let h = cfg.hidden;
    let d = h / cfg.heads;
    let mut x = embed(g, "embeddings.word_embeddings.weight", cfg.vocab, h, "input_ids")?;
    if cfg.type_vocab > 0 {
        let t = embed(g, "embeddings.token_type_embeddings.weight", cfg.type_vocab, h, "token_type_ids")?;
        x = g.node("Add", "embed_sum", &[&x, &t], vec![]);
    }
    x = layer_norm(g, &x, "emb_ln", h, cfg.eps, true)?;
    let pos = positions(g);
    let (cos, sin) = rotary_tables(g, &pos, &cfg.inv_freq, "rope");
    let bias = padding_bias(g);

    for l in 0..cfg.layers {
        let p = format!("encoder.layers.{l}");
        let qkv = linear(g, &x, &format!("{p}.attn.Wqkv"), h, 3 * h, cfg.qkv_bias)?;
        let parts = g.split(&qkv, -1, &[h as i64, h as i64, h as i64], "qkv");
        let q = split_heads(g, &parts[0], cfg.heads, d);
        let k = split_heads(g, &parts[1], cfg.heads, d);
        let v = split_heads(g, &parts[2], cfg.heads, d);
        let q = apply_rotary(g, &q, &cos, &sin, d, cfg.rotary_dim);
        let k = apply_rotary(g, &k, &cos, &sin, d, cfg.rotary_dim);
        let ctx = attention(g, &q, &k, &v, &bias, Heads::mha(cfg.heads, d));
        let out = linear(g, &ctx, &format!("{p}.attn.out_proj"), h, h, cfg.qkv_bias)?;
        let res = g.node("Add", "attention_residual", &[&out, &x], vec![]);
        let attn = layer_norm(g, &res, &format!("{p}.norm1"), h, cfg.eps, true)?;

        let act = match cfg.mlp {
            Mlp::Gelu => {
                let y = linear(g, &attn, &format!("{p}.mlp.fc1"), h, cfg.inner, cfg.fc1_bias)?;
                gelu(g, &y)
            }
            gated => {
                let y = linear(g, &attn, &format!("{p}.mlp.fc11"), h, cfg.inner, cfg.fc1_bias)?;
                let gate = linear(g, &attn, &format!("{p}.mlp.fc12"), h, cfg.inner, cfg.fc1_bias)?;
                let gate = match gated {
                    Mlp::SwiGlu => silu(g, &gate),
                    Mlp::GeGlu => gelu(g, &gate),
                    _ => g.node("Sigmoid", "glu", &[&gate], vec![]),
                };
                g.node("Mul", "gated", &[&y, &gate], vec![])
            }
        };
        let out = linear(g, &act, &format!("{p}.mlp.fc2"), cfg.inner, h, cfg.fc2_bias)?;
        let res = g.node("Add", "mlp_residual", &[&out, &attn], vec![]);
        x = layer_norm(g, &res, &format!("{p}.norm2"), h, cfg.eps, true)?;
    }
    g.node_to("Identity", &[&x], "last_hidden_state", vec![]);
    Ok(())
}
