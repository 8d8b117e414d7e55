//! A Whisper folder loaded on one unit: its settings, its tokenizer and its [`WhisperSession`]: the engine's own
//! encoder-decoder ([`Engine::load_whisper`], candle's) or, for the engines without one (ONNX Runtime), the three
//! graphs of `bulkhead-graph` (encoder, cross-attention keys and values, decoder step). The session keeps the
//! key/value caches a decoding carries from step to step; the decoding itself (`decode`) is the same for both.

use std::path::{Path, PathBuf};

use bulkhead_core::{Engine, ModelFiles, SessionReport, Tensor, Unit, WhisperSession};
use bulkhead_graph::whisper::{self, WhisperConfig, WhisperGraphs};

use crate::decode::DecoderCall;
use crate::files::{self, FeatureSettings};
use crate::graphs::GraphWhisper;
use crate::{GenerationSettings, SpeechError};

/// Log-mel features of one audio, `[mel_bins, frames]` row-major, as `WhisperFeatureExtractor` returns them (3000
/// frames for up to 30 s; more for longer audio, which is decoded window by window).
#[derive(Debug, Clone, PartialEq)]
pub struct MelFeatures {
    /// Mel bins (rows).
    pub mel_bins: usize,
    /// Frames (columns), 100 per second.
    pub frames: usize,
    /// `mel_bins · frames` values.
    pub data: Vec<f32>,
}

impl MelFeatures {
    /// Features from their values, checking the size.
    pub fn new(mel_bins: usize, frames: usize, data: Vec<f32>) -> Result<MelFeatures, SpeechError> {
        if mel_bins.checked_mul(frames) != Some(data.len()) {
            return Err(SpeechError::Features(format!(
                "{} values do not make {mel_bins} mel bins × {frames} frames",
                data.len()
            )));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(SpeechError::Features(format!("value {i} is not finite ({})", data[i])));
        }
        Ok(MelFeatures { mel_bins, frames, data })
    }

    /// The window of `window` frames from frame `start` (at most `len` of them), zero-padded to `window` frames as
    /// transformers pads a window cut out of longer features.
    pub(crate) fn window(&self, start: usize, len: usize, window: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; self.mel_bins * window];
        let len = len.min(self.frames.saturating_sub(start)).min(window);
        for m in 0..self.mel_bins {
            let src = &self.data[m * self.frames + start..m * self.frames + start + len];
            out[m * window..m * window + len].copy_from_slice(src);
        }
        out
    }
}

/// The encoder's output for one 30-second window: `[positions, d_model]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderOutput {
    /// Encoder positions (`max_source_positions`, 1500).
    pub positions: usize,
    /// `d_model`.
    pub width: usize,
    /// The values.
    pub data: Vec<f32>,
}

/// A decoding in progress: the tokens in the session's caches and every decoder run.
pub(crate) struct DecoderState {
    /// Tokens in the caches.
    pub past: usize,
    /// Every decoder run: new tokens and past length.
    pub calls: Vec<DecoderCall>,
}

/// A Whisper model loaded on one unit.
pub struct WhisperModel {
    folder: PathBuf,
    config: WhisperConfig,
    generation: GenerationSettings,
    features: FeatureSettings,
    pub(crate) tokenizer: tokenizers::Tokenizer,
    session: Box<dyn WhisperSession>,
    /// The built graphs, when the session runs them (`None` for an engine's own Whisper).
    graphs: Option<WhisperGraphs>,
    /// Milliseconds in the encoder since the current transcription started.
    pub(crate) encode_ms: f64,
}

impl WhisperModel {
    /// Loads the Whisper folder `folder` on `unit` of `engine`: the engine's own Whisper when it has one (candle's),
    /// else graphs built by `bulkhead-graph` (ONNX Runtime), cached under bulkhead's cache directory (`graphs/`,
    /// shared with the embedding models).
    pub fn load(folder: &Path, engine: &dyn Engine, unit: &Unit) -> Result<WhisperModel, SpeechError> {
        let cache = bulkhead_core::install::cache_dir().join("graphs");
        Self::load_with_cache(folder, engine, unit, &cache)
    }

    /// [`WhisperModel::load`] with the graphs cached in `cache_dir`.
    pub fn load_with_cache(
        folder: &Path,
        engine: &dyn Engine,
        unit: &Unit,
        cache_dir: &Path,
    ) -> Result<WhisperModel, SpeechError> {
        let model = ModelFiles::open(folder)?;
        let config = whisper::read_config(&model)?;
        let generation = GenerationSettings::read(folder)?;
        files::check_ids(&generation, config.vocab)?;
        let features = FeatureSettings::read(folder)?;
        if features.mel_bins != config.mel_bins {
            return Err(SpeechError::Config {
                path: features.path.clone(),
                field: "feature_size".into(),
                reason: format!("is {}, but config.json's num_mel_bins is {}", features.mel_bins, config.mel_bins),
            });
        }
        if features.frames != config.frames() {
            return Err(SpeechError::Config {
                path: features.path.clone(),
                field: "nb_max_frames".into(),
                reason: format!(
                    "is {}, but the encoder takes {} frames (2 × config.json's max_source_positions)",
                    features.frames,
                    config.frames()
                ),
            });
        }
        let tokenizer = files::tokenizer(folder)?;
        let (session, graphs): (Box<dyn WhisperSession>, _) = match engine.load_whisper(&model, unit) {
            Some(session) => (session?, None),
            None => {
                let (session, graphs) = GraphWhisper::load(&model, &config, engine, unit, cache_dir)?;
                (Box::new(session), Some(graphs))
            }
        };
        Ok(WhisperModel {
            folder: folder.to_path_buf(),
            session,
            graphs,
            config,
            generation,
            features,
            tokenizer,
            encode_ms: 0.0,
        })
    }

