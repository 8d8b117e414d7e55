//! SAM2 (`Sam2Model` of transformers: Hiera image encoder with its feature pyramid, prompt encoder, two-way
//! transformer mask decoder) as two ONNX graphs, in the layout of the ONNX community's SAM2 exports:
//!
//! * the **vision encoder** ([`Sam2Graph::VisionEncoder`], `hiera.rs`): `pixel_values` float32 `[1, 3, S, S]` →
//!   `image_embeddings.0` `[1, C/8, S/4, S/4]` and `image_embeddings.1` `[1, C/4, S/8, S/8]` (the high-resolution
//!   features after the mask decoder's `conv_s0` / `conv_s1`), `image_embeddings.2` `[1, C, S/16, S/16]` (the
//!   image embedding, the no-memory embedding added): what transformers' `get_image_embeddings` returns. Run once
//!   per image and keep the three;
//! * the **prompt encoder + mask decoder** ([`Sam2Graph::PromptEncoderMaskDecoder`], `decoder.rs`): the three
//!   embeddings, `input_points` float32 `[1, 1, N, 2]` and `input_labels` int64 `[1, 1, N]` (in model input space,
//!   as `Sam2Processor` writes them: `1` foreground, `0` background, `-1` not a point, `-10` padding), `input_boxes`
//!   float32 `[1, B, 4]` with `B` 0 or 1 (`x1, y1, x2, y2`), `input_masks` float32 `[1, 1, S/4, S/4]` (an earlier
//!   low-resolution mask's logits) with `has_mask_input` float32 `[1]` (1 to use it, 0 to ignore it) →
//!   `pred_masks` `[1, 1, K, S/4, S/4]` and `iou_scores` `[1, 1, K]` (the `K = num_multimask_outputs` masks of
//!   `multimask_output=True`), `single_pred_masks` `[1, 1, 1, S/4, S/4]` and `single_iou_scores` `[1, 1, 1]`
//!   (`multimask_output=False`, with the dynamic selection via stability when the config enables it), and
//!   `object_score_logits` `[1, 1, 1]`. Every click on an image runs only this graph.
//!
//! `N` may be 0 when a box is given. The prompt tokens are those of transformers: the points, the box's two corners,
//! then one not-a-point token (transformers pads points with it when there is no box, and ends a box with it).
//! transformers' fallback for a prompt of neither points nor box (one `(0, 0)` point labelled `-1`, then the pad)
//! is two not-a-point tokens: pass that point explicitly.
//!
//! Shapes are static (batch 1, the config's image size); window partitions, their padding, query pooling and the
//! windowed positional embedding are resolved when the graph is built. The positional embedding (the background
//! embedding resized bicubically to the first stage's grid, plus the tiled window embedding) is computed here, in
//! Rust, exactly as `torch.nn.functional.interpolate(mode="bicubic", align_corners=False)` does, and stored as a
//! constant. The neck's sine position encodings are not built: `Sam2Model` never reads them.

mod decoder;
mod hiera;

use std::path::Path;

use bulkhead_core::ModelFiles;
use serde_json::Value;

use crate::config::Cfg;
use crate::graph::{Graph, Storage};
use crate::weights::Weights;
use crate::{BuiltGraph, GraphError, BUILDER_VERSION};

/// The ONNX opset of the SAM2 graphs (`LayerNormalization` is a standard operator from 17).
pub const SAM2_OPSET: i64 = 17;

/// Names of the vision encoder's outputs, which are also the decoder's first three inputs.
pub const IMAGE_EMBEDDINGS: [&str; 3] = ["image_embeddings.0", "image_embeddings.1", "image_embeddings.2"];

/// Which of the two SAM2 graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sam2Graph {
    /// `pixel_values` → the three image embeddings.
    VisionEncoder,
    /// The image embeddings and a prompt → mask logits and IoU predictions.
    PromptEncoderMaskDecoder,
}

impl Sam2Graph {
    fn tag(self) -> &'static str {
        match self {
            Sam2Graph::VisionEncoder => "vision_encoder",
            Sam2Graph::PromptEncoderMaskDecoder => "prompt_encoder_mask_decoder",
        }
    }
}

