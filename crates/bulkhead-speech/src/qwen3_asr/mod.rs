//! Qwen3-ASR (`Qwen3ASRForConditionalGeneration` of the `qwen-asr` package) on the `ort:` units: the folder's
//! files, the audio encoder, and the decoder with its key/value caches; the decoding itself is in `transcribe`,
//! what the package does around the model in `output`.
//!
//! [`Qwen3AsrModel::load`] reads the folder (config.json, the tokenizer: `tokenizer`, preprocessor_config.json), has
//! `bulkhead-graph` build (or find in its cache) the audio-encoder and decoder graphs ([`bulkhead_graph::qwen3_asr`])
//! and loads each as a [`GraphSession`] of the given engine on one unit; the decoder runs the prefill and the
//! steps.

mod output;
mod tokenizer;
mod transcribe;

use std::path::{Path, PathBuf};

use bulkhead_audio::{FeatureConfig, FeatureExtractor, Padding};
use bulkhead_core::{Engine, GraphSession, ModelFiles, NamedTensor, SessionReport, TensorData, Unit};
use bulkhead_graph::qwen3_asr::{self, AudioLayout, Qwen3AsrConfig, Qwen3AsrGraphs};
use bulkhead_graph::BuildOptions;

pub use output::{fix_repetitions, language_name, merge_languages, parse_output, split_pieces, DEFAULT_LANGUAGES};

use crate::decode::DecoderCall;
use crate::model::MelFeatures;
use crate::SpeechError;

/// The audio encoder's output for one clip: `[tokens, hidden]` row-major, one row per `<|audio_pad|>` token.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioEmbeddings {
    /// Audio tokens (12.5 per second).
    pub tokens: usize,
    /// The decoder's hidden size.
    pub width: usize,
    /// The values.
    pub data: Vec<f32>,
}

/// The special tokens a prompt and a decoding use, found in the tokenizer by their text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Specials {
    /// `<|im_end|>` and `<|endoftext|>`: decoding stops at either (the reference's `generate` default).
    eos: Vec<i64>,
}

/// A Qwen3-ASR model loaded on one unit.
pub struct Qwen3AsrModel {
    folder: PathBuf,
    config: Qwen3AsrConfig,
    extractor: FeatureExtractor,
    pub(crate) tokenizer: tokenizers::Tokenizer,
    specials: Specials,
    languages: Vec<String>,
    encoder: Box<dyn GraphSession>,
    decoder: Box<dyn GraphSession>,
    graphs: Qwen3AsrGraphs,
    limits: RunLimits,
}

/// How much one graph run takes: the encoder runs whole attention windows, as many as fit in `encoder_chunks`
/// convolution chunks (at least one window); the prefill feeds the prompt `prefill_tokens` tokens at a time. Both
/// bound the memory of a run (the convolutions' activations, the attention scores) for long audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// Convolution chunks (100 frames each) per encoder run.
    pub encoder_chunks: usize,
    /// Prompt tokens per prefill run.
    pub prefill_tokens: usize,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits { encoder_chunks: 32, prefill_tokens: 512 }
    }
}

/// A decoding in progress: the decoder's inputs (`input_ids`, `audio_embeds`, then `past_key.{l}`,
/// `past_value.{l}` per layer), each run's present keys and values moved in as the next run's past ones.
pub(crate) struct DecoderState {
    inputs: Vec<NamedTensor>,
    pub past: usize,
    pub calls: Vec<DecoderCall>,
}

impl Qwen3AsrModel {
    /// Loads the Qwen3-ASR folder `folder` on `unit` of `engine` (ONNX Runtime's engine for the `ort:` units), with
    /// the graphs cached under bulkhead's cache directory (`graphs/`, shared with the other models).
    pub fn load(folder: &Path, engine: &dyn Engine, unit: &Unit) -> Result<Qwen3AsrModel, SpeechError> {
        let cache = bulkhead_core::install::cache_dir().join("graphs");
        Self::load_with_cache(folder, engine, unit, &cache)
    }

