//! Whisper (`WhisperForConditionalGeneration`, `WhisperModel`; multilingual and `.en`) on candle, written on
//! candle-nn's layers as transformers' `modeling_whisper.py` computes it, step by step with key/value caches.
//!
//! candle-transformers' `models::whisper` is not used: its decoder keeps no self-attention cache (every step
//! recomputes the whole sequence, its positions always from 0), its GELU is the tanh approximation where
//! transformers' `gelu` is the exact one, its feed-forward width is `4 · d_model` instead of `encoder_ffn_dim` /
//! `decoder_ffn_dim`, and its encoder positions are recomputed sinusoids instead of the stored `embed_positions`.
//! Here, as in transformers: two convolutions (kernel 3, padding 1, the second with stride 2) each followed by the
//! exact GELU, plus the stored encoder positions; pre-norm layers (layer norm ε = 1e-5) with self-attention, the
//! decoder's cross-attention, and `fc1` → GELU → `fc2`; queries scaled by `head_dim^-0.5`; `k_proj` without bias;
//! decoder positions from the number of cached tokens; logits from the token embeddings (or `proj_out.weight` when
//! `tie_word_embeddings` is false). `scale_embedding` is read by no computation, as in transformers.

use bulkhead_core::{EngineError, SessionReport, Tensor, WhisperSession};
use candle_core::{DType, Device, IndexOp, Module, Tensor as CTensor};
use candle_nn::{Conv1d, Conv1dConfig, LayerNorm, Linear, VarBuilder};

/// Layer norm epsilon of every Whisper norm (`nn.LayerNorm`'s default).
const EPS: f64 = 1e-5;

/// The architectures this module runs.
pub const WHISPER_ARCHITECTURES: &[&str] = &["WhisperForConditionalGeneration", "WhisperModel"];

/// The hyper-parameters read from config.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    d_model: usize,
    encoder_layers: usize,
    encoder_heads: usize,
    encoder_ffn: usize,
    decoder_layers: usize,
    decoder_heads: usize,
    decoder_ffn: usize,
    mel_bins: usize,
    max_source_positions: usize,
    max_target_positions: usize,
    vocab: usize,
    tied: bool,
}

impl Config {
    /// Reads the Whisper fields of a parsed config.json; a missing or bad field is an error naming it.
    pub(crate) fn from_json(v: &serde_json::Value) -> Result<Config, String> {
        let n = |field: &str| -> Result<usize, String> {
            match v.get(field).and_then(serde_json::Value::as_u64) {
                Some(x) if x > 0 => Ok(x as usize),
                Some(_) => Err(format!("`{field}` must be positive")),
                None => Err(format!("`{field}` is missing or not a whole number")),
            }
        };
        let act = v.get("activation_function").and_then(serde_json::Value::as_str).unwrap_or("gelu");
        if act != "gelu" {
            return Err(format!("`activation_function` `{act}` is not supported (gelu)"));
        }
        let c = Config {
            d_model: n("d_model")?,
            encoder_layers: n("encoder_layers")?,
            encoder_heads: n("encoder_attention_heads")?,
            encoder_ffn: n("encoder_ffn_dim")?,
            decoder_layers: n("decoder_layers")?,
            decoder_heads: n("decoder_attention_heads")?,
            decoder_ffn: n("decoder_ffn_dim")?,
            mel_bins: n("num_mel_bins")?,
            max_source_positions: n("max_source_positions")?,
            max_target_positions: n("max_target_positions")?,
            vocab: n("vocab_size")?,
            tied: v.get("tie_word_embeddings").and_then(serde_json::Value::as_bool).unwrap_or(true),
        };
        for (heads, field) in
            [(c.encoder_heads, "encoder_attention_heads"), (c.decoder_heads, "decoder_attention_heads")]
        {
            if !c.d_model.is_multiple_of(heads) {
                return Err(format!("`d_model` {} is not a multiple of `{field}` {heads}", c.d_model));
            }
        }
        Ok(c)
    }
}