/// Whether `model`'s config.json describes a SAM2 checkpoint (`architectures[0]` `Sam2Model` or `model_type`
/// `sam2`); a missing or unreadable config is not one.
pub fn is_sam2(model: &ModelFiles) -> bool {
    let Some(text) = model.config.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) else { return false };
    let Ok(v) = serde_json::from_str::<Value>(&text) else { return false };
    v.pointer("/architectures/0").and_then(Value::as_str) == Some("Sam2Model")
        || v.get("model_type").and_then(Value::as_str) == Some("sam2")
}

/// Returns graph `which` of the SAM2 model from `cache_dir` (`cache_dir/<key>/model.onnx`, the weights hard-linked
/// beside it as for every built graph), building it first when absent. The key covers the builder version, the
/// graph, config.json and the weights' digest.
pub fn build_sam2_cached(model: &ModelFiles, which: Sam2Graph, cache_dir: &Path) -> Result<BuiltGraph, GraphError> {
    let mut tag = b"sam2\0".to_vec();
    tag.extend_from_slice(which.tag().as_bytes());
    tag.extend_from_slice(&SAM2_OPSET.to_le_bytes());
    crate::cache::build_entry(model, &crate::BuildOptions::default(), &tag, cache_dir, || {
        Ok(move |storage: &Storage, path: &Path| write(model, which, storage, path))
    })
}

/// Writes graph `which` of the SAM2 model to `output` as one self-contained file (weights embedded), atomically.
pub fn export_sam2(model: &ModelFiles, which: Sam2Graph, output: &Path) -> Result<(), GraphError> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model.onnx".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = write(model, which, &Storage::Embedded, &tmp).and_then(|()| {
        std::fs::rename(&tmp, output).map_err(|e| GraphError::Io { path: output.to_path_buf(), source: e })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Parses the config, maps the weights and writes graph `which` to `path`.
fn write(model: &ModelFiles, which: Sam2Graph, storage: &Storage, path: &Path) -> Result<(), GraphError> {
    use std::io::Write;
    let folder = || model.source.clone();
    let config_path = model.config.clone().ok_or(GraphError::MissingFile { model: folder(), file: "config.json" })?;
    if model.safetensors_shards.is_empty() {
        return Err(GraphError::MissingFile { model: folder(), file: "model.safetensors" });
    }
    let text =
        std::fs::read_to_string(&config_path).map_err(|e| GraphError::Io { path: config_path.clone(), source: e })?;
    let cfg = Cfg::parse(&config_path, &text)?;
    let c = Sam2Config::parse(&cfg)?;
    let weights = Weights::open(
        &model.safetensors_shards,
        model.safetensors_index.as_deref(),
        &["vision_encoder.backbone.patch_embed.projection.weight"],
    )?;
    let mut g = Graph::new(&weights, SAM2_OPSET, storage);
    let proto = match which {
        Sam2Graph::VisionEncoder => {
            let io = hiera::build(&mut g, &c)?;
            g.finish_io("sam2_vision_encoder", &io.0, &io.1, BUILDER_VERSION)
        }
        Sam2Graph::PromptEncoderMaskDecoder => {
            let io = decoder::build(&mut g, &c)?;
            g.finish_io("sam2_prompt_encoder_mask_decoder", &io.0, &io.1, BUILDER_VERSION)
        }
    };
    let io = |e| GraphError::Io { path: path.to_path_buf(), source: e };
    let file = std::fs::File::create(path).map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    proto.write_to(&mut w).map_err(io)?;
    w.flush().map_err(io)?;
    tracing::debug!(config = %config_path.display(), graph = which.tag(), out = %path.display(), "SAM2 graph written");
    Ok(())
}

