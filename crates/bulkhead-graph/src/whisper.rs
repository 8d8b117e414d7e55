//! Whisper (`WhisperForConditionalGeneration`, every size, multilingual and `.en`) as three ONNX graphs, so that a
//! decoding step costs one token:
//!
//! * **encoder**: `input_features` float32 `[batch, num_mel_bins, 2 · max_source_positions]` →
//!   `last_hidden_state` `[batch, max_source_positions, d_model]`. Two convolutions (kernel 3, padding 1, the second
//!   with stride 2), each followed by the exact GELU, plus the stored positions `embed_positions`, then pre-norm
//!   layers (self-attention, `fc1` → GELU → `fc2`) and a final layer norm;
//! * **cross-kv**: `encoder_hidden_states` `[batch, frames, d_model]` → `cross_key.{l}`, `cross_value.{l}`
//!   `[batch, heads, frames, head_dim]` for every decoder layer: the cross-attention keys and values, computed once
//!   per audio instead of once per token;
//! * **decoder**: `input_ids` int64 `[batch, sequence]`, `past_key.{l}` / `past_value.{l}` `[batch, heads, past,
//!   head_dim]` (`past` may be 0) and the cross keys and values → `logits` `[batch, vocab]` of the last position and
//!   `present_key.{l}` / `present_value.{l}` `[batch, heads, past + sequence, head_dim]`. Token positions start at
//!   `past` (the learned `embed_positions` of the decoder); the self-attention is causal over past and new tokens;
//!   the logits are the final-normed state times the token embeddings (the tied `proj_out`, or `proj_out.weight`
//!   when the checkpoint unties it).
//!
//! As in transformers' `modeling_whisper.py`: queries are multiplied by `head_dim^-0.5` before `Q·Kᵀ`, `k_proj` has
//! no bias, layer norms use ε = 1e-5, and `scale_embedding` is read by no computation.
//!
//! Reference: transformers' `models/whisper/modeling_whisper.py`.

use std::path::{Path, PathBuf};

use bulkhead_core::ModelFiles;

use crate::config::Cfg;
use crate::graph::{attr_int, attr_ints, Dim, Graph, Io, Storage, FLOAT, INT64};
use crate::layers::{gelu, layer_norm, linear, split_heads, MASKED};
use crate::weights::Weights;
use crate::{BuildOptions, BuiltGraph, GraphError, ShapeMode};

/// Version of the Whisper graphs; part of their cache keys, bumped whenever what they compute or their names change.
pub const WHISPER_GRAPHS_VERSION: &str = "whisper-1";

/// Tensors every Whisper checkpoint has (`model.` prefixed in `WhisperForConditionalGeneration`).
const ANCHORS: &[&str] = &["encoder.conv1.weight"];

/// Layer norm epsilon of every Whisper norm (`nn.LayerNorm`'s default).
const EPS: f32 = 1e-5;

/// The architectures this module builds.
pub const WHISPER_ARCHITECTURES: &[&str] = &["WhisperForConditionalGeneration", "WhisperModel"];

/// The hyper-parameters of a Whisper checkpoint (config.json).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhisperConfig {
    /// `d_model`.
    pub d_model: usize,
    /// `encoder_layers`.
    pub encoder_layers: usize,
    /// `encoder_attention_heads`.
    pub encoder_heads: usize,
    /// `encoder_ffn_dim`.
    pub encoder_ffn: usize,
    /// `decoder_layers`.
    pub decoder_layers: usize,
    /// `decoder_attention_heads`.
    pub decoder_heads: usize,
    /// `decoder_ffn_dim`.
    pub decoder_ffn: usize,
    /// `num_mel_bins`.
    pub mel_bins: usize,
    /// `max_source_positions`: encoder positions (1500 for 30 s of audio); the encoder takes twice as many frames.
    pub max_source_positions: usize,
    /// `max_target_positions`: the longest token sequence, prompt and prefix included.
    pub max_target_positions: usize,
    /// `vocab_size`.
    pub vocab: usize,
    /// Whether the logits use `proj_out.weight` instead of the token embeddings (`tie_word_embeddings: false`).
    pub untied_output: bool,
}