    /// [`Qwen3AsrModel::load`] with the graphs cached in `cache_dir`.
    pub fn load_with_cache(
        folder: &Path,
        engine: &dyn Engine,
        unit: &Unit,
        cache_dir: &Path,
    ) -> Result<Qwen3AsrModel, SpeechError> {
        let model = ModelFiles::open(folder)?;
        let config = qwen3_asr::read_config(&model)?;
        let pre = folder.join(bulkhead_audio::PREPROCESSOR_CONFIG);
        let config_err = |e: bulkhead_audio::ConfigError| SpeechError::Config {
            path: pre.clone(),
            field: "(file)".into(),
            reason: e.to_string(),
        };
        let features = FeatureConfig::from_file(&pre).map_err(config_err)?;
        if features.n_mels != config.mel_bins {
            return Err(SpeechError::Config {
                path: pre.clone(),
                field: "feature_size".into(),
                reason: format!("is {}, but config.json's num_mel_bins is {}", features.n_mels, config.mel_bins),
            });
        }
        let extractor = FeatureExtractor::new(features).map_err(config_err)?;
        let tokenizer = tokenizer::load(folder)?;
        let specials = specials(folder, &tokenizer, &config)?;
        let languages = if config.languages.is_empty() {
            DEFAULT_LANGUAGES.iter().map(|s| s.to_string()).collect()
        } else {
            config.languages.clone()
        };
        warn_on_sampling(folder);
        let graphs = qwen3_asr::build_qwen3_asr_cached(&model, &BuildOptions::default(), cache_dir)?;
        let load = |path: &Path| -> Result<Box<dyn GraphSession>, SpeechError> {
            Ok(engine.load_graph(&ModelFiles::open(path)?, unit)?)
        };
        Ok(Qwen3AsrModel {
            folder: folder.to_path_buf(),
            encoder: load(&graphs.audio_encoder.path)?,
            decoder: load(&graphs.decoder.path)?,
            config,
            extractor,
            tokenizer,
            specials,
            languages,
            graphs,
            limits: RunLimits::default(),
        })
    }

    /// The model's folder.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// config.json.
    pub fn config(&self) -> &Qwen3AsrConfig {
        &self.config
    }

    /// The language names the model accepts.
    pub fn languages(&self) -> &[String] {
        &self.languages
    }

    /// The built graphs (paths, cache hits).
    pub fn graphs(&self) -> &Qwen3AsrGraphs {
        &self.graphs
    }

    /// What runs the decoder (unit, runtime, node placement); the encoder's is [`Qwen3AsrModel::encoder_report`].
    pub fn report(&self) -> &SessionReport {
        self.decoder.report()
    }

    /// What runs the audio encoder.
    pub fn encoder_report(&self) -> &SessionReport {
        self.encoder.report()
    }

    /// The sampling rate the features are computed at (16 kHz).
    pub fn sampling_rate(&self) -> u32 {
        self.extractor.sampling_rate()
    }

    /// The log-mel features of mono PCM at [`Qwen3AsrModel::sampling_rate`] as the processor computes them (the
    /// folder's `preprocessor_config.json`, no padding, no truncation: `samples / hop_length` frames).
    pub fn features(&self, pcm: &[f32]) -> Result<MelFeatures, SpeechError> {
        let f = self.extractor.extract(pcm, Padding::Longest);
        if f.n_frames == 0 {
            return Err(SpeechError::Features(format!(
                "{} samples make no feature frame (at least {} are needed)",
                pcm.len(),
                self.extractor.config().hop_length
            )));
        }
        MelFeatures::new(f.n_mels, f.n_frames, f.data)
    }

    /// How much the encoder and the prefill take per run.
    pub fn run_limits(&self) -> RunLimits {
        self.limits
    }

    /// Sets how much the encoder and the prefill take per run (the result is the same, up to float rounding).
    pub fn set_run_limits(&mut self, limits: RunLimits) -> Result<(), SpeechError> {
        if limits.encoder_chunks == 0 || limits.prefill_tokens == 0 {
            return Err(SpeechError::Options(format!("run limits must be positive: {limits:?}")));
        }
        self.limits = limits;
        Ok(())
    }

    /// Runs the audio encoder on `features` (the whole clip: its 100-frame chunks and attention windows), whole
    /// attention windows at a time, at most [`RunLimits::encoder_chunks`] chunks per run when a window is smaller.
    pub fn encode(&mut self, features: &MelFeatures) -> Result<AudioEmbeddings, SpeechError> {
        if features.mel_bins != self.config.mel_bins {
            return Err(SpeechError::Features(format!(
                "{} mel bins, the model takes {} (config.json num_mel_bins)",
                features.mel_bins, self.config.mel_bins
            )));
        }
        if features.frames == 0 {
            return Err(SpeechError::Features("no frames".into()));
        }
        let layout = self.config.layout(features.frames);
        let chunks_per_window = self.config.n_window_infer / self.config.chunk_frames();
        let windows_per_run = (self.limits.encoder_chunks / chunks_per_window).max(1);
        let mask = layout.window_mask();
        let mut data = Vec::with_capacity(layout.tokens * self.config.hidden);
        for first in (0..layout.windows).step_by(windows_per_run) {
            let windows = windows_per_run.min(layout.windows - first);
            let chunks =
                (first * chunks_per_window..(first + windows) * chunks_per_window).take_while(|&c| c < layout.chunks);
            let rows = &mask[first * layout.window_tokens..(first + windows) * layout.window_tokens];
            let expected = rows.iter().sum::<i64>() as usize;
            let out = self.encode_run(features, &layout, chunks, windows, rows.to_vec())?;
            if out.len() != expected * self.config.hidden {
                return Err(SpeechError::Features(format!(
                    "the audio encoder returned {} values, expected {expected} tokens of {}",
                    out.len(),
                    self.config.hidden
                )));
            }
            data.extend(out);
        }
        Ok(AudioEmbeddings { tokens: layout.tokens, width: self.config.hidden, data })
    }

