//! Qwen3-ASR (`Qwen3ASRForConditionalGeneration` as the `qwen-asr` package defines it) as two ONNX graphs, so that
//! a decoding step costs one token:
//!
//! * **audio-encoder**: `input_features` float32 `[chunks, num_mel_bins, chunk_frames]` (the clip's log-mel
//!   features cut into 100-frame chunks, the last one zero-padded: [`AudioLayout`]) and `window_mask` int64
//!   `[windows, window_tokens]` (1 for an audio token, 0 for the padding of the last window) → `audio_embeds`
//!   `[tokens, output_dim]`. Per chunk, three Conv2d stages (kernel 3, stride 2, padding 1, each followed by the
//!   exact GELU) over (frequency, time), `conv_out` on the flattened channels × frequencies, and the sinusoidal
//!   positions counted from 0 in every chunk; the chunks' valid tokens end to end, regrouped into attention windows
//!   of `n_window_infer` frames; pre-norm encoder layers attending within their window; `ln_post`, `proj1`, GELU,
//!   `proj2`. The windows are independent, so a long clip may be encoded a few whole windows at a time;
//! * **decoder**, for the prefill and for every step: `input_ids` int64 `[1, sequence]` (the prompt, a stretch of
//!   it, or the last generated token), `audio_embeds` `[rows, hidden]` (the rows of the `<|audio_pad|>` tokens among
//!   `input_ids`, in order; none at the steps) and `past_key.{l}` / `past_value.{l}` `[1,
//!   kv_heads, past, head_dim]` (`past` may be 0) → `logits` `[1, vocab]` of the last position and `present_key.{l}`
//!   / `present_value.{l}` `[1, kv_heads, past + sequence, head_dim]`. The token embeddings get the audio
//!   embeddings in place of the `<|audio_pad|>` tokens, in order (the reference's `masked_scatter`). One graph for
//!   the prefill and the steps keeps one copy of the decoder's weights in memory; a long prompt is fed in stretches,
//!   so that no attention matrix spans the whole prompt.
//!
//! The decoder is Qwen3: RMSNorm, per-head q/k RMSNorm before the rotary embedding, grouped-query attention under a
//! causal mask, SwiGLU, a final norm, the logits from `lm_head.weight` (or the token embeddings when the checkpoint
//! ties them). Its multimodal rotary embedding (MRoPE) takes the same position for its three sections for every
//! token of a speech prompt (the reference's `get_rope_index` on an attention mask of ones), which is the plain
//! rotary embedding at positions `0, 1, 2...`.
//!
//! The encoder's attention windows are those of `cu_seqlens`: the model as trained, and what the reference computes
//! with flash-attention and in its vLLM backend. The reference's eager and SDPA paths (what runs on a CPU) attend
//! across windows for clips longer than one window (`n_window_infer` frames, 8 s for the released models).
//!
//! Reference: `qwen_asr/core/transformers_backend/modeling_qwen3_asr.py` of the `qwen-asr` package.

mod config;

use std::path::{Path, PathBuf};

use bulkhead_core::ModelFiles;

pub use config::{is_qwen3_asr, read_config, AudioLayout, Qwen3AsrConfig, QWEN3_ASR_ARCHITECTURES};

use crate::graph::{attr_int, attr_ints, Dim, Graph, Io, Storage, FLOAT, INT64};
use crate::layers::{
    apply_rotary, attention, gelu, inv_freq, layer_norm, linear, rms_norm, rotary_tables, silu, split_heads, Heads,
    MASKED,
};
use crate::weights::Weights;
use crate::{BuildOptions, BuiltGraph, GraphError, ShapeMode};

/// Version of the Qwen3-ASR graphs; part of their cache keys, bumped whenever what they compute or their names
/// change.
pub const QWEN3_ASR_GRAPHS_VERSION: &str = "qwen3-asr-4";

/// A tensor every checkpoint has (`thinker.` prefixed).
const ANCHORS: &[&str] = &["audio_tower.conv2d1.weight"];

/// `nn.LayerNorm`'s epsilon, every norm of the audio encoder.
const LN_EPS: f32 = 1e-5;

/// Which of the two graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qwen3AsrGraph {
    /// Chunked mel features to audio embeddings.
    AudioEncoder,
    /// Tokens (with audio embeddings in place of the audio tokens) after cached ones.
    Decoder,
}

