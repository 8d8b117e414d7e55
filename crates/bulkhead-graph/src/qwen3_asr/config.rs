//! config.json of a Qwen3-ASR checkpoint (`Qwen3ASRForConditionalGeneration`: `thinker_config` with its
//! `audio_config` and `text_config`), and the layout of the audio encoder's input that follows from it: 100-frame
//! convolution chunks and the attention windows of `n_window_infer` frames.

use std::path::Path;

use bulkhead_core::ModelFiles;
use serde_json::Value;

use crate::config::Cfg;
use crate::GraphError;

/// The architectures this module builds.
pub const QWEN3_ASR_ARCHITECTURES: &[&str] = &["Qwen3ASRForConditionalGeneration"];

/// The frames of one convolution chunk that `_get_feat_extract_output_lengths` of the reference hard-codes (100:
/// `n_window` 50).
const CHUNK_FRAMES: usize = 100;

/// The hyper-parameters of a Qwen3-ASR checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Qwen3AsrConfig {
    /// `audio_config.num_mel_bins` (128).
    pub mel_bins: usize,
    /// `audio_config.d_model`.
    pub d_model: usize,
    /// `audio_config.encoder_layers`.
    pub encoder_layers: usize,
    /// `audio_config.encoder_attention_heads`.
    pub encoder_heads: usize,
    /// `audio_config.encoder_ffn_dim`.
    pub encoder_ffn: usize,
    /// `audio_config.downsample_hidden_size`: channels of the three Conv2d stages.
    pub conv_channels: usize,
    /// `audio_config.n_window`: half the frames of a convolution chunk.
    pub n_window: usize,
    /// `audio_config.n_window_infer`: frames per attention window of the encoder.
    pub n_window_infer: usize,
    /// `audio_config.output_dim`: width of the projected audio embeddings (the decoder's hidden size).
    pub output_dim: usize,
    /// `text_config.hidden_size`.
    pub hidden: usize,
    /// `text_config.num_hidden_layers`.
    pub layers: usize,
    /// `text_config.num_attention_heads`.
    pub heads: usize,
    /// `text_config.num_key_value_heads`.
    pub kv_heads: usize,
    /// `text_config.head_dim`.
    pub head_dim: usize,
    /// `text_config.intermediate_size`.
    pub intermediate: usize,
    /// `text_config.vocab_size`.
    pub vocab: usize,
    /// `text_config.max_position_embeddings`: the longest prompt and generation.
    pub max_positions: usize,
    /// `text_config.rms_norm_eps`.
    pub eps: f32,
    /// `text_config.rope_theta` (or `rope_parameters.rope_theta`).
    pub rope_theta: f64,
    /// `thinker_config.audio_token_id`: `<|audio_pad|>`, whose embeddings the audio embeddings replace.
    pub audio_token_id: i64,
    /// `support_languages`: the language names the model was trained on (empty when config.json has none).
    pub languages: Vec<String>,
}

/// How the encoder input of one clip is laid out: the clip's frames cut into chunks, the chunks' tokens grouped
/// into attention windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioLayout {
    /// The clip's frames.
    pub frames: usize,
    /// Convolution chunks (`ceil(frames / 100)`).
    pub chunks: usize,
    /// Frames of the `input_features` chunks: 100, or the whole clip when it is one shorter chunk (transformers
    /// pads the chunks to the longest).
    pub chunk_frames: usize,
    /// Audio tokens of the clip (the encoder's output rows, the `<|audio_pad|>` tokens of the prompt).
    pub tokens: usize,
    /// Tokens per attention window (the last one may hold fewer).
    pub window_tokens: usize,
    /// Attention windows.
    pub windows: usize,
}

impl AudioLayout {
    /// The `window_mask` input: `windows × window_tokens` values, 1 for a token, 0 for the padding of the last
    /// window.
    pub fn window_mask(&self) -> Vec<i64> {
        (0..self.windows * self.window_tokens).map(|i| i64::from(i < self.tokens)).collect()
    }
}

/// Tokens of `frames` frames after the three stride-2 convolutions (kernel 3, padding 1).
fn conv_tokens(frames: usize) -> usize {
    let half = |n: usize| if n == 0 { 0 } else { (n - 1) / 2 + 1 };
    half(half(half(frames)))
}

impl Qwen3AsrConfig {
    /// Parses config.json (its path, for errors, and its text); a missing or bad field is an error naming the file
    /// and the field.
    pub fn parse(path: &Path, text: &str) -> Result<Qwen3AsrConfig, GraphError> {
        let c = Cfg::parse(path, text)?;
        Self::from_cfg(&c)
    }