/// Multi-head attention: `q_proj` (scaled), `k_proj` without bias, `v_proj`, `out_proj`.
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    fn load(vb: VarBuilder, d: usize, heads: usize) -> candle_core::Result<Attention> {
        let linear = |name: &str, bias: bool| -> candle_core::Result<Linear> {
            let vb = vb.pp(name);
            let w = vb.get((d, d), "weight")?;
            let b = if bias { Some(vb.get(d, "bias")?) } else { None };
            Ok(Linear::new(w, b))
        };
        Ok(Attention {
            q: linear("q_proj", true)?,
            k: linear("k_proj", false)?,
            v: linear("v_proj", true)?,
            out: linear("out_proj", true)?,
            heads,
            scale: ((d / heads) as f64).powf(-0.5),
        })
    }

    /// `[1, seq, d]` → `[1, heads, seq, head_dim]`.
    fn split(&self, x: &CTensor) -> candle_core::Result<CTensor> {
        let (b, s, d) = x.dims3()?;
        x.reshape((b, s, self.heads, d / self.heads))?.transpose(1, 2)?.contiguous()
    }

    /// The keys and values of `x`, split into heads.
    fn keys_values(&self, x: &CTensor) -> candle_core::Result<(CTensor, CTensor)> {
        Ok((self.split(&self.k.forward(x)?)?, self.split(&self.v.forward(x)?)?))
    }

    /// `out_proj(softmax(q·kᵀ + mask)·v)` for the queries of `x` over the keys and values `k`, `v`.
    fn attend(&self, x: &CTensor, k: &CTensor, v: &CTensor, mask: Option<&CTensor>) -> candle_core::Result<CTensor> {
        let q = self.split(&(self.q.forward(x)? * self.scale)?)?;
        let mut w = q.matmul(&k.t()?.contiguous()?)?;
        if let Some(mask) = mask {
            w = w.broadcast_add(mask)?;
        }
        let w = candle_nn::ops::softmax_last_dim(&w)?;
        let ctx = w.matmul(v)?.transpose(1, 2)?.contiguous()?;
        let (b, s, _, _) = ctx.dims4()?;
        self.out.forward(&ctx.reshape((b, s, ()))?)
    }
}

/// One pre-norm layer: self-attention, the decoder's cross-attention, the feed-forward block.
struct Layer {
    self_attn: Attention,
    self_norm: LayerNorm,
    cross: Option<(Attention, LayerNorm)>,
    fc1: Linear,
    fc2: Linear,
    final_norm: LayerNorm,
}

fn layer_norm(vb: VarBuilder, d: usize) -> candle_core::Result<LayerNorm> {
    Ok(LayerNorm::new(vb.get(d, "weight")?, vb.get(d, "bias")?, EPS))
}

fn linear(vb: VarBuilder, rows: usize, cols: usize) -> candle_core::Result<Linear> {
    Ok(Linear::new(vb.get((rows, cols), "weight")?, Some(vb.get(rows, "bias")?)))
}

impl Layer {
    fn load(vb: VarBuilder, d: usize, heads: usize, ffn: usize, cross: bool) -> candle_core::Result<Layer> {
        let cross = if cross {
            Some((Attention::load(vb.pp("encoder_attn"), d, heads)?, layer_norm(vb.pp("encoder_attn_layer_norm"), d)?))
        } else {
            None
        };
        Ok(Layer {
            self_attn: Attention::load(vb.pp("self_attn"), d, heads)?,
            self_norm: layer_norm(vb.pp("self_attn_layer_norm"), d)?,
            cross,
            fc1: linear(vb.pp("fc1"), ffn, d)?,
            fc2: linear(vb.pp("fc2"), d, ffn)?,
            final_norm: layer_norm(vb.pp("final_layer_norm"), d)?,
        })
    }

    /// `x + fc2(gelu(fc1(final_layer_norm(x))))`.
    fn feed_forward(&self, x: &CTensor) -> candle_core::Result<CTensor> {
        let h = self.fc2.forward(&self.fc1.forward(&self.final_norm.forward(x)?)?.gelu_erf()?)?;
        x + h
    }
}

/// A decoder layer's caches: self-attention keys and values so far, and the cross-attention ones of the window.
struct Cache {
    keys: Option<CTensor>,
    values: Option<CTensor>,
    cross: (CTensor, CTensor),
}

/// A Whisper checkpoint loaded on one candle device, with the caches of the decoding in progress.
pub(crate) struct CandleWhisper {
    config: Config,
    device: Device,
    conv1: Conv1d,
    conv2: Conv1d,
    encoder_positions: CTensor,
    encoder_layers: Vec<Layer>,
    encoder_norm: LayerNorm,
    embed_tokens: CTensor,
    decoder_positions: CTensor,
    decoder_layers: Vec<Layer>,
    decoder_norm: LayerNorm,
    proj_out: CTensor,
    caches: Vec<Cache>,
    past: usize,
    report: SessionReport,
}

