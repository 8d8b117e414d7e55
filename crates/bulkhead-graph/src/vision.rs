//! Two-tower image-text models (CLIP, SigLIP): one graph per tower, built from the folder's config.json, cached
//! like the text encoders' graphs (the tower is part of the key).
//!
//! * vision tower: `pixel_values` float32 `[batch, channels, image_size, image_size]` → `image_embeds` float32
//!   `[batch, dim]`, what transformers' `get_image_features(...).pooler_output` returns;
//! * text tower: `input_ids`, `attention_mask` int64 `[batch, sequence]` → `text_embeds` float32 `[batch, dim]`,
//!   what `get_text_features(...).pooler_output` returns.
//!
//! Neither is normalised (transformers and sentence-transformers' CLIP module return them as they are; a
//! `Normalize` module after it, or the caller, decides). The families' own parts live in `clip` and `siglip`; this
//! module holds the API, the config access shared by both (`text_config.*`, `vision_config.*` with transformers'
//! defaults) and the pre-norm encoder layer both use.

use std::path::Path;

use bulkhead_core::ModelFiles;
use serde_json::Value;

use crate::clip::{self, ClipConfig};
use crate::config::Cfg;
use crate::graph::{attr_int, attr_ints, Dim, Graph, Io, Storage, FLOAT, INT64};
use crate::layers::{gelu, layer_norm, linear, split_heads};
use crate::siglip::{self, SiglipConfig};
use crate::{check_options, weights, BuildOptions, BuiltGraph, GraphError, ShapeMode, BUILDER_VERSION};

/// One tower of a two-tower image-text model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tower {
    /// `pixel_values` → `image_embeds`.
    Vision,
    /// `input_ids` (+ `attention_mask`) → `text_embeds`.
    Text,
}

impl Tower {
    fn name(self) -> &'static str {
        match self {
            Tower::Vision => "vision",
            Tower::Text => "text",
        }
    }
}

/// `architectures[0]` values whose towers [`build_tower_cached`] builds.
pub const TOWER_ARCHITECTURES: &[&str] = bulkhead_core::IMAGE_TEXT_ARCHITECTURES;

/// What a caller needs to feed a tower model's graphs and read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TowerSpec {
    /// `clip` or `siglip`.
    pub family: &'static str,
    /// Side of the square images the vision tower takes (`vision_config.image_size`).
    pub image_size: usize,
    /// Channels of `pixel_values` (`vision_config.num_channels`).
    pub channels: usize,
    /// Positions of the vision encoder's sequence (patches, plus CLIP's class token): what one image costs, in the
    /// units a batch's token budget counts.
    pub image_positions: usize,
    /// Width of `image_embeds`.
    pub image_dim: usize,
    /// Width of `text_embeds`.
    pub text_dim: usize,
    /// The longest token sequence (`text_config.max_position_embeddings`).
    pub max_text_tokens: usize,
    /// Whether texts are padded to `max_text_tokens` (SigLIP, which pools the last position and was trained on
    /// texts padded to the maximum length) rather than to the longest text of the batch (CLIP, which pools its end
    /// of text token).
    pub pad_text_to_max: bool,
}

/// The transformers folder of a tower model at `path`: the folder itself, or in a sentence-transformers CLIP
/// folder (`clip-ViT-B-32`'s layout) the module that `modules.json` lists with the transformers files
/// (`0_CLIPModel/`).
pub fn tower_model_files(path: &Path) -> Result<ModelFiles, GraphError> {
    let open =
        |p: &Path| ModelFiles::open(p).map_err(|e| GraphError::Config { path: p.to_path_buf(), reason: e.to_string() });
    if path.join("config.json").is_file() || !path.join("modules.json").is_file() {
        return open(path);
    }
    let modules_path = path.join("modules.json");
    let text =
        std::fs::read_to_string(&modules_path).map_err(|e| GraphError::Io { path: modules_path.clone(), source: e })?;
    let bad = |reason: String| GraphError::Config { path: modules_path.clone(), reason };
    let modules: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let list = modules.as_array().ok_or_else(|| bad("expected a JSON array of modules".into()))?;
    for m in list {
        let ty = m.get("type").and_then(Value::as_str).unwrap_or_default();
        let sub = m.get("path").and_then(Value::as_str).unwrap_or_default();
        if !(ty.ends_with("CLIPModel") || ty.ends_with("Transformer")) {
            continue;
        }
        if sub.contains("..") || Path::new(sub).is_absolute() {
            return Err(bad(format!("module path `{sub}` is not a folder of this model")));
        }
        if path.join(sub).join("config.json").is_file() {
            return open(&path.join(sub));
        }
    }
    Err(bad("no module of type `sentence_transformers.models.CLIPModel` (or `Transformer`) with a config.json in its \
         folder; give the folder that holds the transformers files"
        .into()))
}