impl WhisperConfig {
    /// Parses config.json (its path, for errors, and its text); a missing or bad field is an error naming the file
    /// and the field.
    pub fn parse(path: &Path, text: &str) -> Result<WhisperConfig, GraphError> {
        let c = Cfg::parse(path, text)?;
        Self::from_cfg(&c)
    }

    fn from_cfg(c: &Cfg) -> Result<WhisperConfig, GraphError> {
        let d_model = c.usize("d_model")?;
        let encoder_heads = c.usize("encoder_attention_heads")?;
        let decoder_heads = c.usize("decoder_attention_heads")?;
        c.head_size(d_model, encoder_heads).map_err(|_| {
            c.err(format!("d_model {d_model} is not a multiple of encoder_attention_heads {encoder_heads}"))
        })?;
        c.head_size(d_model, decoder_heads).map_err(|_| {
            c.err(format!("d_model {d_model} is not a multiple of decoder_attention_heads {decoder_heads}"))
        })?;
        let act = c.str_or("activation_function", "gelu");
        if act != "gelu" {
            return Err(c.unsupported(format!("activation_function `{act}` is not supported (gelu)")));
        }
        Ok(WhisperConfig {
            d_model,
            encoder_layers: c.usize("encoder_layers")?,
            encoder_heads,
            encoder_ffn: c.usize("encoder_ffn_dim")?,
            decoder_layers: c.usize("decoder_layers")?,
            decoder_heads,
            decoder_ffn: c.usize("decoder_ffn_dim")?,
            mel_bins: c.usize("num_mel_bins")?,
            max_source_positions: c.usize("max_source_positions")?,
            max_target_positions: c.usize("max_target_positions")?,
            vocab: c.usize("vocab_size")?,
            untied_output: !c.bool_or("tie_word_embeddings", true)?,
        })
    }

    /// Mel frames the encoder takes: `2 · max_source_positions` (3000 for 30 s).
    pub fn frames(&self) -> usize {
        2 * self.max_source_positions
    }

    /// Features per decoder head.
    pub fn decoder_head_dim(&self) -> usize {
        self.d_model / self.decoder_heads
    }
}

/// Which of the three graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhisperGraph {
    /// Mel features to encoder states.
    Encoder,
    /// Encoder states to the cross-attention keys and values of every decoder layer.
    CrossKv,
    /// One decoding step with key/value caches.
    Decoder,
}

impl WhisperGraph {
    /// The three graphs.
    pub const ALL: [WhisperGraph; 3] = [WhisperGraph::Encoder, WhisperGraph::CrossKv, WhisperGraph::Decoder];

    /// The graph's name (`encoder`, `cross-kv`, `decoder`).
    pub fn name(self) -> &'static str {
        match self {
            WhisperGraph::Encoder => "encoder",
            WhisperGraph::CrossKv => "cross-kv",
            WhisperGraph::Decoder => "decoder",
        }
    }
}

/// The built graphs of a Whisper checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct WhisperGraphs {
    /// [`WhisperGraph::Encoder`].
    pub encoder: BuiltGraph,
    /// [`WhisperGraph::CrossKv`].
    pub cross_kv: BuiltGraph,
    /// [`WhisperGraph::Decoder`].
    pub decoder: BuiltGraph,
    /// The parsed config.json.
    pub config: WhisperConfig,
}

/// The parsed config and mapped weights of a Whisper folder.
struct Opened {
    config: WhisperConfig,
    weights: Weights,
}

/// Whether `model` is a Whisper checkpoint (`architectures[0]`, or `model_type` `whisper`).
pub fn is_whisper(model: &ModelFiles) -> bool {
    match &model.architecture {
        Some(a) => WHISPER_ARCHITECTURES.contains(&a.as_str()),
        None => model.model_type.as_deref() == Some("whisper"),
    }
}