impl CandleWhisper {
    /// Loads the weights of `vb` (`model.`-prefixed as `WhisperForConditionalGeneration` stores them when
    /// `prefixed`, else bare as `WhisperModel`).
    pub(crate) fn load(
        config: Config,
        vb: VarBuilder,
        prefixed: bool,
        device: Device,
        mut report: SessionReport,
    ) -> candle_core::Result<CandleWhisper> {
        report.hidden_size = config.d_model;
        let c = &config;
        let (d, m) = (c.d_model, if prefixed { vb.pp("model") } else { vb.clone() });
        let enc = m.pp("encoder");
        let dec = m.pp("decoder");
        let conv = |vb: VarBuilder, cin: usize, stride: usize| -> candle_core::Result<Conv1d> {
            let cfg = Conv1dConfig { padding: 1, stride, dilation: 1, groups: 1, cudnn_fwd_algo: None };
            Ok(Conv1d::new(vb.get((d, cin, 3), "weight")?, Some(vb.get(d, "bias")?), cfg))
        };
        let embed_tokens = dec.get((c.vocab, d), "embed_tokens.weight")?;
        let proj_out = if c.tied { embed_tokens.clone() } else { vb.get((c.vocab, d), "proj_out.weight")? };
        Ok(CandleWhisper {
            conv1: conv(enc.pp("conv1"), c.mel_bins, 1)?,
            conv2: conv(enc.pp("conv2"), d, 2)?,
            encoder_positions: enc.get((c.max_source_positions, d), "embed_positions.weight")?,
            encoder_layers: (0..c.encoder_layers)
                .map(|i| Layer::load(enc.pp(format!("layers.{i}")), d, c.encoder_heads, c.encoder_ffn, false))
                .collect::<candle_core::Result<_>>()?,
            encoder_norm: layer_norm(enc.pp("layer_norm"), d)?,
            decoder_positions: dec.get((c.max_target_positions, d), "embed_positions.weight")?,
            decoder_layers: (0..c.decoder_layers)
                .map(|i| Layer::load(dec.pp(format!("layers.{i}")), d, c.decoder_heads, c.decoder_ffn, true))
                .collect::<candle_core::Result<_>>()?,
            decoder_norm: layer_norm(dec.pp("layer_norm"), d)?,
            embed_tokens,
            proj_out,
            caches: vec![],
            past: 0,
            config,
            device,
            report,
        })
    }

    fn error(&self, reason: String) -> EngineError {
        EngineError::Inference { unit: self.report.unit.to_string(), reason }
    }

    fn candle_error(&self, e: candle_core::Error) -> EngineError {
        self.error(crate::models::first_line(&e))
    }

    fn run_encoder(&self, features: &Tensor) -> candle_core::Result<CTensor> {
        let x = CTensor::from_slice(&features.data, (1, features.shape[0], features.shape[1]), &self.device)?;
        let x = self.conv1.forward(&x)?.gelu_erf()?;
        let x = self.conv2.forward(&x)?.gelu_erf()?.transpose(1, 2)?;
        let mut x = x.broadcast_add(&self.encoder_positions)?;
        for layer in &self.encoder_layers {
            let h = layer.self_norm.forward(&x)?;
            let (k, v) = layer.self_attn.keys_values(&h)?;
            x = (&x + layer.self_attn.attend(&h, &k, &v, None)?)?;
            x = layer.feed_forward(&x)?;
        }
        self.encoder_norm.forward(&x)?.squeeze(0)
    }

    fn run_start(&self, encoded: &Tensor) -> candle_core::Result<Vec<Cache>> {
        let x = CTensor::from_slice(&encoded.data, (1, encoded.shape[0], encoded.shape[1]), &self.device)?;
        self.decoder_layers
            .iter()
            .map(|layer| {
                let (attn, _) = layer.cross.as_ref().expect("decoder layers have cross-attention");
                Ok(Cache { keys: None, values: None, cross: attn.keys_values(&x)? })
            })
            .collect()
    }