    /// One encoder run over `chunks` (the chunks of `windows` whole windows).
    fn encode_run(
        &mut self,
        features: &MelFeatures,
        layout: &AudioLayout,
        chunks: impl Iterator<Item = usize>,
        windows: usize,
        mask: Vec<i64>,
    ) -> Result<Vec<f32>, SpeechError> {
        let (m, t, chunk) = (features.mel_bins, layout.chunk_frames, self.config.chunk_frames());
        let mut data = vec![];
        let mut n = 0;
        for c in chunks {
            let start = c * chunk;
            let len = (features.frames - start).min(t);
            let base = data.len();
            data.resize(base + m * t, 0.0f32);
            for bin in 0..m {
                let src = &features.data[bin * features.frames + start..bin * features.frames + start + len];
                data[base + bin * t..base + bin * t + len].copy_from_slice(src);
            }
            n += 1;
        }
        let features_in =
            NamedTensor::new("input_features", vec![n, m, t], TensorData::F32(data)).map_err(SpeechError::Features)?;
        let mask = NamedTensor::new("window_mask", vec![windows, layout.window_tokens], TensorData::I64(mask))
            .map_err(SpeechError::Features)?;
        let out = self.encoder.run(&[features_in, mask])?;
        Ok(take_f32(out, "audio_embeds")?.1)
    }

    /// Empty key/value caches.
    fn empty_state(&self) -> DecoderState {
        let (kv, d) = (self.config.kv_heads, self.config.head_dim);
        let mut inputs = vec![
            NamedTensor { name: "input_ids".into(), shape: vec![1, 0], data: TensorData::I64(vec![]) },
            self.no_audio(),
        ];
        for l in 0..self.config.layers {
            for kind in ["key", "value"] {
                inputs.push(NamedTensor {
                    name: format!("past_{kind}.{l}"),
                    shape: vec![1, kv, 0, d],
                    data: TensorData::F32(vec![]),
                });
            }
        }
        DecoderState { inputs, past: 0, calls: vec![] }
    }

    /// The `audio_embeds` of a run without audio: no rows (a generated `<|audio_pad|>` keeps its token embedding).
    fn no_audio(&self) -> NamedTensor {
        NamedTensor { name: "audio_embeds".into(), shape: vec![0, self.config.hidden], data: TensorData::F32(vec![]) }
    }

    /// Runs the prompt `ids` with `audio` in place of its `<|audio_pad|>` tokens, at most
    /// [`RunLimits::prefill_tokens`] tokens per run; returns the caches and the logits of the last position.
    pub(crate) fn prefill(
        &mut self,
        ids: &[i64],
        audio: &AudioEmbeddings,
    ) -> Result<(DecoderState, Vec<f32>), SpeechError> {
        let mut state = self.empty_state();
        let mut logits = vec![];
        let mut used = 0;
        for stretch in ids.chunks(self.limits.prefill_tokens) {
            let n = stretch.iter().filter(|&&i| i == self.config.audio_token_id).count();
            if used + n > audio.tokens {
                return Err(SpeechError::Features(format!(
                    "the prompt holds more <|audio_pad|> tokens than the {} audio tokens",
                    audio.tokens
                )));
            }
            let w = audio.width;
            state.inputs[1] = if n == 0 {
                self.no_audio()
            } else {
                let rows = audio.data[used * w..(used + n) * w].to_vec();
                NamedTensor::new("audio_embeds", vec![n, w], TensorData::F32(rows)).map_err(SpeechError::Features)?
            };
            used += n;
            logits = self.step(&mut state, stretch)?;
        }
        state.inputs[1] = self.no_audio();
        Ok((state, logits))
    }

