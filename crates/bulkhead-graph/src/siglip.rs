//! SigLIP (`SiglipModel`, also the fixed-resolution SigLIP 2 checkpoints): the towers as transformers 5's
//! `modeling_siglip.py` computes them.
//!
//! * vision: patch `Conv` with a bias, the position table added (no class token), pre-norm encoder layers,
//!   `post_layernorm`, then the multi-head attention pooling head: a learned probe `[1, 1, h]` attends over the
//!   patch states (`nn.MultiheadAttention`: `in_proj_weight` `[3h, h]` holding Q, K, V, and `out_proj`), then
//!   `x + mlp(layernorm(x))`; its single token is `image_embeds`;
//! * text: token + position embeddings, bidirectional self-attention (the padding mask), `final_layer_norm` and
//!   `head` (a linear layer with bias to `projection_size`) on the **last position**, whatever token it holds:
//!   SigLIP was trained on texts padded to `max_position_embeddings`, so callers pad to that length.

use crate::config::Cfg;
use crate::graph::Graph;
use crate::layers::{layer_norm, linear, padding_bias, split_heads};
use crate::vision::{
    attend, encoder, mlp, patch_embeddings, text_embeddings, token_at, Defaults, Section, TextTower, TowerSpec,
    VisionTower,
};
use crate::GraphError;

/// A tensor every SiglipModel checkpoint has.
pub(crate) const ANCHORS: &[&str] = &["text_model.embeddings.token_embedding.weight"];

/// A parsed `SiglipConfig`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SiglipConfig {
    pub text: TextTower,
    pub vision: VisionTower,
    /// Output width of the text `head` (`text_config.projection_size`, the text width when absent).
    pub projection: usize,
}

impl SiglipConfig {
    /// Parses `text_config` and `vision_config` with transformers' defaults.
    pub fn parse(c: &Cfg) -> Result<SiglipConfig, GraphError> {
        let defaults = |hidden| Defaults {
            hidden,
            intermediate: 3072,
            layers: 12,
            heads: 12,
            eps: 1e-6,
            act: "gelu_pytorch_tanh",
        };
        let t = Section { c, name: "text_config" };
        let text = TextTower {
            enc: t.encoder(&defaults(768))?,
            vocab: t.usize("vocab_size", 32000)?,
            max_positions: t.usize("max_position_embeddings", 64)?,
        };
        let projection = t.usize("projection_size", text.enc.hidden)?;
        let v = Section { c, name: "vision_config" };
        let vision = v.vision(&defaults(768), 16)?;
        if !v.bool_or("vision_use_head", true)? {
            return Err(c.unsupported(
                "`vision_config.vision_use_head` is false: this vision tower has no pooling head, so it has no image \
                 embedding (transformers' get_image_features returns no pooled output)"
                    .into(),
            ));
        }
        Ok(SiglipConfig { text, vision, projection })
    }

    pub fn spec(&self) -> TowerSpec {
        TowerSpec {
            family: "siglip",
            image_size: self.vision.image_size,
            channels: self.vision.channels,
            image_positions: self.vision.grid().pow(2),
            image_dim: self.vision.enc.hidden,
            text_dim: self.projection,
            max_text_tokens: self.text.max_positions,
            pad_text_to_max: true,
        }
    }
}

