//! Speech models in a worker: the folder loaded on its unit (Whisper on the `ort:` and `candle:` units, Qwen3-ASR on
//! the `ort:` units), its log-mel features computed from the PCM the server decoded, the transcription run (Whisper:
//! greedily first, then along the request's temperature fallback; Qwen3-ASR: greedily), and a short probe audio
//! through the same path for warm-up and health probes.
//!
//! [`SpeechModel`] is the one dispatch point between kinds of speech model (Whisper, Qwen3-ASR): a new kind adds a
//! variant and an arm in each of its methods.

use std::time::Instant;

use bulkhead_audio::{FeatureConfig, FeatureExtractor, Padding, PREPROCESSOR_CONFIG};
use bulkhead_core::{EngineKind, ModelFiles, SessionReport, Unit};
use bulkhead_embed::{Engines, StageTiming};
use bulkhead_speech::{Fallback, MelFeatures, Qwen3AsrModel, SpeechError, Task, TranscribeOptions, WhisperModel};

use crate::audio::{
    AudioRequest, FallbackChecks, SpeechOptions, SpeechTask, SpeechTiming, Transcript, TranscriptSegment,
};
use crate::protocol::{LoadFailureKind, RunError, WarmupShape};

use super::runner::LoadFailure;

/// Seconds of the probe audio (warm-up and health probes).
const PROBE_SECONDS: f64 = 1.0;

/// A loaded speech model, by kind.
pub(crate) enum SpeechModel {
    /// Whisper (`WhisperForConditionalGeneration`): ONNX Runtime's graphs or candle's own model, one decoding.
    Whisper(Box<WhisperModel>),
    /// Qwen3-ASR (`Qwen3ASRForConditionalGeneration`): its own features, pieces of up to 20 minutes, no timestamps
    /// inside a piece and no translation (refused as invalid options).
    Qwen3Asr(Box<Qwen3AsrModel>),
}

/// What a transcription gives the runner: text, language, segments, and the features' and encoder's milliseconds.
type Transcribed = (String, Option<String>, Vec<TranscriptSegment>, f64, f64);

/// Whether the folder holds a Qwen3-ASR model (its `config.json` says `model_type: qwen3_asr`).
fn is_qwen3_asr(files: &ModelFiles) -> bool {
    let config = files.config.as_deref().and_then(|p| std::fs::read(p).ok());
    let value: Option<serde_json::Value> = config.and_then(|b| serde_json::from_slice(&b).ok());
    value.is_some_and(|v| v.get("model_type").and_then(|t| t.as_str()) == Some("qwen3_asr"))
}

impl SpeechModel {
    /// What runs it (the decoder's session report).
    fn report(&self) -> &SessionReport {
        match self {
            SpeechModel::Whisper(m) => m.report(),
            SpeechModel::Qwen3Asr(m) => m.report(),
        }
    }

    /// Transcribes mono PCM at the model's rate: (text, language, segments, features and encoder milliseconds).
    /// Whisper's features come from `extractor` (one window or less padded to 30 s, as transformers' default;
    /// longer audio, every frame: its long-form input); Qwen3-ASR computes its own per piece.
    fn transcribe(
        &mut self,
        extractor: &FeatureExtractor,
        pcm: &[f32],
        options: &SpeechOptions,
    ) -> Result<Transcribed, SpeechError> {
        let segments = |t: &bulkhead_speech::Transcription| -> Vec<TranscriptSegment> {
            t.segments
                .iter()
                .map(|s| TranscriptSegment {
                    start: s.start,
                    end: s.end,
                    text: s.text.clone(),
                    tokens: s.token_ids.clone(),
                    decoding: s.decoding,
                })
                .collect()
        };
        let c = options.checks;
        let fallback = Some(Fallback {
            compression_ratio_threshold: c.compression_ratio_threshold,
            logprob_threshold: c.logprob_threshold,
            no_speech_threshold: c.no_speech_threshold,
            seed: options.seed,
            ..Fallback::starting_at(options.temperature)
        });
        let task = Some(match options.task {
            SpeechTask::Transcribe => Task::Transcribe,
            SpeechTask::Translate => Task::Translate,
        });
        match self {
            SpeechModel::Whisper(m) => {
                let t = Instant::now();
                let padding =
                    if pcm.len() <= extractor.config().n_samples { Padding::MaxLength } else { Padding::Longest };
                let f = extractor.extract(pcm, padding);
                let features = MelFeatures::new(f.n_mels, f.n_frames, f.data)?;
                let features_ms = t.elapsed().as_secs_f64() * 1e3;
                let opts = TranscribeOptions {
                    language: options.language.clone(),
                    task,
                    timestamps: options.timestamps,
                    prompt: options.prompt.clone(),
                    max_new_tokens: None,
                    fallback,
                };
                let t = m.transcribe(&features, &opts)?;
                Ok((t.text.clone(), t.language.clone(), segments(&t), features_ms, t.encode_ms))
            }
            SpeechModel::Qwen3Asr(m) => {
                // Segments are its pieces (start and end in seconds); it writes no timestamps inside one.
                let opts = TranscribeOptions {
                    language: options.language.clone(),
                    task,
                    timestamps: None,
                    prompt: options.prompt.clone(),
                    max_new_tokens: None,
                    fallback,
                };
                let t = m.transcribe_pcm(pcm, &opts)?;
                Ok((t.text.clone(), t.language.clone(), segments(&t), t.features_ms, t.encode_ms))
            }
        }
    }
}