/// The tower model's [`TowerSpec`], from its config.json.
pub fn tower_spec(model: &ModelFiles) -> Result<TowerSpec, GraphError> {
    Ok(TowerModel::parse(&read_config(model)?)?.spec())
}

/// Returns the graph of one tower of `model` from `cache_dir`, building it first when absent (see
/// [`build_cached`](crate::build_cached): same key scheme, storage and publication, with the tower in the key).
/// In [`ShapeMode::Static`] the vision tower fixes the batch only (images are always `image_size` square).
pub fn build_tower_cached(
    model: &ModelFiles,
    tower: Tower,
    opts: &BuildOptions,
    cache_dir: &Path,
) -> Result<BuiltGraph, GraphError> {
    let which = format!("tower:{}", tower.name());
    crate::cache::build_entry(model, opts, which.as_bytes(), cache_dir, || {
        let inputs = TowerInputs::open(model, opts)?;
        Ok(move |storage: &Storage, path: &Path| inputs.write(tower, opts, storage, path))
    })
}

/// Writes a self-contained ONNX file (weights embedded) of one tower of `model` to `output`, atomically.
pub fn export_tower(model: &ModelFiles, tower: Tower, opts: &BuildOptions, output: &Path) -> Result<(), GraphError> {
    let inputs = TowerInputs::open(model, opts)?;
    let tmp = output.with_file_name(format!(
        ".{}.tmp-{}",
        output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model.onnx".into()),
        std::process::id()
    ));
    let result = inputs.write(tower, opts, &Storage::Embedded, &tmp).and_then(|()| {
        std::fs::rename(&tmp, output).map_err(|e| GraphError::Io { path: output.to_path_buf(), source: e })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn read_config(model: &ModelFiles) -> Result<Cfg, GraphError> {
    let path =
        model.config.clone().ok_or(GraphError::MissingFile { model: model.source.clone(), file: "config.json" })?;
    let text = std::fs::read_to_string(&path).map_err(|e| GraphError::Io { path: path.clone(), source: e })?;
    Cfg::parse(&path, &text)
}

/// A parsed tower model.
pub(crate) enum TowerModel {
    Clip(ClipConfig),
    Siglip(SiglipConfig),
}

impl TowerModel {
    /// Parses config.json; another architecture is an error naming it and the supported ones.
    pub fn parse(c: &Cfg) -> Result<TowerModel, GraphError> {
        let architecture = c.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str);
        let model_type = c.get("model_type").and_then(Value::as_str);
        match (architecture, model_type) {
            (Some("CLIPModel"), _) | (None, Some("clip")) => Ok(TowerModel::Clip(ClipConfig::parse(c)?)),
            (Some("SiglipModel"), _) | (None, Some("siglip")) => Ok(TowerModel::Siglip(SiglipConfig::parse(c)?)),
            (Some("Siglip2Model"), _) | (None, Some("siglip2")) => Err(c.unsupported(
                "Siglip2Model (SigLIP 2 NaFlex: patches at each image's own aspect ratio, position embeddings \
                 resized per image) is not supported by the ONNX graph builder; the fixed-resolution SigLIP 2 \
                 checkpoints (`SiglipModel`, e.g. siglip2-base-patch16-224) are"
                    .into(),
            )),
            (a, t) => Err(c.unsupported(format!(
                "architecture {} (model_type {}) is not a two-tower image-text model the ONNX graph builder writes \
                 (supported: {})",
                a.unwrap_or("(none)"),
                t.unwrap_or("(none)"),
                TOWER_ARCHITECTURES.join(", ")
            ))),
        }
    }

    fn spec(&self) -> TowerSpec {
        match self {
            TowerModel::Clip(c) => c.spec(),
            TowerModel::Siglip(c) => c.spec(),
        }
    }

    fn anchors(&self) -> &'static [&'static str] {
        match self {
            TowerModel::Clip(_) => clip::ANCHORS,
            TowerModel::Siglip(_) => siglip::ANCHORS,
        }
    }

    /// The token embedding table (prefix-less name) and its rows.
    fn embedding_table(&self) -> (&'static str, usize) {
        ("text_model.embeddings.token_embedding.weight", self.text().vocab)
    }

    fn text(&self) -> &TextTower {
        match self {
            TowerModel::Clip(c) => &c.text,
            TowerModel::Siglip(c) => &c.text,
        }
    }
}

/// The parsed config and mapped weights of a tower model.
struct TowerInputs {
    model: TowerModel,
    weights: weights::Weights,
}

impl TowerInputs {
    fn open(files: &ModelFiles, opts: &BuildOptions) -> Result<TowerInputs, GraphError> {
        check_options(opts)?;
        let cfg = read_config(files)?;
        let model = TowerModel::parse(&cfg)?;
        if files.safetensors_shards.is_empty() {
            return Err(GraphError::MissingFile { model: files.source.clone(), file: "model.safetensors" });
        }
        if let ShapeMode::Static { seq, .. } = opts.shape {
            let max = model.text().max_positions;
            if seq > max {
                return Err(GraphError::Options(format!(
                    "static sequence length {seq} exceeds the {max} positions of the text tower"
                )));
            }
        }
        let weights =
            weights::Weights::open(&files.safetensors_shards, files.safetensors_index.as_deref(), model.anchors())?;
        check_tokenizer(files, &model, &weights)?;
        Ok(TowerInputs { model, weights })
    }

    fn write(&self, tower: Tower, opts: &BuildOptions, storage: &Storage, path: &Path) -> Result<(), GraphError> {
        use std::io::Write;
        let mut g = Graph::new(&self.weights, opts.opset, storage);
        let spec = self.model.spec();
        let (batch, seq) = match opts.shape {
            ShapeMode::Dynamic => (Dim::Named("batch"), Dim::Named("sequence")),
            ShapeMode::Static { batch, seq } => (Dim::Fixed(batch), Dim::Fixed(seq)),
        };
        let (name, inputs, output) = match tower {
            Tower::Vision => {
                match &self.model {
                    TowerModel::Clip(c) => clip::build_vision(&mut g, c)?,
                    TowerModel::Siglip(c) => siglip::build_vision(&mut g, c)?,
                }
                let side = Dim::Fixed(spec.image_size);
                let pixels = Io {
                    name: "pixel_values".into(),
                    elem: FLOAT,
                    dims: vec![batch, Dim::Fixed(spec.channels), side, side],
                };
                let out =
                    Io { name: "image_embeds".into(), elem: FLOAT, dims: vec![batch, Dim::Fixed(spec.image_dim)] };
                (format!("{}-vision", spec.family), vec![pixels], out)
            }
            Tower::Text => {
                match &self.model {
                    TowerModel::Clip(c) => clip::build_text(&mut g, c)?,
                    TowerModel::Siglip(c) => siglip::build_text(&mut g, c)?,
                }
                let ids = |n: &str| Io { name: n.into(), elem: INT64, dims: vec![batch, seq] };
                let out = Io { name: "text_embeds".into(), elem: FLOAT, dims: vec![batch, Dim::Fixed(spec.text_dim)] };
                (format!("{}-text", spec.family), vec![ids("input_ids"), ids("attention_mask")], out)
            }
        };
        let model = g.finish_io(&name, &inputs, &[output], BUILDER_VERSION);
        let io = |e| GraphError::Io { path: path.to_path_buf(), source: e };
        let file = std::fs::File::create(path).map_err(io)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        model.write_to(&mut w).map_err(io)?;
        w.flush().map_err(io)?;
        tracing::debug!(graph = name, out = %path.display(), "ONNX tower graph written");
        Ok(())
    }
}

/// A tokenizer with ids past the token embedding table would index out of it at run time.
fn check_tokenizer(files: &ModelFiles, model: &TowerModel, weights: &weights::Weights) -> Result<(), GraphError> {
    let Some(tok) = &files.tokenizer else { return Ok(()) };
    let (table, rows) = model.embedding_table();
    let Ok(ids) = bulkhead_core::tokenizer_vocab_size(tok) else { return Ok(()) };
    if ids > rows {
        return Err(GraphError::Weights {
            path: tok.clone(),
            reason: format!(
                "the tokenizer has {ids} token ids but the embedding table `{}` has {rows} rows; the tokenizer does \
                 not belong to these weights",
                weights.full_name(table)
            ),
        });
    }
    Ok(())
}

/// The MLP activation (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Act {
    /// `x · sigmoid(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// Exact GELU.
    Gelu,
    /// The tanh approximation (`gelu_pytorch_tanh`, `gelu_new`; SigLIP).
    GeluTanh,
}

