//! OpenAI CLIP (`CLIPModel`): the towers as transformers 5's `modeling_clip.py` computes them.
//!
//! * vision: patch `Conv` (no bias), a class embedding in front, the position table added, `pre_layrnorm`, pre-norm
//!   encoder layers, `post_layernorm` of the class token's state, `visual_projection` (no bias);
//! * text: token + position embeddings, causal self-attention (plus the padding mask), `final_layer_norm`, the state
//!   of the end-of-text token, `text_projection` (no bias). Which token: with the legacy `eos_token_id` 2 (the
//!   openai/clip-vit-* configs) the first position of the largest id (`argmax(input_ids)`: `<|endoftext|>` is the
//!   last id of CLIP's vocabulary); otherwise the first position of `eos_token_id` (position 0 when absent), as
//!   transformers does.

use crate::config::Cfg;
use crate::graph::{attr_int, Graph, FLOAT};
use crate::layers::{layer_norm, linear, padding_bias, position_bias, PositionMask};
use crate::vision::{
    encoder, patch_embeddings, text_embeddings, token_at, token_per_row, Defaults, Section, TextTower, TowerSpec,
    VisionTower,
};
use crate::GraphError;

/// A tensor every CLIPModel checkpoint has.
pub(crate) const ANCHORS: &[&str] = &["text_model.embeddings.token_embedding.weight"];

/// How the text tower picks the token it pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EosPick {
    /// The first position of the largest id (`eos_token_id` 2 in config.json: the legacy configs).
    ArgmaxId,
    /// The first position of this id.
    First(i64),
}

/// A parsed `CLIPConfig`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClipConfig {
    pub text: TextTower,
    pub vision: VisionTower,
    pub projection: usize,
    pub eos: EosPick,
}

impl ClipConfig {
    /// Parses `text_config`, `vision_config` and `projection_dim` with transformers' defaults.
    pub fn parse(c: &Cfg) -> Result<ClipConfig, GraphError> {
        let t = Section { c, name: "text_config" };
        let text = TextTower {
            enc: t.encoder(&Defaults {
                hidden: 512,
                intermediate: 2048,
                layers: 12,
                heads: 8,
                eps: 1e-5,
                act: "quick_gelu",
            })?,
            vocab: t.usize("vocab_size", 49408)?,
            max_positions: t.usize("max_position_embeddings", 77)?,
        };
        let v = Section { c, name: "vision_config" };
        let vision = v.vision(
            &Defaults { hidden: 768, intermediate: 3072, layers: 12, heads: 12, eps: 1e-5, act: "quick_gelu" },
            32,
        )?;
        let eos = match t.opt_i64("eos_token_id", Some(49407))? {
            Some(2) => EosPick::ArgmaxId,
            Some(id) => EosPick::First(id),
            None => {
                return Err(c.unsupported(
                    "`text_config.eos_token_id` is null; the CLIP text tower pools at its end-of-text token".into(),
                ))
            }
        };
        Ok(ClipConfig { text, vision, projection: c.usize_of(&["projection_dim"], Some(512))?, eos })
    }

    pub fn spec(&self) -> TowerSpec {
        TowerSpec {
            family: "clip",
            image_size: self.vision.image_size,
            channels: self.vision.channels,
            image_positions: self.vision.grid().pow(2) + 1,
            image_dim: self.projection,
            text_dim: self.projection,
            max_text_tokens: self.text.max_positions,
            pad_text_to_max: false,
        }
    }
}

/// Writes the vision tower; the output is `image_embeds`.
pub(crate) fn build_vision(g: &mut Graph<'_>, c: &ClipConfig) -> Result<(), GraphError> {
    let v = &c.vision;
    let h = v.enc.hidden;
    let positions = v.grid() * v.grid() + 1;
    let patches = patch_embeddings(g, v, "vision_model.embeddings.patch_embedding", false)?;
    // The class embedding `[h]` in front of every image's patches: Expand to `[batch, 1, h]`, then Concat.
    let class = g.weight("vision_model.embeddings.class_embedding", &[h])?;
    let class_shape = g.ints("shape_class", &[1, 1, h as i64]);
    let class = g.node("Reshape", "class_token", &[&class, &class_shape], vec![]);
    let pixel_shape = g.node("Shape", "pixel_shape", &["pixel_values"], vec![]);
    let batch = g.slice(&pixel_shape, 0, 0, 1, "batch");
    let rest = g.ints("class_rest", &[1, h as i64]);
    let target = g.node("Concat", "class_target", &[&batch, &rest], vec![attr_int("axis", 0)]);
    let class = g.node("Expand", "class_tokens", &[&class, &target], vec![]);
    let x = g.node("Concat", "vision_tokens", &[&class, &patches], vec![attr_int("axis", 1)]);
    let table = g.weight("vision_model.embeddings.position_embedding.weight", &[positions, h])?;
    let x = g.node("Add", "vision_embed", &[&x, &table], vec![]);
    let x = layer_norm(g, &x, "vision_model.pre_layrnorm", h, v.enc.eps, true)?;
    let x = encoder(g, x, "vision_model.encoder", &v.enc, None)?;
    let cls = token_at(g, &x, 0);
    let pooled = layer_norm(g, &cls, "vision_model.post_layernorm", h, v.enc.eps, true)?;
    let out = linear(g, &pooled, "visual_projection", h, c.projection, false)?;
    g.node_to("Identity", &[&out], "image_embeds", vec![]);
    Ok(())
}