    fn from_cfg(c: &Cfg) -> Result<Qwen3AsrConfig, GraphError> {
        let t = "thinker_config";
        if c.get(t).is_none() {
            return Err(c.err("`thinker_config` is missing: not a Qwen3-ASR checkpoint in the qwen-asr layout".into()));
        }
        let a = |k: &str| format!("{t}.audio_config.{k}");
        let x = |k: &str| format!("{t}.text_config.{k}");
        let d_model = c.usize(&a("d_model"))?;
        let encoder_heads = c.usize(&a("encoder_attention_heads"))?;
        if !d_model.is_multiple_of(encoder_heads) {
            return Err(c.err(format!("{} {d_model} is not a multiple of {encoder_heads} heads", a("d_model"))));
        }
        let act = c.get(&a("activation_function")).and_then(Value::as_str).unwrap_or("gelu");
        if act != "gelu" {
            return Err(c.unsupported(format!("`{}` `{act}` is not supported (gelu)", a("activation_function"))));
        }
        let n_window = c.usize_of(&[&a("n_window")], Some(100))?;
        if 2 * n_window != CHUNK_FRAMES {
            return Err(c.unsupported(format!(
                "`{}` is {n_window}: the reference counts audio tokens for 100-frame chunks (n_window 50) only",
                a("n_window")
            )));
        }
        let n_window_infer = c.usize_of(&[&a("n_window_infer")], Some(400))?;
        if !n_window_infer.is_multiple_of(CHUNK_FRAMES) {
            return Err(c.err(format!("`{}` {n_window_infer} is not a multiple of 100 frames", a("n_window_infer"))));
        }
        let hidden = c.usize(&x("hidden_size"))?;
        let heads = c.usize(&x("num_attention_heads"))?;
        let kv_heads = c.usize_of(&[&x("num_key_value_heads")], Some(heads))?;
        if !heads.is_multiple_of(kv_heads) {
            return Err(c.err(format!("{heads} attention heads are not a multiple of {kv_heads} key/value heads")));
        }
        let head_dim = match c.get(&x("head_dim")) {
            Some(_) => c.usize(&x("head_dim"))?,
            None => c.head_size(hidden, heads)?,
        };
        let act = c.get(&x("hidden_act")).and_then(Value::as_str).unwrap_or("silu");
        if act != "silu" {
            return Err(c.unsupported(format!("`{}` `{act}` is not supported (silu)", x("hidden_act"))));
        }
        for field in ["rope_scaling", "rope_parameters"] {
            let ty = c.get(&x(&format!("{field}.rope_type"))).or_else(|| c.get(&x(&format!("{field}.type"))));
            // `mrope`: the multimodal rotary embedding, the plain one for a speech prompt (see the `qwen3_asr` module doc).
            if let Some(ty) = ty.and_then(Value::as_str).filter(|ty| !matches!(*ty, "default" | "mrope")) {
                return Err(c.unsupported(format!("`{}` type `{ty}` is not supported (default, mrope)", x(field))));
            }
        }
        let output_dim = c.usize(&a("output_dim"))?;
        if output_dim != hidden {
            return Err(c.err(format!(
                "{} {output_dim} differs from {} {hidden}: the audio embeddings cannot replace token embeddings",
                a("output_dim"),
                x("hidden_size")
            )));
        }
        let languages = match c.get("support_languages") {
            None => vec![],
            Some(Value::Array(v)) => v
                .iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| c.err("`support_languages` must be a list of language names".into()))?,
            Some(_) => return Err(c.err("`support_languages` must be a list of language names".into())),
        };
        Ok(Qwen3AsrConfig {
            mel_bins: c.usize_of(&[&a("num_mel_bins")], Some(128))?,
            d_model,
            encoder_layers: c.usize(&a("encoder_layers"))?,
            encoder_heads,
            encoder_ffn: c.usize(&a("encoder_ffn_dim"))?,
            conv_channels: c.usize_of(&[&a("downsample_hidden_size")], Some(480))?,
            n_window,
            n_window_infer,
            output_dim,
            hidden,
            layers: c.usize(&x("num_hidden_layers"))?,
            heads,
            kv_heads,
            head_dim,
            intermediate: c.usize(&x("intermediate_size"))?,
            vocab: c.usize(&x("vocab_size"))?,
            max_positions: c.usize_of(&[&x("max_position_embeddings")], Some(128_000))?,
            eps: c.eps(&[&x("rms_norm_eps")], 1e-6)?,
            rope_theta: c.f64_of(&[&x("rope_theta"), &x("rope_parameters.rope_theta")], Some(5_000_000.0))?,
            audio_token_id: c.usize(&format!("{t}.audio_token_id"))? as i64,
            languages,
        })
    }

    /// Frames per convolution chunk (100).
    pub fn chunk_frames(&self) -> usize {
        2 * self.n_window
    }

    /// Mel bins after the three convolutions (the frequency axis halves three times).
    pub fn conv_freq(&self) -> usize {
        conv_tokens(self.mel_bins)
    }

    /// Audio tokens of `frames` frames (the reference's `_get_feat_extract_output_lengths`).
    pub fn audio_tokens(&self, frames: usize) -> usize {
        let chunk = self.chunk_frames();
        let rest = frames % chunk;
        let tail = if rest == 0 { 0 } else { conv_tokens(rest) };
        tail + (frames / chunk) * conv_tokens(chunk)
    }

    /// The encoder layout of a clip of `frames` frames (at least one).
    pub fn layout(&self, frames: usize) -> AudioLayout {
        let chunk = self.chunk_frames();
        let chunks = frames.div_ceil(chunk).max(1);
        let chunk_frames = if chunks == 1 { frames.max(1) } else { chunk };
        let tokens = self.audio_tokens(frames);
        // transformers: the longest chunk's tokens times the chunks per window.
        let window = conv_tokens(chunk_frames) * (self.n_window_infer / chunk);
        let window_tokens = window.min(tokens).max(1);
        AudioLayout { frames, chunks, chunk_frames, tokens, window_tokens, windows: tokens.div_ceil(window_tokens) }
    }
}