/// A transformer encoder's shape, as both towers of both families describe it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Encoder {
    pub hidden: usize,
    pub heads: usize,
    pub layers: usize,
    pub intermediate: usize,
    pub eps: f32,
    pub act: Act,
}

/// A text tower's shape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TextTower {
    pub enc: Encoder,
    pub vocab: usize,
    pub max_positions: usize,
}

/// A vision tower's shape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VisionTower {
    pub enc: Encoder,
    pub channels: usize,
    pub image_size: usize,
    pub patch: usize,
}

impl VisionTower {
    /// Patches per side (transformers: `image_size // patch_size`).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch
    }
}

/// transformers' defaults for one sub-config.
pub(crate) struct Defaults {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub eps: f64,
    pub act: &'static str,
}

/// Access to `{section}.{field}` of config.json with transformers' defaults; errors name the dotted field.
pub(crate) struct Section<'c> {
    pub c: &'c Cfg,
    pub name: &'static str,
}

impl Section<'_> {
    fn key(&self, field: &str) -> String {
        format!("{}.{field}", self.name)
    }

    pub fn usize(&self, field: &str, default: usize) -> Result<usize, GraphError> {
        self.c.usize_of(&[&self.key(field)], Some(default))
    }

    pub fn str_or<'s>(&'s self, field: &str, default: &'s str) -> &'s str {
        self.c.str_or(&self.key(field), default)
    }

    pub fn bool_or(&self, field: &str, default: bool) -> Result<bool, GraphError> {
        self.c.bool_or(&self.key(field), default)
    }

    /// An integer or null field (`eos_token_id`); a list is refused.
    pub fn opt_i64(&self, field: &str, default: Option<i64>) -> Result<Option<i64>, GraphError> {
        let key = self.key(field);
        match self.c.v.get(self.name).and_then(|s| s.get(field)) {
            None => Ok(default),
            Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.c.unsupported(format!("`{key}` must be one integer token id, found {v}"))),
        }
    }

    /// The encoder fields (`hidden_size`, `num_attention_heads`, `num_hidden_layers`, `intermediate_size`,
    /// `layer_norm_eps`, `hidden_act`).
    pub fn encoder(&self, d: &Defaults) -> Result<Encoder, GraphError> {
        let act = match self.str_or("hidden_act", d.act) {
            "quick_gelu" => Act::QuickGelu,
            "gelu" | "gelu_python" => Act::Gelu,
            "gelu_pytorch_tanh" | "gelu_new" => Act::GeluTanh,
            other => {
                return Err(self.c.unsupported(format!(
                    "`{}` `{other}` is not supported by the ONNX graph builder (supported: quick_gelu, gelu, \
                     gelu_pytorch_tanh, gelu_new)",
                    self.key("hidden_act")
                )))
            }
        };
        let enc = Encoder {
            hidden: self.usize("hidden_size", d.hidden)?,
            heads: self.usize("num_attention_heads", d.heads)?,
            layers: self.usize("num_hidden_layers", d.layers)?,
            intermediate: self.usize("intermediate_size", d.intermediate)?,
            eps: self.c.eps(&[&self.key("layer_norm_eps")], d.eps)?,
            act,
        };
        if !enc.hidden.is_multiple_of(enc.heads) {
            return Err(self.c.err(format!(
                "`{}` {} is not a multiple of `{}` {}",
                self.key("hidden_size"),
                enc.hidden,
                self.key("num_attention_heads"),
                enc.heads
            )));
        }
        Ok(enc)
    }

    /// The vision fields: the encoder, `num_channels`, `image_size`, `patch_size`.
    pub fn vision(&self, d: &Defaults, patch: usize) -> Result<VisionTower, GraphError> {
        let v = VisionTower {
            enc: self.encoder(d)?,
            channels: self.usize("num_channels", 3)?,
            image_size: self.usize("image_size", 224)?,
            patch: self.usize("patch_size", patch)?,
        };
        if v.patch > v.image_size {
            return Err(self.c.err(format!(
                "`{}` {} is larger than `{}` {}",
                self.key("patch_size"),
                v.patch,
                self.key("image_size"),
                v.image_size
            )));
        }
        Ok(v)
    }
}

