//! What a speech payload carries and what its answer holds: decoded mono PCM with the request's options
//! ([`AudioRequest`]) in, a [`Transcript`] out. The server decodes and resamples the file (so a bad file is refused
//! before any worker sees it); the worker computes the features, runs the encoder and decodes.

use serde::{Deserialize, Serialize};

/// Seconds of audio per decoding window (Whisper's 30 s): what the cost of a transcription scales with, and the
/// unit of its shape for the watchdog ([`AudioRequest::windows`]).
pub const WINDOW_SECONDS: f64 = 30.0;

/// What the model does with the speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpeechTask {
    /// Text in the spoken language.
    #[default]
    Transcribe,
    /// English text.
    Translate,
}

impl SpeechTask {
    /// `transcribe` or `translate`.
    pub fn name(self) -> &'static str {
        match self {
            SpeechTask::Transcribe => "transcribe",
            SpeechTask::Translate => "translate",
        }
    }
}

/// The options of one transcription, as the request gave them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SpeechOptions {
    /// The spoken language (a code such as `de`, or an English name); `None`: detected by a multilingual model.
    pub language: Option<String>,
    /// Transcribe or translate.
    pub task: SpeechTask,
    /// Text the decoding is conditioned on (earlier speech, spellings of names).
    pub prompt: Option<String>,
    /// The first temperature of Whisper's fallback schedule: 0 decodes greedily first, then falls back along 0.2,
    /// 0.4, ..., 1.0 while a window fails the [`FallbackChecks`]; a value above 0 starts the schedule there (steps of
    /// 0.2 up to 1.0). Qwen3-ASR decodes greedily and refuses a value above 0.
    pub temperature: f32,
    /// Where the random draws at temperatures above 0 start: the same audio, options and number give the same text.
    #[serde(default)]
    pub seed: u64,
    /// When a window is decoded again at the next temperature, or skipped as silence.
    #[serde(default)]
    pub checks: FallbackChecks,
    /// Timestamps: `Some(true)` for segment times, `None` for the model's default (its generation config).
    pub timestamps: Option<bool>,
}

/// The quality checks of Whisper's temperature fallback (openai-whisper's `transcribe` defaults); `None` turns a
/// check off, and all three off leave greedy decoding alone.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FallbackChecks {
    /// A window whose compression ratio is above this is decoded again (default 2.4).
    pub compression_ratio_threshold: Option<f64>,
    /// A window whose average log-probability is below this is decoded again (default -1.0).
    pub logprob_threshold: Option<f64>,
    /// A window with a no-speech probability above this and a low log-probability is skipped (default 0.6).
    pub no_speech_threshold: Option<f64>,
}

impl FallbackChecks {
    /// Every check off: greedy decoding, one pass per window.
    pub const OFF: FallbackChecks =
        FallbackChecks { compression_ratio_threshold: None, logprob_threshold: None, no_speech_threshold: None };
}

impl Default for FallbackChecks {
    fn default() -> Self {
        FallbackChecks {
            compression_ratio_threshold: Some(2.4),
            logprob_threshold: Some(-1.0),
            no_speech_threshold: Some(0.6),
        }
    }
}

/// One audio to transcribe: mono PCM at the model's sampling rate, and the options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioRequest {
    /// The samples, nominally in [-1, 1].
    pub samples: Vec<f32>,
    /// Samples per second (the model's feature extractor rate: the server resamples before sending).
    pub rate: u32,
    /// What to do with it.
    pub options: SpeechOptions,
}

impl AudioRequest {
    /// The duration in seconds.
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / f64::from(self.rate.max(1))
    }

    /// The 30-second windows the audio spans (at least 1): the width of its shape, so that the watchdog's deadline
    /// scales with the audio as the decoding does.
    pub fn windows(&self) -> usize {
        ((self.duration_s() / WINDOW_SECONDS).ceil() as usize).max(1)
    }
}

/// A stretch of the transcript between two times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptSegment {
    /// Start, seconds from the beginning of the audio.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// Its text.
    pub text: String,
    /// Its token ids (timestamp tokens included when they were generated).
    pub tokens: Vec<i64>,
    /// How its window was decoded: temperature, average log-probability, compression ratio, no-speech probability
    /// (Whisper; `None` for Qwen3-ASR).
    #[serde(default)]
    pub decoding: Option<bulkhead_speech::WindowDecoding>,
}

/// Milliseconds per stage of one transcription in the worker.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct SpeechTiming {
    /// PCM to log-mel features.
    pub features_ms: f64,
    /// The encoder, every window.
    pub encode_ms: f64,
    /// The decoder, every step of every window (language detection, cross-attention keys and values included).
    pub generate_ms: f64,
}

/// What a speech model answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// The text.
    pub text: String,
    /// The language of the prefix (given or detected); `None` for an English-only model.
    pub language: Option<String>,
    /// The audio's duration in seconds.
    pub duration_s: f64,
    /// The segments, in order.
    pub segments: Vec<TranscriptSegment>,
    /// Where the time went.
    pub timing: SpeechTiming,
}