/// Whether `model` is a Qwen3-ASR checkpoint (`architectures[0]`, or `model_type` `qwen3_asr`).
pub fn is_qwen3_asr(model: &ModelFiles) -> bool {
    match &model.architecture {
        Some(a) => QWEN3_ASR_ARCHITECTURES.contains(&a.as_str()),
        None => model.model_type.as_deref() == Some("qwen3_asr"),
    }
}

/// Reads config.json of `model`: it must describe a Qwen3-ASR checkpoint.
pub fn read_config(model: &ModelFiles) -> Result<Qwen3AsrConfig, GraphError> {
    let path =
        model.config.clone().ok_or(GraphError::MissingFile { model: model.source.clone(), file: "config.json" })?;
    let text = std::fs::read_to_string(&path).map_err(|e| GraphError::Io { path: path.clone(), source: e })?;
    let c = Cfg::parse(&path, &text)?;
    let architecture = c.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str);
    let ok = match architecture {
        Some(a) => QWEN3_ASR_ARCHITECTURES.contains(&a),
        None => c.str_or("model_type", "") == "qwen3_asr",
    };
    if !ok {
        return Err(c.err(format!(
            "not a Qwen3-ASR checkpoint (architectures[0] {}, model_type {}); expected {}",
            architecture.unwrap_or("(none)"),
            c.str_or("model_type", "(none)"),
            QWEN3_ASR_ARCHITECTURES.join(", ")
        )));
    }
    Qwen3AsrConfig::from_cfg(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const TINY: &str = r#"{"architectures": ["Qwen3ASRForConditionalGeneration"], "thinker_config": {
        "audio_token_id": 405, "audio_config": {"num_mel_bins": 128, "d_model": 32, "encoder_layers": 2,
        "encoder_attention_heads": 4, "encoder_ffn_dim": 64, "downsample_hidden_size": 8, "n_window": 50,
        "n_window_infer": 800, "output_dim": 48}, "text_config": {"hidden_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 96,
        "vocab_size": 407, "rope_theta": 1000000.0,
        "rope_scaling": {"rope_type": "default", "mrope_section": [4, 2, 2], "interleaved": true}}},
        "support_languages": ["English", "German"]}"#;

    fn parse(text: &str) -> Result<Qwen3AsrConfig, GraphError> {
        Qwen3AsrConfig::parse(Path::new("/m/config.json"), text)
    }

    #[test]
    fn token_counts_and_windows_follow_the_reference() {
        let c = parse(TINY).unwrap();
        assert_eq!((c.conv_freq(), c.audio_tokens(100), c.audio_tokens(263), c.audio_tokens(726)), (16, 13, 34, 95));
        assert_eq!(c.audio_tokens(1), 1);
        let l = c.layout(263);
        assert_eq!((l.chunks, l.chunk_frames, l.tokens, l.window_tokens, l.windows), (3, 100, 34, 34, 1));
        let l = c.layout(4500);
        assert_eq!((l.chunks, l.tokens, l.window_tokens, l.windows), (45, 585, 104, 6));
        assert_eq!(l.window_mask().iter().sum::<i64>(), 585);
        let l = c.layout(60);
        assert_eq!((l.chunks, l.chunk_frames, l.tokens, l.window_tokens, l.windows), (1, 60, 8, 8, 1));
        assert_eq!(c.languages, ["English", "German"]);
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let e = parse(&TINY.replace("\"n_window\": 50", "\"n_window\": 100")).unwrap_err().to_string();
        assert!(e.contains("/m/config.json") && e.contains("n_window"), "{e}");
        let e = parse(&TINY.replace("\"hidden_size\": 48", "\"hidden_size\": 64")).unwrap_err().to_string();
        assert!(e.contains("output_dim"), "{e}");
        assert!(parse(&TINY.replace("\"default\"", "\"mrope\"")).is_ok());
        let e = parse(&TINY.replace("\"default\"", "\"yarn\"")).unwrap_err().to_string();
        assert!(e.contains("`yarn`"), "{e}");
        let e = parse(r#"{"model_type": "qwen3_asr"}"#).unwrap_err().to_string();
        assert!(e.contains("thinker_config"), "{e}");
    }
}