/// `x → x + attn(ln1(x)); x → x + mlp(ln2(x))` for every layer of `{prefix}.layers.{i}`
/// (`self_attn.{q,k,v,out}_proj`, `layer_norm1/2`, `mlp.fc1/fc2`), with the additive attention `bias`
/// (`[batch or 1, 1, seq, seq]`) when given.
pub(crate) fn encoder(
    g: &mut Graph<'_>,
    mut x: String,
    prefix: &str,
    e: &Encoder,
    bias: Option<&str>,
) -> Result<String, GraphError> {
    let h = e.hidden;
    let d = h / e.heads;
    for l in 0..e.layers {
        let p = format!("{prefix}.layers.{l}");
        let n = layer_norm(g, &x, &format!("{p}.layer_norm1"), h, e.eps, true)?;
        let q = linear(g, &n, &format!("{p}.self_attn.q_proj"), h, h, true)?;
        let k = linear(g, &n, &format!("{p}.self_attn.k_proj"), h, h, true)?;
        let v = linear(g, &n, &format!("{p}.self_attn.v_proj"), h, h, true)?;
        let q = split_heads(g, &q, e.heads, d);
        let k = split_heads(g, &k, e.heads, d);
        let v = split_heads(g, &v, e.heads, d);
        let ctx = attend(g, &q, &k, &v, bias, h, d);
        let out = linear(g, &ctx, &format!("{p}.self_attn.out_proj"), h, h, true)?;
        x = g.node("Add", "attn_residual", &[&x, &out], vec![]);
        let n = layer_norm(g, &x, &format!("{p}.layer_norm2"), h, e.eps, true)?;
        let y = mlp(g, &n, &format!("{p}.mlp"), h, e.intermediate, e.act)?;
        x = g.node("Add", "mlp_residual", &[&x, &y], vec![]);
    }
    Ok(x)
}