/// Writes the text tower; the output is `text_embeds`.
pub(crate) fn build_text(g: &mut Graph<'_>, c: &ClipConfig) -> Result<(), GraphError> {
    let t = &c.text;
    let h = t.enc.hidden;
    let x = text_embeddings(g, t)?;
    let positions = crate::layers::positions(g);
    let causal = position_bias(g, &positions, PositionMask::Causal);
    let padding = padding_bias(g);
    let bias = g.node("Add", "text_bias", &[&padding, &causal], vec![]);
    let x = encoder(g, x, "text_model.encoder", &t.enc, Some(&bias))?;
    // The final layer norm works token by token: pick the pooled token first, then normalise it.
    let scores = match c.eos {
        EosPick::ArgmaxId => g.node("Cast", "ids_float", &["input_ids"], vec![attr_int("to", FLOAT)]),
        EosPick::First(id) => {
            let id = g.scalar_i64(id);
            let is_eos = g.node("Equal", "is_eos", &["input_ids", &id], vec![]);
            g.node("Cast", "is_eos_float", &[&is_eos], vec![attr_int("to", FLOAT)])
        }
    };
    // ArgMax returns the first of equal maxima (`select_last_index` 0), as torch's argmax does.
    let index = g.node("ArgMax", "eos_index", &[&scores], vec![attr_int("axis", 1), attr_int("keepdims", 0)]);
    let eos = token_per_row(g, &x, &index, h);
    let pooled = layer_norm(g, &eos, "text_model.final_layer_norm", h, t.enc.eps, true)?;
    let out = linear(g, &pooled, "text_projection", h, c.projection, false)?;
    g.node_to("Identity", &[&out], "text_embeds", vec![]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Result<ClipConfig, GraphError> {
        ClipConfig::parse(&Cfg::parse(Path::new("config.json"), text)?)
    }

    #[test]
    fn defaults_are_transformers_and_eos_2_is_the_legacy_argmax() {
        // openai/clip-vit-base-patch32 leaves most fields to the defaults.
        let c = parse(
            r#"{"architectures":["CLIPModel"],"projection_dim":512,"text_config":{"eos_token_id":2},
            "vision_config":{"hidden_size":768,"patch_size":32}}"#,
        )
        .unwrap();
        assert_eq!((c.text.enc.hidden, c.text.enc.heads, c.text.max_positions, c.text.vocab), (512, 8, 77, 49408));
        assert_eq!((c.vision.image_size, c.vision.patch, c.vision.grid(), c.vision.enc.layers), (224, 32, 7, 12));
        assert_eq!(c.eos, EosPick::ArgmaxId);
        assert_eq!(parse(r#"{"text_config":{}}"#).unwrap().eos, EosPick::First(49407));
    }

    #[test]
    fn bad_fields_are_named() {
        let e = parse(r#"{"vision_config":{"hidden_act":"swish"}}"#).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("`vision_config.hidden_act` `swish`"), "{e}");
        let e = parse(r#"{"text_config":{"hidden_size":30,"num_attention_heads":4}}"#).unwrap_err().to_string();
        assert!(e.contains("`text_config.hidden_size` 30 is not a multiple"), "{e}");
        let e = parse(r#"{"vision_config":{"image_size":[224,224]}}"#).unwrap_err().to_string();
        assert!(e.contains("`vision_config.image_size` must be a positive integer"), "{e}");
        let e = parse(r#"{"text_config":{"eos_token_id":[2,3]}}"#).unwrap_err().to_string();
        assert!(e.contains("`text_config.eos_token_id` must be one integer"), "{e}");
    }
}