    /// Feeds `ids` after the cached tokens of `state` (with its `audio_embeds`); returns the logits of the last
    /// position.
    pub(crate) fn step(&mut self, state: &mut DecoderState, ids: &[i64]) -> Result<Vec<f32>, SpeechError> {
        state.inputs[0] =
            NamedTensor { name: "input_ids".into(), shape: vec![1, ids.len()], data: TensorData::I64(ids.to_vec()) };
        let out = self.decoder.run(&state.inputs)?;
        self.absorb(state, out, ids.len())
    }

    /// Moves a run's present keys and values into `state` as the next run's past ones; returns the logits.
    fn absorb(&self, state: &mut DecoderState, mut out: Vec<NamedTensor>, fed: usize) -> Result<Vec<f32>, SpeechError> {
        state.calls.push(DecoderCall { new_tokens: fed, past: state.past });
        for l in 0..self.config.layers {
            for (k, kind) in ["key", "value"].into_iter().enumerate() {
                let name = format!("present_{kind}.{l}");
                let i = out.iter().position(|t| t.name == name).ok_or_else(|| missing(&name))?;
                let present = std::mem::replace(&mut out[i].data, TensorData::F32(vec![]));
                let slot = &mut state.inputs[2 + 2 * l + k];
                slot.shape = out[i].shape.clone();
                slot.data = present;
            }
        }
        state.past += fed;
        let (_, logits) = take_f32(out, "logits")?;
        Ok(logits)
    }
}

/// The stop tokens: `<|im_end|>` and `<|endoftext|>` by their text (the ids the reference's `generate` stops at in
/// the released checkpoints), and `<|audio_pad|>` checked against config.json's `audio_token_id`.
fn specials(folder: &Path, tok: &tokenizers::Tokenizer, config: &Qwen3AsrConfig) -> Result<Specials, SpeechError> {
    let path = folder.join("tokenizer.json");
    let eos: Vec<i64> =
        ["<|im_end|>", "<|endoftext|>"].iter().filter_map(|t| tok.token_to_id(t)).map(i64::from).collect();
    if eos.is_empty() {
        return Err(SpeechError::Tokenizer {
            path,
            reason: "has neither <|im_end|> nor <|endoftext|>: not a Qwen3-ASR tokenizer".into(),
        });
    }
    match tok.token_to_id("<|audio_pad|>").map(i64::from) {
        Some(id) if id == config.audio_token_id => {}
        found => {
            return Err(SpeechError::Config {
                path: folder.join("config.json"),
                field: "thinker_config.audio_token_id".into(),
                reason: format!(
                    "is {}, but the tokenizer's <|audio_pad|> is {}",
                    config.audio_token_id,
                    found.map_or("missing".to_string(), |i| i.to_string())
                ),
            })
        }
    }
    if let Some(bad) = eos.iter().find(|&&id| id as usize >= config.vocab) {
        return Err(SpeechError::Tokenizer {
            path,
            reason: format!("token {bad} is past the model's {} tokens (vocab_size)", config.vocab),
        });
    }
    Ok(Specials { eos })
}

/// Says so when generation_config.json asks for more than greedy decoding: bulkhead decodes greedily (the package's
/// vLLM backend runs at temperature 0, and its transformers backend greedily unless the folder asks otherwise).
fn warn_on_sampling(folder: &Path) {
    let path = folder.join("generation_config.json");
    let Some(v) = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    else {
        return;
    };
    let mut ignored = vec![];
    if v.get("do_sample").and_then(serde_json::Value::as_bool) == Some(true) {
        ignored.push("do_sample");
    }
    if v.get("repetition_penalty").and_then(serde_json::Value::as_f64).is_some_and(|p| p != 1.0) {
        ignored.push("repetition_penalty");
    }
    if v.get("no_repeat_ngram_size").and_then(serde_json::Value::as_u64).is_some_and(|n| n > 0) {
        ignored.push("no_repeat_ngram_size");
    }
    if v.get("num_beams").and_then(serde_json::Value::as_u64).is_some_and(|n| n > 1) {
        ignored.push("num_beams");
    }
    if !ignored.is_empty() {
        tracing::warn!(file = %path.display(), fields = ?ignored, "bulkhead decodes Qwen3-ASR greedily; these settings are not applied");
    }
}

fn missing(name: &str) -> SpeechError {
    SpeechError::Features(format!("the graph has no output `{name}`; rebuild it (clear bulkhead's graph cache)"))
}

fn take_f32(out: Vec<NamedTensor>, name: &str) -> Result<(Vec<usize>, Vec<f32>), SpeechError> {
    let t = out.into_iter().find(|t| t.name == name).ok_or_else(|| missing(name))?;
    match t.data {
        TensorData::F32(v) => Ok((t.shape, v)),
        _ => Err(SpeechError::Features(format!("output `{name}` is not float32"))),
    }
}