/// A speech model with its feature extractor and probe audio.
pub(crate) struct SpeechRunner {
    model: SpeechModel,
    extractor: FeatureExtractor,
    probe: AudioRequest,
}

impl SpeechRunner {
    /// Loads the speech model of `files` on `unit` and warms it up on the probe audio once: a transcription is a
    /// whole decoding (up to the model's length limit), so the first run, one-time costs included, is the
    /// measurement (`iterations`, meant for short forward passes, is not repeated here).
    pub fn load(
        engines: &Engines,
        files: &ModelFiles,
        unit: &Unit,
        on_loaded: impl FnOnce(&SessionReport),
    ) -> Result<(SpeechRunner, Vec<WarmupShape>), LoadFailure> {
        let qwen3_asr = is_qwen3_asr(files);
        if unit.engine != EngineKind::Ort && qwen3_asr {
            return Err(LoadFailure::new(
                LoadFailureKind::Unsupported,
                format!(
                    "{unit} does not run Qwen3-ASR (it runs on the ort: units; candle runs Whisper only); the chain \
                     falls through"
                ),
            ));
        }
        let engine = engines.engine(unit).map_err(|e| LoadFailure::new(LoadFailureKind::from(&e), e.to_string()))?;
        let folder = files.source.clone();
        let config_path = folder.join(PREPROCESSOR_CONFIG);
        let extractor = FeatureConfig::from_file(&config_path)
            .and_then(FeatureExtractor::new)
            .map_err(|e| LoadFailure::new(LoadFailureKind::ModelRejected, e.to_string()))?;
        let failure = |e: SpeechError| {
            let kind = match &e {
                SpeechError::Engine(engine) => LoadFailureKind::from(engine),
                _ => LoadFailureKind::ModelRejected,
            };
            LoadFailure::new(kind, e.to_string())
        };
        let model = if qwen3_asr {
            SpeechModel::Qwen3Asr(Box::new(Qwen3AsrModel::load(&folder, engine, unit).map_err(failure)?))
        } else {
            SpeechModel::Whisper(Box::new(WhisperModel::load(&folder, engine, unit).map_err(failure)?))
        };
        let mut runner = SpeechRunner { model, probe: probe(extractor.sampling_rate()), extractor };
        on_loaded(runner.report());
        let probe = runner.probe.clone();
        let t = Instant::now();
        runner
            .transcribe(&probe)
            .map_err(|e| LoadFailure::new(LoadFailureKind::Inference, format!("warm-up failed: {e}")))?;
        let shape = WarmupShape { batch: 1, seq: probe.windows(), ms: t.elapsed().as_secs_f64() * 1e3 };
        Ok((runner, vec![shape]))
    }

    /// What runs it.
    pub fn report(&self) -> &SessionReport {
        self.model.report()
    }

    /// Transcribes the probe audio.
    pub fn probe_answer(&mut self) -> Result<(Transcript, StageTiming), RunError> {
        let probe = self.probe.clone();
        self.answer(&probe)
    }

    /// Transcribes `audio`: the transcript and the stage timing (`infer_ms` is the whole worker time).
    pub fn answer(&mut self, audio: &AudioRequest) -> Result<(Transcript, StageTiming), RunError> {
        let t = Instant::now();
        let transcript = self.transcribe(audio)?;
        let timing = StageTiming { infer_ms: t.elapsed().as_secs_f64() * 1e3, ..StageTiming::default() };
        Ok((transcript, timing))
    }

    fn transcribe(&mut self, audio: &AudioRequest) -> Result<Transcript, RunError> {
        let rate = self.extractor.sampling_rate();
        if audio.rate != rate {
            return Err(RunError::Invalid(format!("audio at {} Hz; the model takes {rate} Hz", audio.rate)));
        }
        if audio.samples.is_empty() {
            return Err(RunError::Invalid("the audio has no samples".into()));
        }
        let t = Instant::now();
        let (text, language, segments, features_ms, encode_ms) =
            self.model.transcribe(&self.extractor, &audio.samples, &audio.options).map_err(|e| match e {
                SpeechError::Language(_) | SpeechError::Options(_) | SpeechError::Features(_) => {
                    RunError::Invalid(e.to_string())
                }
                other => RunError::Engine(other.to_string()),
            })?;
        let total_ms = t.elapsed().as_secs_f64() * 1e3;
        let timing =
            SpeechTiming { features_ms, encode_ms, generate_ms: (total_ms - features_ms - encode_ms).max(0.0) };
        Ok(Transcript { text, language, duration_s: audio.duration_s(), segments, timing })
    }
}

/// The probe audio: [`PROBE_SECONDS`] of a quiet 440 Hz tone at `rate` Hz, with the default options (what a live
/// request without options asks for) but the fallback checks off: one greedy decoding, whatever the tone scores.
fn probe(rate: u32) -> AudioRequest {
    let n = (PROBE_SECONDS * f64::from(rate)) as usize;
    let samples = (0..n)
        .map(|i| (0.1 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / f64::from(rate)).sin()) as f32)
        .collect();
    let checks =
        FallbackChecks { compression_ratio_threshold: None, logprob_threshold: None, no_speech_threshold: None };
    AudioRequest { samples, rate, options: SpeechOptions { checks, ..SpeechOptions::default() } }
}