/// Reads config.json of `model`: it must describe a Whisper checkpoint.
pub fn read_config(model: &ModelFiles) -> Result<WhisperConfig, GraphError> {
    let config_path =
        model.config.clone().ok_or(GraphError::MissingFile { model: model.source.clone(), file: "config.json" })?;
    let text =
        std::fs::read_to_string(&config_path).map_err(|e| GraphError::Io { path: config_path.clone(), source: e })?;
    let c = Cfg::parse(&config_path, &text)?;
    let architecture = c.get("architectures").and_then(|a| a.get(0)).and_then(|a| a.as_str());
    let whisper = match architecture {
        Some(a) => WHISPER_ARCHITECTURES.contains(&a),
        None => c.str_or("model_type", "") == "whisper",
    };
    if !whisper {
        return Err(c.err(format!(
            "not a Whisper checkpoint (architectures[0] {}, model_type {}); expected one of {}",
            architecture.unwrap_or("(none)"),
            c.str_or("model_type", "(none)"),
            WHISPER_ARCHITECTURES.join(", ")
        )));
    }
    WhisperConfig::from_cfg(&c)
}

fn open(model: &ModelFiles, opts: &BuildOptions) -> Result<Opened, GraphError> {
    crate::check_options(opts)?;
    if opts.shape != ShapeMode::Dynamic {
        return Err(GraphError::Options(
            "the Whisper graphs take a dynamic batch and sequence; static shapes are not supported".into(),
        ));
    }
    let config = read_config(model)?;
    if model.safetensors_shards.is_empty() {
        return Err(GraphError::MissingFile { model: model.source.clone(), file: "model.safetensors" });
    }
    let weights = Weights::open(&model.safetensors_shards, model.safetensors_index.as_deref(), ANCHORS)?;
    if let Some(tok) = &model.tokenizer {
        if let Ok(ids) = bulkhead_core::tokenizer_vocab_size(tok) {
            if ids > config.vocab {
                return Err(GraphError::Weights {
                    path: tok.clone(),
                    reason: format!(
                        "the tokenizer has {ids} token ids but config.json's vocab_size is {}; the tokenizer does not \
                         belong to these weights",
                        config.vocab
                    ),
                });
            }
        }
    }
    Ok(Opened { config, weights })
}

/// Builds (or finds in `cache_dir`) the three graphs of the Whisper checkpoint `model`, each cached like
/// [`build_cached`](crate::build_cached) (weights digest, builder and graph versions, opset, which graph).
pub fn build_whisper_cached(
    model: &ModelFiles,
    opts: &BuildOptions,
    cache_dir: &Path,
) -> Result<WhisperGraphs, GraphError> {
    let config = read_config(model)?;
    let mut built = Vec::with_capacity(WhisperGraph::ALL.len());
    for which in WhisperGraph::ALL {
        built.push(crate::cache::build_entry(model, opts, &tag(which), cache_dir, || {
            let opened = open(model, opts)?;
            Ok(move |storage: &Storage, path: &Path| write(&opened, opts, which, storage, path))
        })?);
    }
    let [encoder, cross_kv, decoder]: [BuiltGraph; 3] = built.try_into().expect("one entry per graph");
    Ok(WhisperGraphs { encoder, cross_kv, decoder, config })
}

/// Writes the three graphs as self-contained files `encoder.onnx`, `cross-kv.onnx` and `decoder.onnx` in `dir`
/// (for `bulkhead export` and inspection); returns their paths.
pub fn export_whisper(model: &ModelFiles, opts: &BuildOptions, dir: &Path) -> Result<Vec<PathBuf>, GraphError> {
    let o = open(model, opts)?;
    std::fs::create_dir_all(dir).map_err(|e| GraphError::Io { path: dir.to_path_buf(), source: e })?;
    let mut paths = vec![];
    for which in WhisperGraph::ALL {
        let out = dir.join(format!("{}.onnx", which.name()));
        let tmp = dir.join(format!(".{}.onnx.tmp-{}", which.name(), std::process::id()));
        let result = write(&o, opts, which, &Storage::Embedded, &tmp)
            .and_then(|()| std::fs::rename(&tmp, &out).map_err(|e| GraphError::Io { path: out.clone(), source: e }));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        paths.push(out);
    }
    Ok(paths)
}