impl Qwen3AsrGraph {
    /// The two graphs.
    pub const ALL: [Qwen3AsrGraph; 2] = [Qwen3AsrGraph::AudioEncoder, Qwen3AsrGraph::Decoder];

    /// The graph's name (`audio-encoder`, `decoder`).
    pub fn name(self) -> &'static str {
        match self {
            Qwen3AsrGraph::AudioEncoder => "audio-encoder",
            Qwen3AsrGraph::Decoder => "decoder",
        }
    }
}

/// The built graphs of a Qwen3-ASR checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen3AsrGraphs {
    /// [`Qwen3AsrGraph::AudioEncoder`].
    pub audio_encoder: BuiltGraph,
    /// [`Qwen3AsrGraph::Decoder`].
    pub decoder: BuiltGraph,
    /// The parsed config.json.
    pub config: Qwen3AsrConfig,
}

struct Opened {
    config: Qwen3AsrConfig,
    weights: Weights,
}

fn open(model: &ModelFiles, opts: &BuildOptions) -> Result<Opened, GraphError> {
    crate::check_options(opts)?;
    if opts.shape != ShapeMode::Dynamic {
        return Err(GraphError::Options(
            "the Qwen3-ASR graphs take dynamic chunks and sequences; static shapes are not supported".into(),
        ));
    }
    let config = read_config(model)?;
    if model.safetensors_shards.is_empty() {
        return Err(GraphError::MissingFile { model: model.source.clone(), file: "model.safetensors" });
    }
    let weights = Weights::open(&model.safetensors_shards, model.safetensors_index.as_deref(), ANCHORS)?;
    Ok(Opened { config, weights })
}

/// Builds (or finds in `cache_dir`) the two graphs of the Qwen3-ASR checkpoint `model`, each cached like
/// [`build_cached`](crate::build_cached) (weights digest, builder and graph versions, opset, which graph).
pub fn build_qwen3_asr_cached(
    model: &ModelFiles,
    opts: &BuildOptions,
    cache_dir: &Path,
) -> Result<Qwen3AsrGraphs, GraphError> {
    let config = read_config(model)?;
    let mut built = Vec::with_capacity(Qwen3AsrGraph::ALL.len());
    for which in Qwen3AsrGraph::ALL {
        built.push(crate::cache::build_entry(model, opts, &tag(which), cache_dir, || {
            let opened = open(model, opts)?;
            Ok(move |storage: &Storage, path: &Path| write(&opened, opts, which, storage, path))
        })?);
    }
    let [audio_encoder, decoder]: [BuiltGraph; 2] = built.try_into().expect("one entry per graph");
    Ok(Qwen3AsrGraphs { audio_encoder, decoder, config })
}