/// `fc2(act(fc1(x)))`.
pub(crate) fn mlp(
    g: &mut Graph<'_>,
    x: &str,
    prefix: &str,
    h: usize,
    i: usize,
    act: Act,
) -> Result<String, GraphError> {
    let y = linear(g, x, &format!("{prefix}.fc1"), h, i, true)?;
    let y = activation(g, &y, act);
    linear(g, &y, &format!("{prefix}.fc2"), i, h, true)
}

/// Scaled (`1/√d`) dot-product attention of `[b, heads, q, d]` queries on `[b, heads, k, d]` keys and values
/// (broadcast over the batch where one side has 1), with an optional additive bias; returns `[b, q, heads·d]`.
pub(crate) fn attend(g: &mut Graph<'_>, q: &str, k: &str, v: &str, bias: Option<&str>, h: usize, d: usize) -> String {
    let kt = g.node("Transpose", "k_t", &[k], vec![attr_ints("perm", &[0, 1, 3, 2])]);
    let scores = g.node("MatMul", "scores", &[q, &kt], vec![]);
    let scale = g.scalar(1.0 / (d as f32).sqrt());
    let mut scores = g.node("Mul", "scores_scaled", &[&scores, &scale], vec![]);
    if let Some(b) = bias {
        scores = g.node("Add", "scores_masked", &[&scores, b], vec![]);
    }
    let probs = g.node("Softmax", "probs", &[&scores], vec![attr_int("axis", -1)]);
    let ctx = g.node("MatMul", "context", &[&probs, v], vec![]);
    let ctx = g.node("Transpose", "context_t", &[&ctx], vec![attr_ints("perm", &[0, 2, 1, 3])]);
    let merge = g.ints("shape_merge", &[0, 0, h as i64]);
    g.node("Reshape", "context_merged", &[&ctx, &merge], vec![])
}