fn tag(which: WhisperGraph) -> Vec<u8> {
    format!("{WHISPER_GRAPHS_VERSION}\0{}", which.name()).into_bytes()
}

fn write(
    o: &Opened,
    opts: &BuildOptions,
    which: WhisperGraph,
    storage: &Storage,
    path: &Path,
) -> Result<(), GraphError> {
    use std::io::Write;
    let mut g = Graph::new(&o.weights, opts.opset, storage);
    let (inputs, outputs) = match which {
        WhisperGraph::Encoder => encoder(&mut g, &o.config)?,
        WhisperGraph::CrossKv => cross_kv(&mut g, &o.config)?,
        WhisperGraph::Decoder => decoder(&mut g, &o.config)?,
    };
    let name = format!("whisper-{}", which.name());
    let model = g.finish_io(&name, &inputs, &outputs, &format!("{}+{WHISPER_GRAPHS_VERSION}", crate::BUILDER_VERSION));
    let io = |e| GraphError::Io { path: path.to_path_buf(), source: e };
    let file = std::fs::File::create(path).map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    model.write_to(&mut w).map_err(io)?;
    w.flush().map_err(io)?;
    tracing::debug!(graph = which.name(), out = %path.display(), "Whisper graph written");
    Ok(())
}

type Signature = (Vec<Io>, Vec<Io>);

/// `head_dim^-0.5`, the factor transformers multiplies the queries by.
fn scaling(head_dim: usize) -> f32 {
    (head_dim as f64).powf(-0.5) as f32
}

/// `[batch, seq, n·d]` queries scaled, split into heads.
fn query(g: &mut Graph<'_>, x: &str, prefix: &str, d_model: usize, heads: usize) -> Result<String, GraphError> {
    let d = d_model / heads;
    let q = linear(g, x, &format!("{prefix}.q_proj"), d_model, d_model, true)?;
    let s = g.scalar(scaling(d));
    let q = g.node("Mul", "q_scaled", &[&q, &s], vec![]);
    Ok(split_heads(g, &q, heads, d))
}

/// Keys (no bias) and values of `x`, split into heads.
fn keys_values(
    g: &mut Graph<'_>,
    x: &str,
    prefix: &str,
    d_model: usize,
    heads: usize,
) -> Result<(String, String), GraphError> {
    let d = d_model / heads;
    let k = linear(g, x, &format!("{prefix}.k_proj"), d_model, d_model, false)?;
    let v = linear(g, x, &format!("{prefix}.v_proj"), d_model, d_model, true)?;
    Ok((split_heads(g, &k, heads, d), split_heads(g, &v, heads, d)))
}

/// `softmax(q·kᵀ (+ bias))·v` on heads (queries already scaled), merged back to `[batch, seq, d_model]`, then
/// `out_proj`.
fn attend(
    g: &mut Graph<'_>,
    q: &str,
    k: &str,
    v: &str,
    bias: Option<&str>,
    prefix: &str,
    d_model: usize,
) -> Result<String, GraphError> {
    let kt = g.node("Transpose", "k_t", &[k], vec![attr_ints("perm", &[0, 1, 3, 2])]);
    let mut scores = g.node("MatMul", "scores", &[q, &kt], vec![]);
    if let Some(b) = bias {
        scores = g.node("Add", "scores_masked", &[&scores, b], vec![]);
    }
    let probs = g.node("Softmax", "probs", &[&scores], vec![attr_int("axis", -1)]);
    let ctx = g.node("MatMul", "context", &[&probs, v], vec![]);
    let ctx = g.node("Transpose", "context_t", &[&ctx], vec![attr_ints("perm", &[0, 2, 1, 3])]);
    let merge = g.ints("shape_merge", &[0, 0, d_model as i64]);
    let ctx = g.node("Reshape", "context_merged", &[&ctx, &merge], vec![]);
    linear(g, &ctx, &format!("{prefix}.out_proj"), d_model, d_model, true)
}