    /// The model's folder.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// config.json.
    pub fn config(&self) -> &WhisperConfig {
        &self.config
    }

    /// generation_config.json.
    pub fn generation(&self) -> &GenerationSettings {
        &self.generation
    }

    /// The feature extractor's settings.
    pub fn feature_settings(&self) -> &FeatureSettings {
        &self.features
    }

    /// The built graphs (paths, cache hits); `None` when the engine runs its own Whisper (candle).
    pub fn graphs(&self) -> Option<&WhisperGraphs> {
        self.graphs.as_ref()
    }

    /// What runs the decoder (unit, runtime, node placement); the encoder's is [`WhisperModel::encoder_report`].
    pub fn report(&self) -> &SessionReport {
        self.session.report()
    }

    /// What runs the encoder.
    pub fn encoder_report(&self) -> &SessionReport {
        self.session.encoder_report()
    }

    /// Runs the encoder on the first window of `features` (`2 · max_source_positions` frames from frame 0; shorter
    /// features are zero-padded, as transformers pads a window).
    pub fn encode(&mut self, features: &MelFeatures) -> Result<EncoderOutput, SpeechError> {
        self.check(features)?;
        self.encode_window(features, 0)
    }

    fn check(&self, features: &MelFeatures) -> Result<(), SpeechError> {
        if features.mel_bins != self.config.mel_bins {
            return Err(SpeechError::Features(format!(
                "{} mel bins, the model takes {} (config.json num_mel_bins)",
                features.mel_bins, self.config.mel_bins
            )));
        }
        if features.frames == 0 {
            return Err(SpeechError::Features("no frames".into()));
        }
        Ok(())
    }

    /// The encoder output of the window starting at frame `seek`.
    pub(crate) fn encode_window(&mut self, features: &MelFeatures, seek: usize) -> Result<EncoderOutput, SpeechError> {
        let window = self.config.frames();
        let data = features.window(seek, window, window);
        let input = Tensor::new(vec![self.config.mel_bins, window], data).map_err(SpeechError::Features)?;
        let started = std::time::Instant::now();
        let out = self.session.encode(&input)?;
        self.encode_ms += started.elapsed().as_secs_f64() * 1e3;
        if out.shape.len() != 2 || out.shape[1] != self.config.d_model {
            return Err(SpeechError::Features(format!(
                "the encoder returned shape {:?}, expected [positions, {}]",
                out.shape, self.config.d_model
            )));
        }
        Ok(EncoderOutput { positions: out.shape[0], width: out.shape[1], data: out.data })
    }

    /// A fresh decoding over `encoded`: the cross-attention keys and values computed once, empty caches.
    pub(crate) fn start(&mut self, encoded: &EncoderOutput) -> Result<DecoderState, SpeechError> {
        let hidden =
            Tensor::new(vec![encoded.positions, encoded.width], encoded.data.clone()).map_err(SpeechError::Features)?;
        self.session.start(&hidden)?;
        Ok(DecoderState { past: 0, calls: vec![] })
    }

    /// Feeds `ids` after the cached tokens of `state`; returns the logits of the last position.
    pub(crate) fn step(&mut self, state: &mut DecoderState, ids: &[i64]) -> Result<Vec<f32>, SpeechError> {
        let logits = self.session.step(ids)?;
        state.calls.push(DecoderCall { new_tokens: ids.len(), past: state.past });
        state.past += ids.len();
        if logits.len() != self.config.vocab {
            return Err(SpeechError::Features(format!(
                "the decoder returned {} logits, expected vocab_size {}",
                logits.len(),
                self.config.vocab
            )));
        }
        Ok(logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_cut_and_zero_padded() {
        let f = MelFeatures::new(2, 3, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        assert_eq!(f.window(0, 4, 4), vec![1.0, 2.0, 3.0, 0.0, 4.0, 5.0, 6.0, 0.0]);
        assert_eq!(f.window(1, 1, 2), vec![2.0, 0.0, 5.0, 0.0]);
        assert!(MelFeatures::new(2, 2, vec![0.0; 3]).is_err());
        assert!(MelFeatures::new(1, 1, vec![f32::NAN]).unwrap_err().to_string().contains("not finite"));
    }
}