/// Writes the vision tower; the output is `image_embeds`.
pub(crate) fn build_vision(g: &mut Graph<'_>, c: &SiglipConfig) -> Result<(), GraphError> {
    let v = &c.vision;
    let e = &v.enc;
    let h = e.hidden;
    let patches = patch_embeddings(g, v, "vision_model.embeddings.patch_embedding", true)?;
    let table = g.weight("vision_model.embeddings.position_embedding.weight", &[v.grid() * v.grid(), h])?;
    let x = g.node("Add", "vision_embed", &[&patches, &table], vec![]);
    let x = encoder(g, x, "vision_model.encoder", e, None)?;
    let x = layer_norm(g, &x, "vision_model.post_layernorm", h, e.eps, true)?;

    // Attention pooling: the probe queries the patch states.
    let head = "vision_model.head";
    let d = h / e.heads;
    let w = g.weight(&format!("{head}.attention.in_proj_weight"), &[3 * h, h])?;
    let b = g.weight(&format!("{head}.attention.in_proj_bias"), &[3 * h])?;
    let ws = g.split(&w, 0, &[h as i64; 3], "in_proj_w");
    let bs = g.split(&b, 0, &[h as i64; 3], "in_proj_b");
    let probe = g.weight(&format!("{head}.probe"), &[1, 1, h])?;
    let project = |g: &mut Graph<'_>, x: &str, i: usize| {
        let wt = g.node("Transpose", "in_proj_t", &[&ws[i]], vec![crate::graph::attr_ints("perm", &[1, 0])]);
        let y = g.node("MatMul", "in_proj", &[x, &wt], vec![]);
        g.node("Add", "in_proj_out", &[&y, &bs[i]], vec![])
    };
    let q = project(g, &probe, 0);
    let k = project(g, &x, 1);
    let val = project(g, &x, 2);
    let q = split_heads(g, &q, e.heads, d);
    let k = split_heads(g, &k, e.heads, d);
    let val = split_heads(g, &val, e.heads, d);
    let ctx = attend(g, &q, &k, &val, None, h, d);
    let pooled = linear(g, &ctx, &format!("{head}.attention.out_proj"), h, h, true)?;
    let n = layer_norm(g, &pooled, &format!("{head}.layernorm"), h, e.eps, true)?;
    let y = mlp(g, &n, &format!("{head}.mlp"), h, e.intermediate, e.act)?;
    let out = g.node("Add", "head_residual", &[&pooled, &y], vec![]);
    let out = token_at(g, &out, 0);
    g.node_to("Identity", &[&out], "image_embeds", vec![]);
    Ok(())
}

/// Writes the text tower; the output is `text_embeds`.
pub(crate) fn build_text(g: &mut Graph<'_>, c: &SiglipConfig) -> Result<(), GraphError> {
    let t = &c.text;
    let h = t.enc.hidden;
    let x = text_embeddings(g, t)?;
    let bias = padding_bias(g);
    let x = encoder(g, x, "text_model.encoder", &t.enc, Some(&bias))?;
    // The final layer norm works token by token: take the last position first, then normalise it.
    let last = token_at(g, &x, -1);
    let pooled = layer_norm(g, &last, "text_model.final_layer_norm", h, t.enc.eps, true)?;
    let out = linear(g, &pooled, "text_model.head", h, c.projection, true)?;
    g.node_to("Identity", &[&out], "text_embeds", vec![]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Result<SiglipConfig, GraphError> {
        SiglipConfig::parse(&Cfg::parse(Path::new("config.json"), text)?)
    }

    #[test]
    fn defaults_are_transformers() {
        let c = parse(r#"{"architectures":["SiglipModel"],"text_config":{},"vision_config":{}}"#).unwrap();
        assert_eq!((c.text.max_positions, c.text.vocab, c.projection), (64, 32000, 768));
        assert_eq!((c.vision.image_size, c.vision.patch, c.vision.grid()), (224, 16, 14));
        let s = c.spec();
        assert!(s.pad_text_to_max && s.image_dim == 768 && s.family == "siglip");
        let c = parse(r#"{"text_config":{"hidden_size":24,"num_attention_heads":4,"projection_size":32}}"#).unwrap();
        assert_eq!((c.text.enc.hidden, c.projection), (24, 32));
    }

    #[test]
    fn a_vision_tower_without_its_head_is_refused_by_name() {
        let e = parse(r#"{"vision_config":{"vision_use_head":false}}"#).unwrap_err().to_string();
        assert!(e.contains("`vision_config.vision_use_head` is false"), "{e}");
    }
}