/// `x + fc2(gelu(fc1(final_layer_norm(x))))`.
fn mlp(g: &mut Graph<'_>, x: &str, p: &str, d_model: usize, ffn: usize) -> Result<String, GraphError> {
    let h = layer_norm(g, x, &format!("{p}.final_layer_norm"), d_model, EPS, true)?;
    let h = linear(g, &h, &format!("{p}.fc1"), d_model, ffn, true)?;
    let h = gelu(g, &h);
    let h = linear(g, &h, &format!("{p}.fc2"), ffn, d_model, true)?;
    Ok(g.node("Add", "mlp_residual", &[x, &h], vec![]))
}

/// `Conv1d` with padding 1 and the given stride, then the exact GELU.
fn conv(g: &mut Graph<'_>, x: &str, name: &str, cin: usize, cout: usize, stride: i64) -> Result<String, GraphError> {
    let w = g.weight(&format!("encoder.{name}.weight"), &[cout, cin, 3])?;
    let b = g.weight(&format!("encoder.{name}.bias"), &[cout])?;
    let attrs = vec![
        attr_ints("kernel_shape", &[3]),
        attr_ints("pads", &[1, 1]),
        attr_ints("strides", &[stride]),
        attr_ints("dilations", &[1]),
        attr_int("group", 1),
    ];
    let y = g.node("Conv", name, &[x, &w, &b], attrs);
    Ok(gelu(g, &y))
}

fn encoder(g: &mut Graph<'_>, c: &WhisperConfig) -> Result<Signature, GraphError> {
    let h = c.d_model;
    let x = conv(g, "input_features", "conv1", c.mel_bins, h, 1)?;
    let x = conv(g, &x, "conv2", h, h, 2)?;
    let x = g.node("Transpose", "frames_first", &[&x], vec![attr_ints("perm", &[0, 2, 1])]);
    let pos = g.weight("encoder.embed_positions.weight", &[c.max_source_positions, h])?;
    let mut x = g.node("Add", "with_positions", &[&x, &pos], vec![]);
    for l in 0..c.encoder_layers {
        let p = format!("encoder.layers.{l}");
        let a = format!("{p}.self_attn");
        let normed = layer_norm(g, &x, &format!("{p}.self_attn_layer_norm"), h, EPS, true)?;
        let q = query(g, &normed, &a, h, c.encoder_heads)?;
        let (k, v) = keys_values(g, &normed, &a, h, c.encoder_heads)?;
        let out = attend(g, &q, &k, &v, None, &a, h)?;
        x = g.node("Add", "attention_residual", &[&x, &out], vec![]);
        x = mlp(g, &x, &p, h, c.encoder_ffn)?;
    }
    let out = layer_norm(g, &x, "encoder.layer_norm", h, EPS, true)?;
    g.node_to("Identity", &[&out], "last_hidden_state", vec![]);
    let inputs = vec![Io::new(
        "input_features",
        FLOAT,
        vec![Dim::Named("batch"), Dim::Fixed(c.mel_bins), Dim::Fixed(c.frames())],
    )];
    let outputs = vec![Io::new(
        "last_hidden_state",
        FLOAT,
        vec![Dim::Named("batch"), Dim::Fixed(c.max_source_positions), Dim::Fixed(h)],
    )];
    Ok((inputs, outputs))
}