    fn run_step(&mut self, ids: &[i64]) -> candle_core::Result<Vec<f32>> {
        let n = ids.len();
        let past = self.past;
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        let ids = CTensor::from_vec(ids, n, &self.device)?;
        let tokens = self.embed_tokens.index_select(&ids, 0)?;
        let positions = self.decoder_positions.narrow(0, past, n)?;
        let mut x = (tokens + positions)?.unsqueeze(0)?;
        // Causal over the cached tokens and the new ones: new token i sees positions up to past + i.
        let mask = if n > 1 {
            let m: Vec<f32> = (0..n)
                .flat_map(|i| (0..past + n).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 }))
                .collect();
            Some(CTensor::from_vec(m, (n, past + n), &self.device)?)
        } else {
            None
        };
        for (layer, cache) in self.decoder_layers.iter().zip(self.caches.iter_mut()) {
            let h = layer.self_norm.forward(&x)?;
            let (k, v) = layer.self_attn.keys_values(&h)?;
            let k = match &cache.keys {
                Some(old) => CTensor::cat(&[old, &k], 2)?,
                None => k,
            };
            let v = match &cache.values {
                Some(old) => CTensor::cat(&[old, &v], 2)?,
                None => v,
            };
            x = (&x + layer.self_attn.attend(&h, &k, &v, mask.as_ref())?)?;
            (cache.keys, cache.values) = (Some(k), Some(v));
            let (attn, norm) = layer.cross.as_ref().expect("decoder layers have cross-attention");
            let h = norm.forward(&x)?;
            x = (&x + attn.attend(&h, &cache.cross.0, &cache.cross.1, None)?)?;
            x = layer.feed_forward(&x)?;
        }
        let last = self.decoder_norm.forward(&x)?.i((0, n - 1))?;
        let logits = self.proj_out.matmul(&last.unsqueeze(1)?)?.squeeze(1)?;
        self.past += n;
        logits.to_dtype(DType::F32)?.to_vec1::<f32>()
    }
}

impl WhisperSession for CandleWhisper {
    fn report(&self) -> &SessionReport {
        &self.report
    }

    fn encode(&mut self, features: &Tensor) -> Result<Tensor, EngineError> {
        let frames = 2 * self.config.max_source_positions;
        if features.shape != [self.config.mel_bins, frames] {
            return Err(self.error(format!(
                "input features of shape {:?}; the encoder takes [{}, {frames}] (num_mel_bins, 2 · max_source_positions)",
                features.shape, self.config.mel_bins
            )));
        }
        let out = self.run_encoder(features).map_err(|e| self.candle_error(e))?;
        let shape = out.dims().to_vec();
        let data = out.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(|e| self.candle_error(e))?;
        Tensor::new(shape, data).map_err(|e| self.error(e))
    }

    fn start(&mut self, encoded: &Tensor) -> Result<(), EngineError> {
        if encoded.shape.len() != 2 || encoded.shape[1] != self.config.d_model {
            return Err(self.error(format!(
                "encoder states of shape {:?}; the decoder takes [positions, {}]",
                encoded.shape, self.config.d_model
            )));
        }
        self.caches = self.run_start(encoded).map_err(|e| self.candle_error(e))?;
        self.past = 0;
        Ok(())
    }

    fn step(&mut self, ids: &[i64]) -> Result<Vec<f32>, EngineError> {
        if self.caches.is_empty() {
            return Err(self.error("a decoding step before the decoding started".into()));
        }
        if ids.is_empty() {
            return Err(self.error("a decoding step with no tokens".into()));
        }
        if self.past + ids.len() > self.config.max_target_positions {
            return Err(self.error(format!(
                "{} tokens in all; the decoder takes at most {} (max_target_positions)",
                self.past + ids.len(),
                self.config.max_target_positions
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i < 0 || i as usize >= self.config.vocab) {
            return Err(self.error(format!("token id {bad} is outside the vocabulary of {}", self.config.vocab)));
        }
        self.run_step(ids).map_err(|e| self.candle_error(e))
    }
}

/// Whether `config` (parsed config.json) describes a Whisper checkpoint.
pub(crate) fn is_whisper(config: &serde_json::Value) -> bool {
    match config.get("architectures").and_then(|a| a.get(0)).and_then(serde_json::Value::as_str) {
        Some(a) => WHISPER_ARCHITECTURES.contains(&a),
        None => config.get("model_type").and_then(serde_json::Value::as_str) == Some("whisper"),
    }
}