/// Writes the two graphs as self-contained files `audio-encoder.onnx` and `decoder.onnx` in `dir` (for `bulkhead export` and inspection); returns their paths.
pub fn export_qwen3_asr(model: &ModelFiles, opts: &BuildOptions, dir: &Path) -> Result<Vec<PathBuf>, GraphError> {
    let o = open(model, opts)?;
    std::fs::create_dir_all(dir).map_err(|e| GraphError::Io { path: dir.to_path_buf(), source: e })?;
    let mut paths = vec![];
    for which in Qwen3AsrGraph::ALL {
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

fn tag(which: Qwen3AsrGraph) -> Vec<u8> {
    format!("{QWEN3_ASR_GRAPHS_VERSION}\0{}", which.name()).into_bytes()
}

fn write(
    o: &Opened,
    opts: &BuildOptions,
    which: Qwen3AsrGraph,
    storage: &Storage,
    path: &Path,
) -> Result<(), GraphError> {
    use std::io::Write;
    let mut g = Graph::new(&o.weights, opts.opset, storage);
    let (inputs, outputs) = match which {
        Qwen3AsrGraph::AudioEncoder => audio_encoder(&mut g, &o.config)?,
        Qwen3AsrGraph::Decoder => decoder(&mut g, &o.config)?,
    };
    let name = format!("qwen3-asr-{}", which.name());
    let producer = format!("{}+{QWEN3_ASR_GRAPHS_VERSION}", crate::BUILDER_VERSION);
    let model = g.finish_io(&name, &inputs, &outputs, &producer);
    let io = |e| GraphError::Io { path: path.to_path_buf(), source: e };
    let file = std::fs::File::create(path).map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    model.write_to(&mut w).map_err(io)?;
    w.flush().map_err(io)?;
    tracing::debug!(graph = which.name(), out = %path.display(), "Qwen3-ASR graph written");
    Ok(())
}

type Signature = (Vec<Io>, Vec<Io>);

/// The reference's `SinusoidsPositionEmbedding`: `[length, channels]`, `sin` then `cos` of
/// `position · exp(-i · ln(10000) / (channels/2 - 1))`, computed in float32 as torch does.
fn sinusoids(length: usize, channels: usize) -> Vec<f32> {
    let half = channels / 2;
    let increment = (10000f64.ln() / (half as f64 - 1.0)) as f32;
    let inv: Vec<f32> = (0..half).map(|i| (-increment * i as f32).exp()).collect();
    let mut out = Vec::with_capacity(length * channels);
    for p in 0..length {
        let t: Vec<f32> = inv.iter().map(|f| p as f32 * f).collect();
        out.extend(t.iter().map(|x| x.sin()));
        out.extend(t.iter().map(|x| x.cos()));
    }
    out
}

/// `Conv2d(kernel 3, stride 2, padding 1)` then the exact GELU.
fn conv2d(g: &mut Graph<'_>, x: &str, name: &str, cin: usize, cout: usize) -> Result<String, GraphError> {
    let w = g.weight(&format!("audio_tower.{name}.weight"), &[cout, cin, 3, 3])?;
    let b = g.weight(&format!("audio_tower.{name}.bias"), &[cout])?;
    let attrs = vec![
        attr_ints("kernel_shape", &[3, 3]),
        attr_ints("pads", &[1, 1, 1, 1]),
        attr_ints("strides", &[2, 2]),
        attr_ints("dilations", &[1, 1]),
        attr_int("group", 1),
    ];
    let y = g.node("Conv", name, &[x, &w, &b], attrs);
    Ok(gelu(g, &y))
}

/// Dimension `axis` of `x`'s shape as a 1-element int64 tensor.
fn dim(g: &mut Graph<'_>, x: &str, axis: i64, hint: &str) -> String {
    let shape = g.node("Shape", &format!("{hint}_shape"), &[x], vec![]);
    g.slice(&shape, 0, axis, axis + 1, hint)
}

fn audio_encoder(g: &mut Graph<'_>, c: &Qwen3AsrConfig) -> Result<Signature, GraphError> {
    let (d, ch) = (c.d_model, c.conv_channels);
    let x = g.unsqueeze("input_features", &[1], "features_4d");
    let x = conv2d(g, &x, "conv2d1", 1, ch)?;
    let x = conv2d(g, &x, "conv2d2", ch, ch)?;
    let x = conv2d(g, &x, "conv2d3", ch, ch)?;
    // [chunks, channels, freq, time] → [chunks, time, channels · freq].
    let x = g.node("Transpose", "time_first", &[&x], vec![attr_ints("perm", &[0, 3, 1, 2])]);
    let flat = g.ints("shape_conv_flat", &[0, 0, (ch * c.conv_freq()) as i64]);
    let x = g.node("Reshape", "conv_flat", &[&x, &flat], vec![]);
    let x = linear(g, &x, "audio_tower.conv_out", ch * c.conv_freq(), d, false)?;
    let per_chunk = config_tokens_per_chunk(c);
    let table = g.const_f32("audio_positions", &[per_chunk as i64, d as i64], &sinusoids(per_chunk, d));
    let t = dim(g, &x, 1, "chunk_tokens");
    let zero = g.ints("zero_1", &[0]);
    let axis0 = g.ints("axis_0", &[0]);
    let pos = g.node("Slice", "positions", &[&table, &zero, &t, &axis0], vec![]);
    let x = g.node("Add", "with_positions", &[&x, &pos], vec![]);

    // The valid tokens are the first `tokens` rows of the chunks end to end; pad them to whole windows.
    let rows = g.ints("shape_rows", &[-1, d as i64]);
    let x = g.node("Reshape", "token_rows", &[&x, &rows], vec![]);
    let mask = g.node("Cast", "window_mask_float", &["window_mask"], vec![attr_int("to", FLOAT)]);
    let total = g.reduce_sum(&mask, &[0, 1], false, "tokens_float");
    let total = g.node("Cast", "tokens", &[&total], vec![attr_int("to", INT64)]);
    let one = g.ints("shape_one", &[1]);
    let total = g.node("Reshape", "tokens_1", &[&total, &one], vec![]);
    let x = g.node("Slice", "valid_tokens", &[&x, &zero, &total, &axis0], vec![]);
    let slots = g.node("Size", "window_slots", &["window_mask"], vec![]);
    let slots = g.node("Reshape", "window_slots_1", &[&slots, &one], vec![]);
    let pad = g.node("Sub", "window_pad", &[&slots, &total], vec![]);
    let pads = g.node("Concat", "pads", &[&zero, &zero, &pad, &zero], vec![attr_int("axis", 0)]);
    let x = g.node("Pad", "windows_padded", &[&x, &pads], vec![]);
    let mask_shape = g.node("Shape", "window_mask_shape", &["window_mask"], vec![]);
    let width = g.ints("width", &[d as i64]);
    let windows_shape = g.node("Concat", "windows_shape", &[&mask_shape, &width], vec![attr_int("axis", 0)]);
    let mut x = g.node("Reshape", "windows", &[&x, &windows_shape], vec![]);
    // Keys outside the window's tokens are masked: [windows, 1, 1, window_tokens].
    let m = g.unsqueeze(&mask, &[1, 2], "window_mask_4d");
    let one_f = g.scalar(1.0);
    let inv = g.node("Sub", "window_mask_inverted", &[&one_f, &m], vec![]);
    let big = g.scalar(MASKED);
    let bias = g.node("Mul", "window_bias", &[&inv, &big], vec![]);

    let heads = Heads::mha(c.encoder_heads, d / c.encoder_heads);
    for l in 0..c.encoder_layers {
        let p = format!("audio_tower.layers.{l}");
        let a = format!("{p}.self_attn");
        let normed = layer_norm(g, &x, &format!("{p}.self_attn_layer_norm"), d, LN_EPS, true)?;
        let q = linear(g, &normed, &format!("{a}.q_proj"), d, d, true)?;
        let k = linear(g, &normed, &format!("{a}.k_proj"), d, d, true)?;
        let v = linear(g, &normed, &format!("{a}.v_proj"), d, d, true)?;
        let (q, k, v) = (split_heads(g, &q, heads.heads, heads.d), split_heads(g, &k, heads.heads, heads.d), {
            split_heads(g, &v, heads.heads, heads.d)
        });
        let ctx = attention(g, &q, &k, &v, &bias, heads);
        let out = linear(g, &ctx, &format!("{a}.out_proj"), d, d, true)?;
        x = g.node("Add", "attention_residual", &[&x, &out], vec![]);
        let h = layer_norm(g, &x, &format!("{p}.final_layer_norm"), d, LN_EPS, true)?;
        let h = linear(g, &h, &format!("{p}.fc1"), d, c.encoder_ffn, true)?;
        let h = gelu(g, &h);
        let h = linear(g, &h, &format!("{p}.fc2"), c.encoder_ffn, d, true)?;
        x = g.node("Add", "mlp_residual", &[&x, &h], vec![]);
    }
    let x = layer_norm(g, &x, "audio_tower.ln_post", d, LN_EPS, true)?;
    let x = linear(g, &x, "audio_tower.proj1", d, d, true)?;
    let x = gelu(g, &x);
    let x = linear(g, &x, "audio_tower.proj2", d, c.output_dim, true)?;
    let rows = g.ints("shape_out_rows", &[-1, c.output_dim as i64]);
    let x = g.node("Reshape", "window_rows", &[&x, &rows], vec![]);
    g.node_to("Slice", &[&x, &zero, &total, &axis0], "audio_embeds", vec![]);
    let inputs = vec![
        Io::new(
            "input_features",
            FLOAT,
            vec![Dim::Named("chunks"), Dim::Fixed(c.mel_bins), Dim::Named("chunk_frames")],
        ),
        Io::new("window_mask", INT64, vec![Dim::Named("windows"), Dim::Named("window_tokens")]),
    ];
    let outputs = vec![Io::new("audio_embeds", FLOAT, vec![Dim::Named("tokens"), Dim::Fixed(c.output_dim)])];
    Ok((inputs, outputs))
}

/// Tokens of a full convolution chunk (13 for 100 frames).
fn config_tokens_per_chunk(c: &Qwen3AsrConfig) -> usize {
    c.audio_tokens(c.chunk_frames())
}

/// The cache layout `[1, kv_heads, length, head_dim]`.
fn kv_dims(c: &Qwen3AsrConfig, length: &'static str) -> Vec<Dim> {
    vec![Dim::Fixed(1), Dim::Fixed(c.kv_heads), Dim::Named(length), Dim::Fixed(c.head_dim)]
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

/// `{prefix}` linear with a bias when the checkpoint has one (`attention_bias`).
fn proj(g: &mut Graph<'_>, x: &str, prefix: &str, din: usize, dout: usize) -> Result<String, GraphError> {
    let bias = g.has_weight(&format!("{prefix}.bias"));
    linear(g, x, prefix, din, dout, bias)
}

/// The token embeddings of `input_ids`, with the rows of `audio_embeds` in place of the audio tokens: the `k`-th
/// audio token gets row `k` while there is one; an audio token past the rows (a generated one, fed with no rows)
/// keeps its token embedding, as in the reference, whose steps after the prefill take no audio.
fn embeddings(g: &mut Graph<'_>, c: &Qwen3AsrConfig, table: &str) -> String {
    let x = g.node("Gather", "embed", &[table, "input_ids"], vec![]);
    let id = g.scalar_i64(c.audio_token_id);
    let is_audio = g.node("Equal", "is_audio", &["input_ids", &id], vec![]);
    let counts = g.node("Cast", "is_audio_int", &[&is_audio], vec![attr_int("to", INT64)]);
    let axis = g.scalar_i64(1);
    let ordinal = g.node("CumSum", "audio_ordinal", &[&counts, &axis], vec![]);
    let one = g.scalar_i64(1);
    let row = g.node("Sub", "audio_row", &[&ordinal, &one], vec![]);
    let zero = g.scalar_i64(0);
    let row = g.node("Where", "audio_row_clamped", &[&is_audio, &row, &zero], vec![]);
    let rows_shape = g.node("Shape", "audio_rows_shape", &["audio_embeds"], vec![]);
    let n_rows = g.node("Gather", "audio_row_count", &[&rows_shape, &zero], vec![attr_int("axis", 0)]);
    let has_row = g.node("Less", "audio_has_row", &[&row, &n_rows], vec![]);
    let replace = g.node("And", "audio_replaced", &[&is_audio, &has_row], vec![]);
    // One zero row after the given ones, so that the gather never reads past them (its result is then unused).
    let h = c.hidden;
    let pad = g.const_f32(&format!("zero_row_{h}"), &[1, h as i64], &vec![0.0; h]);
    let padded = g.node("Concat", "audio_rows_padded", &["audio_embeds", &pad], vec![attr_int("axis", 0)]);
    let rows = g.node("Gather", "audio_rows", &[&padded, &row], vec![]);
    let cond = g.unsqueeze(&replace, &[2], "audio_replaced_3d");
    g.node("Where", "merged_embeds", &[&cond, &rows, &x], vec![])
}

fn decoder(g: &mut Graph<'_>, c: &Qwen3AsrConfig) -> Result<Signature, GraphError> {
    let (h, d) = (c.hidden, c.head_dim);
    let ids_shape = g.node("Shape", "ids_shape", &["input_ids"], vec![]);
    let one = g.scalar_i64(1);
    let seq = g.node("Gather", "seq_len", &[&ids_shape, &one], vec![attr_int("axis", 0)]);
    let past_shape = g.node("Shape", "past_shape", &["past_key.0"], vec![]);
    let two = g.scalar_i64(2);
    let past = g.node("Gather", "past_len", &[&past_shape, &two], vec![attr_int("axis", 0)]);
    let total = g.node("Add", "total_len", &[&past, &seq], vec![]);
    let positions = g.node("Range", "positions", &[&past, &total, &one], vec![]);
    let (cos, sin) = rotary_tables(g, &positions, &inv_freq(c.rope_theta, d), "rope");
    let bias = causal_bias(g, &past, &total);

    let table = g.weight("model.embed_tokens.weight", &[c.vocab, h])?;
    let mut x = embeddings(g, c, &table);
    let mut inputs = vec![
        Io::new("input_ids", INT64, vec![Dim::Fixed(1), Dim::Named("sequence")]),
        Io::new("audio_embeds", FLOAT, vec![Dim::Named("audio_rows"), Dim::Fixed(h)]),
    ];
    let mut outputs = vec![Io::new("logits", FLOAT, vec![Dim::Fixed(1), Dim::Fixed(c.vocab)])];
    for l in 0..c.layers {
        let p = format!("model.layers.{l}");
        let a = format!("{p}.self_attn");
        let normed = rms_norm(g, &x, &format!("{p}.input_layernorm.weight"), h, c.eps)?;
        let q = proj(g, &normed, &format!("{a}.q_proj"), h, c.heads * d)?;
        let k = proj(g, &normed, &format!("{a}.k_proj"), h, c.kv_heads * d)?;
        let v = proj(g, &normed, &format!("{a}.v_proj"), h, c.kv_heads * d)?;
        let q = split_heads(g, &q, c.heads, d);
        let k = split_heads(g, &k, c.kv_heads, d);
        let v = split_heads(g, &v, c.kv_heads, d);
        let q = rms_norm(g, &q, &format!("{a}.q_norm.weight"), d, c.eps)?;
        let k = rms_norm(g, &k, &format!("{a}.k_norm.weight"), d, c.eps)?;
        let q = apply_rotary(g, &q, &cos, &sin, d, d);
        let k = apply_rotary(g, &k, &cos, &sin, d, d);
        let (present_k, present_v) = (format!("present_key.{l}"), format!("present_value.{l}"));
        let (past_k, past_v) = (format!("past_key.{l}"), format!("past_value.{l}"));
        g.node_to("Concat", &[&past_k, &k], &present_k, vec![attr_int("axis", 2)]);
        g.node_to("Concat", &[&past_v, &v], &present_v, vec![attr_int("axis", 2)]);
        for name in [past_k, past_v] {
            inputs.push(Io::new(&name, FLOAT, kv_dims(c, "past_sequence")));
        }
        let heads = Heads { heads: c.heads, kv_heads: c.kv_heads, d };
        let ctx = attention(g, &q, &present_k, &present_v, &bias, heads);
        let out = proj(g, &ctx, &format!("{a}.o_proj"), c.heads * d, h)?;
        x = g.node("Add", "attention_residual", &[&x, &out], vec![]);
        let normed = rms_norm(g, &x, &format!("{p}.post_attention_layernorm.weight"), h, c.eps)?;
        let gate = proj(g, &normed, &format!("{p}.mlp.gate_proj"), h, c.intermediate)?;
        let up = proj(g, &normed, &format!("{p}.mlp.up_proj"), h, c.intermediate)?;
        let gate = silu(g, &gate);
        let gated = g.node("Mul", "gated", &[&gate, &up], vec![]);
        let down = proj(g, &gated, &format!("{p}.mlp.down_proj"), c.intermediate, h)?;
        x = g.node("Add", "mlp_residual", &[&x, &down], vec![]);
        for name in [present_k, present_v] {
            outputs.push(Io::new(&name, FLOAT, kv_dims(c, "total_sequence")));
        }
    }
    let x = rms_norm(g, &x, "model.norm.weight", h, c.eps)?;
    // Only the last position's logits: a step needs no other, and the vocabulary projection is the widest matmul.
    let last = g.scalar_i64(-1);
    let last = g.node("Gather", "last_position", &[&x, &last], vec![attr_int("axis", 1)]);
    let head = if g.has_weight("lm_head.weight") { g.weight("lm_head.weight", &[c.vocab, h])? } else { table };
    let wt = g.node("Transpose", "lm_head_t", &[&head], vec![attr_ints("perm", &[1, 0])]);
    g.node_to("MatMul", &[&last, &wt], "logits", vec![]);
    Ok((inputs, outputs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoids_start_with_sin_0_and_cos_0() {
        let s = sinusoids(3, 8);
        assert_eq!(&s[..8], &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
        assert!((s[8] - 1f32.sin()).abs() < 1e-7 && (s[12] - 1f32.cos()).abs() < 1e-7);
    }
}