/// The four-dimensional cache layout `[batch, heads, length, head_dim]`.
fn kv_dims(c: &WhisperConfig, length: &'static str) -> Vec<Dim> {
    vec![Dim::Named("batch"), Dim::Fixed(c.decoder_heads), Dim::Named(length), Dim::Fixed(c.decoder_head_dim())]
}

fn cross_kv(g: &mut Graph<'_>, c: &WhisperConfig) -> Result<Signature, GraphError> {
    let mut outputs = vec![];
    for l in 0..c.decoder_layers {
        let a = format!("decoder.layers.{l}.encoder_attn");
        let (k, v) = keys_values(g, "encoder_hidden_states", &a, c.d_model, c.decoder_heads)?;
        for (value, name) in [(k, format!("cross_key.{l}")), (v, format!("cross_value.{l}"))] {
            g.node_to("Identity", &[&value], &name, vec![]);
            outputs.push(Io::new(&name, FLOAT, kv_dims(c, "frames")));
        }
    }
    let inputs = vec![Io::new(
        "encoder_hidden_states",
        FLOAT,
        vec![Dim::Named("batch"), Dim::Named("frames"), Dim::Fixed(c.d_model)],
    )];
    Ok((inputs, outputs))
}

/// The additive causal bias `[seq, past + seq]`: `MASKED` where key `j` is after query `past + i`.
fn causal_bias(g: &mut Graph<'_>, past: &str, total: &str) -> String {
    let zero = g.scalar_i64(0);
    let one = g.scalar_i64(1);
    let keys = g.node("Range", "key_positions", &[&zero, total, &one], vec![]);
    let queries = g.node("Range", "query_positions", &[past, total, &one], vec![]);
    let rows = g.unsqueeze(&queries, &[1], "query_rows");
    let cols = g.unsqueeze(&keys, &[0], "key_cols");
    let masked = g.node("Greater", "causal_masked", &[&cols, &rows], vec![]);
    let f = g.node("Cast", "causal_float", &[&masked], vec![attr_int("to", FLOAT)]);
    let big = g.scalar(MASKED);
    g.node("Mul", "causal_bias", &[&f, &big], vec![])
}