fn activation(g: &mut Graph<'_>, x: &str, act: Act) -> String {
    match act {
        Act::Gelu => gelu(g, x),
        Act::QuickGelu => {
            let a = g.scalar(1.702);
            let ax = g.node("Mul", "quick_gelu_scaled", &[x, &a], vec![]);
            let s = g.node("Sigmoid", "quick_gelu_sigmoid", &[&ax], vec![]);
            g.node("Mul", "quick_gelu", &[x, &s], vec![])
        }
        Act::GeluTanh => {
            // 0.5·x · (1 + tanh(√(2/π) · (x + 0.044715·x³))), in the node order of ONNX Runtime's
            // FastGeluFusion (its second formula: `Pow(x, 3)` first), which turns it into one `FastGelu`.
            let three = g.scalar(3.0);
            let c = g.scalar(0.044_715);
            let k = g.scalar((2.0 / std::f64::consts::PI).sqrt() as f32);
            let one = g.scalar(1.0);
            let half = g.scalar(0.5);
            let x3 = g.node("Pow", "gelu_x3", &[x, &three], vec![]);
            let cx3 = g.node("Mul", "gelu_cx3", &[&x3, &c], vec![]);
            let inner = g.node("Add", "gelu_inner", &[x, &cx3], vec![]);
            let inner = g.node("Mul", "gelu_scaled", &[&inner, &k], vec![]);
            let t = g.node("Tanh", "gelu_tanh", &[&inner], vec![]);
            let t = g.node("Add", "gelu_tanh_1", &[&t, &one], vec![]);
            let hx = g.node("Mul", "gelu_half_x", &[x, &half], vec![]);
            g.node("Mul", "gelu_tanh_out", &[&hx, &t], vec![])
        }
    }
}

/// `Conv` of `pixel_values` into `[batch, patches, hidden]` patch embeddings (`{prefix}.weight`
/// `[hidden, channels, patch, patch]`, `{prefix}.bias` when `bias`).
pub(crate) fn patch_embeddings(
    g: &mut Graph<'_>,
    v: &VisionTower,
    prefix: &str,
    bias: bool,
) -> Result<String, GraphError> {
    let h = v.enc.hidden;
    let p = v.patch;
    let w = g.weight(&format!("{prefix}.weight"), &[h, v.channels, p, p])?;
    let mut inputs = vec!["pixel_values".to_string(), w];
    if bias {
        inputs.push(g.weight(&format!("{prefix}.bias"), &[h])?);
    }
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let pi = p as i64;
    let conv = g.node(
        "Conv",
        "patch_conv",
        &refs,
        vec![attr_ints("kernel_shape", &[pi, pi]), attr_ints("strides", &[pi, pi])],
    );
    let flat = g.ints("shape_patches", &[0, h as i64, -1]);
    let flat = g.node("Reshape", "patches_flat", &[&conv, &flat], vec![]);
    Ok(g.node("Transpose", "patches", &[&flat], vec![attr_ints("perm", &[0, 2, 1])]))
}

/// Token embeddings plus the position table's first `seq` rows: `[batch, seq, hidden]`.
pub(crate) fn text_embeddings(g: &mut Graph<'_>, t: &TextTower) -> Result<String, GraphError> {
    let h = t.enc.hidden;
    let table = g.weight("text_model.embeddings.token_embedding.weight", &[t.vocab, h])?;
    let tokens = g.node("Gather", "token_embed", &[&table, "input_ids"], vec![]);
    let positions = crate::layers::positions(g);
    let pos_table = g.weight("text_model.embeddings.position_embedding.weight", &[t.max_positions, h])?;
    let pos = g.node("Gather", "pos_embed", &[&pos_table, &positions], vec![]);
    Ok(g.node("Add", "text_embed", &[&tokens, &pos], vec![]))
}

/// `x[:, index, :]` for a constant index (negative from the end): `[batch, hidden]`.
pub(crate) fn token_at(g: &mut Graph<'_>, x: &str, index: i64) -> String {
    let i = g.scalar_i64(index);
    g.node("Gather", "token", &[x, &i], vec![attr_int("axis", 1)])
}

/// `x[b, index[b], :]` for a per-row `index` `[batch]` (int64): `[batch, hidden]`.
pub(crate) fn token_per_row(g: &mut Graph<'_>, x: &str, index: &str, h: usize) -> String {
    let i3 = g.unsqueeze(index, &[1, 2], "row_index");
    let shape = g.ints("shape_row_index", &[1, 1, h as i64]);
    let i3 = g.node("Expand", "row_index_h", &[&i3, &shape], vec![]);
    let picked = g.node("GatherElements", "row_token", &[x, &i3], vec![attr_int("axis", 1)]);
    let flat = g.ints("shape_rows", &[-1, h as i64]);
    g.node("Reshape", "row_token_flat", &[&picked, &flat], vec![])
}