/// The parts of a SAM2 config.json the graphs depend on (transformers' defaults where a field is absent).
#[derive(Debug, Clone)]
pub(crate) struct Sam2Config {
    /// The config file (for errors).
    pub path: std::path::PathBuf,
    pub image_size: usize,
    pub channels: usize,
    pub patch_kernel: usize,
    pub patch_stride: usize,
    pub patch_padding: usize,
    pub query_stride: usize,
    pub background: [usize; 2],
    pub query_pool_stages: usize,
    pub blocks: Vec<usize>,
    pub dims: Vec<usize>,
    pub heads: Vec<usize>,
    pub windows: Vec<usize>,
    pub global_blocks: Vec<usize>,
    pub mlp_ratio: f64,
    pub backbone_eps: f32,
    pub channel_list: Vec<usize>,
    pub feature_sizes: Vec<usize>,
    pub fpn_hidden: usize,
    pub fpn_kernel: usize,
    pub fpn_stride: usize,
    pub fpn_padding: usize,
    pub top_down: Vec<usize>,
    pub prompt_image_size: usize,
    pub patch_size: usize,
    pub mask_channels: usize,
    pub point_embeddings: usize,
    pub prompt_eps: f32,
    pub decoder_hidden: usize,
    pub mlp_dim: usize,
    pub decoder_layers: usize,
    pub decoder_heads: usize,
    pub downsample: usize,
    pub multimask_outputs: usize,
    pub iou_depth: usize,
    pub iou_hidden: usize,
    pub dynamic_multimask: bool,
    pub stability_delta: f32,
    pub stability_thresh: f32,
}

const BACKBONE: &str = "vision_config.backbone_config";
const VISION: &str = "vision_config";
const PROMPT: &str = "prompt_encoder_config";
const DECODER: &str = "mask_decoder_config";

/// A list of positive integers at `key` (a bare integer counts as a list of one), or `default`.
fn list(c: &Cfg, key: &str, default: &[usize]) -> Result<Vec<usize>, GraphError> {
    match c.get(key) {
        None => Ok(default.to_vec()),
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|&n| n > 0)
            .map(|n| vec![n as usize])
            .ok_or_else(|| c.err(format!("`{key}` must be a positive integer or a list of them, found {n}"))),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_u64().filter(|&n| n <= 1 << 24).map(|n| n as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| c.err(format!("`{key}` must be a list of non-negative integers"))),
        Some(x) => Err(c.err(format!("`{key}` must be a list of integers, found {x}"))),
    }
}

/// A square size: an integer, or a list of two equal integers.
fn square(c: &Cfg, key: &str, default: usize) -> Result<usize, GraphError> {
    let v = list(c, key, &[default])?;
    match v[..] {
        [n] | [n, _] if v.iter().all(|&m| m == n) && n > 0 => Ok(n),
        _ => Err(c.unsupported(format!("`{key}` is {v:?}: only square sizes are supported"))),
    }
}

fn gelu_only(c: &Cfg, key: &str) -> Result<(), GraphError> {
    match c.str_or(key, "gelu") {
        "gelu" => Ok(()),
        other => Err(c.unsupported(format!("`{key}` is `{other}`: only `gelu` (exact) is supported"))),
    }
}