fn decoder(g: &mut Graph<'_>, c: &WhisperConfig) -> Result<Signature, GraphError> {
    let h = c.d_model;
    let heads = c.decoder_heads;
    // Positions past..past+seq: the past length is the third dimension of the first layer's cached keys.
    let ids_shape = g.node("Shape", "ids_shape", &["input_ids"], vec![]);
    let one = g.scalar_i64(1);
    let seq = g.node("Gather", "seq_len", &[&ids_shape, &one], vec![attr_int("axis", 0)]);
    let past_shape = g.node("Shape", "past_shape", &["past_key.0"], vec![]);
    let two = g.scalar_i64(2);
    let past = g.node("Gather", "past_len", &[&past_shape, &two], vec![attr_int("axis", 0)]);
    let total = g.node("Add", "total_len", &[&past, &seq], vec![]);
    let positions = g.node("Range", "positions", &[&past, &total, &one], vec![]);

    let table = g.weight("decoder.embed_tokens.weight", &[c.vocab, h])?;
    let tokens = g.node("Gather", "embed", &[&table, "input_ids"], vec![]);
    let pos_table = g.weight("decoder.embed_positions.weight", &[c.max_target_positions, h])?;
    let pos = g.node("Gather", "positions_embed", &[&pos_table, &positions], vec![]);
    let mut x = g.node("Add", "with_positions", &[&tokens, &pos], vec![]);
    let bias = causal_bias(g, &past, &total);

    let mut inputs = vec![Io::new("input_ids", INT64, vec![Dim::Named("batch"), Dim::Named("sequence")])];
    let mut outputs = vec![Io::new("logits", FLOAT, vec![Dim::Named("batch"), Dim::Fixed(c.vocab)])];
    for l in 0..c.decoder_layers {
        let p = format!("decoder.layers.{l}");
        let a = format!("{p}.self_attn");
        let normed = layer_norm(g, &x, &format!("{p}.self_attn_layer_norm"), h, EPS, true)?;
        let q = query(g, &normed, &a, h, heads)?;
        let (k, v) = keys_values(g, &normed, &a, h, heads)?;
        let (past_k, past_v) = (format!("past_key.{l}"), format!("past_value.{l}"));
        let (present_k, present_v) = (format!("present_key.{l}"), format!("present_value.{l}"));
        g.node_to("Concat", &[&past_k, &k], &present_k, vec![attr_int("axis", 2)]);
        g.node_to("Concat", &[&past_v, &v], &present_v, vec![attr_int("axis", 2)]);
        let out = attend(g, &q, &present_k, &present_v, Some(&bias), &a, h)?;
        x = g.node("Add", "attention_residual", &[&x, &out], vec![]);

        let e = format!("{p}.encoder_attn");
        let normed = layer_norm(g, &x, &format!("{p}.encoder_attn_layer_norm"), h, EPS, true)?;
        let q = query(g, &normed, &e, h, heads)?;
        let (cross_k, cross_v) = (format!("cross_key.{l}"), format!("cross_value.{l}"));
        let out = attend(g, &q, &cross_k, &cross_v, None, &e, h)?;
        x = g.node("Add", "cross_attention_residual", &[&x, &out], vec![]);
        x = mlp(g, &x, &p, h, c.decoder_ffn)?;

        for name in [past_k, past_v] {
            inputs.push(Io::new(&name, FLOAT, kv_dims(c, "past_sequence")));
        }
        for name in [present_k, present_v] {
            outputs.push(Io::new(&name, FLOAT, kv_dims(c, "total_sequence")));
        }
    }
    for l in 0..c.decoder_layers {
        for name in [format!("cross_key.{l}"), format!("cross_value.{l}")] {
            inputs.push(Io::new(&name, FLOAT, kv_dims(c, "frames")));
        }
    }
    let x = layer_norm(g, &x, "decoder.layer_norm", h, EPS, true)?;
    // Only the last position's logits: a step needs no other, and the vocabulary projection is the widest matmul.
    let last = g.scalar_i64(-1);
    let last = g.node("Gather", "last_position", &[&x, &last], vec![attr_int("axis", 1)]);
    let out_weight = if c.untied_output { g.weight_exact("proj_out.weight", &[c.vocab, h])? } else { table };
    let wt = g.node("Transpose", "proj_out_t", &[&out_weight], vec![attr_ints("perm", &[1, 0])]);
    g.node_to("MatMul", &[&last, &wt], "logits", vec![]);
    Ok((inputs, outputs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Result<WhisperConfig, GraphError> {
        WhisperConfig::parse(Path::new("/m/config.json"), text)
    }

    const TINY: &str = r#"{"d_model": 384, "encoder_layers": 4, "encoder_attention_heads": 6, "encoder_ffn_dim": 1536,
        "decoder_layers": 4, "decoder_attention_heads": 6, "decoder_ffn_dim": 1536, "num_mel_bins": 80,
        "max_source_positions": 1500, "max_target_positions": 448, "vocab_size": 51865}"#;

    #[test]
    fn parses_whisper_tiny() {
        let c = config(TINY).unwrap();
        assert_eq!((c.frames(), c.decoder_head_dim(), c.untied_output), (3000, 64, false));
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let e = config(&TINY.replace("\"d_model\": 384,", "")).unwrap_err().to_string();
        assert!(e.contains("/m/config.json") && e.contains("`d_model` is missing"), "{e}");
        let e = config(&TINY.replace("\"decoder_attention_heads\": 6", "\"decoder_attention_heads\": 5"));
        let e = e.unwrap_err().to_string();
        assert!(e.contains("decoder_attention_heads 5"), "{e}");
        let e = config(&TINY.replace("{", "{\"activation_function\": \"relu\",")).unwrap_err().to_string();
        assert!(e.contains("activation_function `relu`"), "{e}");
    }
}