impl Sam2Config {
    /// Reads and checks the config; every error names the file and the field.
    pub fn parse(c: &Cfg) -> Result<Sam2Config, GraphError> {
        let arch = c.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str);
        let model_type = c.str_or("model_type", "");
        if arch != Some("Sam2Model") && !(arch.is_none() && model_type == "sam2") {
            return Err(c.err(format!(
                "`architectures[0]` is {arch:?} (model_type `{model_type}`), not `Sam2Model`: not a SAM2 checkpoint"
            )));
        }
        let b = |k: &str| format!("{BACKBONE}.{k}");
        let v = |k: &str| format!("{VISION}.{k}");
        let p = |k: &str| format!("{PROMPT}.{k}");
        let d = |k: &str| format!("{DECODER}.{k}");
        gelu_only(c, &b("hidden_act"))?;
        gelu_only(c, &p("hidden_act"))?;
        gelu_only(c, &d("hidden_act"))?;
        let background = list(c, &b("window_positional_embedding_background_size"), &[7, 7])?;
        let background = match background[..] {
            [h, w] if h > 0 && w > 0 => [h, w],
            _ => {
                return Err(c.err(format!(
                    "`{}` must be two positive integers, found {background:?}",
                    b("window_positional_embedding_background_size")
                )))
            }
        };
        let feature_sizes = match c.get(&v("backbone_feature_sizes")) {
            None => vec![256, 128, 64],
            Some(Value::Array(a)) => a
                .iter()
                .map(|s| match s.as_array().map(|x| x.iter().map(Value::as_u64).collect::<Vec<_>>()) {
                    Some(x) if x.len() == 2 && x[0] == x[1] && x[0].is_some_and(|n| n > 0) => {
                        Ok(x[0].unwrap_or_default() as usize)
                    }
                    _ => {
                        Err(c
                            .err(format!("`{}` must list square [h, w] sizes, found {s}", v("backbone_feature_sizes"))))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(x) => return Err(c.err(format!("`{}` must be a list, found {x}", v("backbone_feature_sizes")))),
        };
        let f32_of = |key: &str, default: f64| -> Result<f32, GraphError> {
            match c.get(key) {
                None => Ok(default as f32),
                Some(x) => x
                    .as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f as f32)
                    .ok_or_else(|| c.err(format!("`{key}` must be a number, found {x}"))),
            }
        };
        let cfg = Sam2Config {
            path: c.path.clone(),
            image_size: square(c, &b("image_size"), 1024)?,
            channels: c.usize_of(&[&b("num_channels")], Some(3))?,
            patch_kernel: square(c, &b("patch_kernel_size"), 7)?,
            patch_stride: square(c, &b("patch_stride"), 4)?,
            patch_padding: list(c, &b("patch_padding"), &[3]).and_then(|l| match l[..] {
                [n] | [n, _] if l.iter().all(|&m| m == n) => Ok(n),
                _ => Err(c.unsupported(format!("`{}` is {l:?}: only square padding is supported", b("patch_padding")))),
            })?,
            query_stride: square(c, &b("query_stride"), 2)?,
            background,
            query_pool_stages: c.count_or(&b("num_query_pool_stages"), 3)?,
            blocks: list(c, &b("blocks_per_stage"), &[1, 2, 7, 2])?,
            dims: list(c, &b("embed_dim_per_stage"), &[96, 192, 384, 768])?,
            heads: list(c, &b("num_attention_heads_per_stage"), &[1, 2, 4, 8])?,
            windows: list(c, &b("window_size_per_stage"), &[8, 4, 14, 7])?,
            global_blocks: list(c, &b("global_attention_blocks"), &[5, 7, 9])?,
            mlp_ratio: c.f64_of(&[&b("mlp_ratio")], Some(4.0))?,
            backbone_eps: c.eps(&[&b("layer_norm_eps")], 1e-6)?,
            channel_list: list(c, &v("backbone_channel_list"), &[768, 384, 192, 96])?,
            feature_sizes,
            fpn_hidden: c.usize_of(&[&v("fpn_hidden_size")], Some(256))?,
            fpn_kernel: c.usize_of(&[&v("fpn_kernel_size")], Some(1))?,
            fpn_stride: c.usize_of(&[&v("fpn_stride")], Some(1))?,
            fpn_padding: c.count_or(&v("fpn_padding"), 0)?,
            top_down: list(c, &v("fpn_top_down_levels"), &[2, 3])?,
            prompt_image_size: c.usize_of(&[&p("image_size")], Some(1024))?,
            patch_size: c.usize_of(&[&p("patch_size")], Some(16))?,
            mask_channels: c.usize_of(&[&p("mask_input_channels")], Some(16))?,
            point_embeddings: c.usize_of(&[&p("num_point_embeddings")], Some(4))?,
            prompt_eps: c.eps(&[&p("layer_norm_eps")], 1e-6)?,
            decoder_hidden: c.usize_of(&[&d("hidden_size")], Some(256))?,
            mlp_dim: c.usize_of(&[&d("mlp_dim")], Some(2048))?,
            decoder_layers: c.usize_of(&[&d("num_hidden_layers")], Some(2))?,
            decoder_heads: c.usize_of(&[&d("num_attention_heads")], Some(8))?,
            downsample: c.usize_of(&[&d("attention_downsample_rate")], Some(2))?,
            multimask_outputs: c.usize_of(&[&d("num_multimask_outputs")], Some(3))?,
            iou_depth: c.usize_of(&[&d("iou_head_depth")], Some(3))?,
            iou_hidden: c.usize_of(&[&d("iou_head_hidden_dim")], Some(256))?,
            dynamic_multimask: c.bool_or(&d("dynamic_multimask_via_stability"), true)?,
            stability_delta: f32_of(&d("dynamic_multimask_stability_delta"), 0.05)?,
            stability_thresh: f32_of(&d("dynamic_multimask_stability_thresh"), 0.98)?,
        };
        cfg.check(c)?;
        Ok(cfg)
    }

    /// Cross-field consistency, checked where transformers would fail at run time or silently disagree.
    fn check(&self, c: &Cfg) -> Result<(), GraphError> {
        let b = |k: &str| format!("{BACKBONE}.{k}");
        let stages = self.blocks.len();
        for (key, len) in [
            (b("embed_dim_per_stage"), self.dims.len()),
            (b("num_attention_heads_per_stage"), self.heads.len()),
            (b("window_size_per_stage"), self.windows.len()),
        ] {
            if len != stages {
                return Err(c.err(format!("`{key}` has {len} entries but `{}` has {stages}", b("blocks_per_stage"))));
            }
        }
        if stages < 3 || self.blocks.contains(&0) {
            return Err(c.err(format!("`{}` must list at least 3 non-empty stages", b("blocks_per_stage"))));
        }
        for (s, (&dim, &heads)) in self.dims.iter().zip(&self.heads).enumerate() {
            if heads == 0 || dim == 0 || !dim.is_multiple_of(heads) {
                return Err(c.err(format!(
                    "stage {s}: `{}` {dim} is not a multiple of `{}` {heads}",
                    b("embed_dim_per_stage"),
                    b("num_attention_heads_per_stage")
                )));
            }
        }
        if self.channel_list.len() != stages || self.channel_list.iter().rev().zip(&self.dims).any(|(a, b)| a != b) {
            return Err(c.err(format!(
                "`{VISION}.backbone_channel_list` {:?} must be `{}` {:?} reversed",
                self.channel_list,
                b("embed_dim_per_stage"),
                self.dims
            )));
        }
        let d = self.fpn_hidden;
        if self.decoder_hidden != d {
            return Err(c.err(format!(
                "`{DECODER}.hidden_size` {} differs from `{VISION}.fpn_hidden_size` {d}",
                self.decoder_hidden
            )));
        }
        if !d.is_multiple_of(8) || !(d / self.downsample).is_multiple_of(self.decoder_heads) {
            return Err(c.err(format!(
                "`{DECODER}.hidden_size` {d} must be a multiple of 8 and, divided by `attention_downsample_rate` {}, \
                 of `num_attention_heads` {}",
                self.downsample, self.decoder_heads
            )));
        }
        if self.prompt_image_size != self.image_size {
            return Err(c.err(format!(
                "`{PROMPT}.image_size` {} differs from `{}` {}",
                self.prompt_image_size,
                b("image_size"),
                self.image_size
            )));
        }
        if self.point_embeddings < 4 || self.decoder_layers < 2 || self.iou_depth < 2 {
            return Err(c.err(format!(
                "`{PROMPT}.num_point_embeddings` must be at least 4 and `{DECODER}.num_hidden_layers` / \
                 `iou_head_depth` at least 2"
            )));
        }
        if !self.mask_channels.is_multiple_of(4) {
            return Err(c.err(format!("`{PROMPT}.mask_input_channels` {} must be a multiple of 4", self.mask_channels)));
        }
        Ok(())
    }

    /// Side of the image embedding (`image_size / patch_size`).
    pub fn embedding_side(&self) -> usize {
        self.prompt_image_size / self.patch_size
    }
}

/// The float32 values of a weight (f16/bf16 widened), checked against `shape`.
pub(crate) fn values(w: &Weights, name: &str, shape: &[usize]) -> Result<Vec<f32>, GraphError> {
    let t = w.get(name, shape)?;
    let owned = t.converted_f32();
    let bytes = owned.as_deref().unwrap_or(t.bytes);
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}
