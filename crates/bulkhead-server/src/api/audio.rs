//! The wire types of the speech routes (`POST /v1/audio/transcriptions`, `POST /v1/audio/translations`), as
//! OpenAI defines them: the multipart form ([`TranscriptionForm`], documented for the OpenAPI document; the handler
//! reads the fields one by one), the `response_format`s ([`ResponseFormat`]) and what each returns: `{"text"}`
//! ([`TranscriptionResponse`]), the verbose form with segments ([`VerboseTranscription`]), plain text, SubRip and
//! WebVTT ([`srt`], [`vtt`]).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a speech route returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    /// `{"text": ...}`.
    #[default]
    Json,
    /// The text alone (`text/plain`).
    Text,
    /// SubRip subtitles, one cue per segment (`text/plain`).
    Srt,
    /// WebVTT subtitles, one cue per segment (`text/vtt`).
    Vtt,
    /// The text, the language, the duration and the segments with their times.
    VerboseJson,
}

impl ResponseFormat {
    /// Every format, as the form names it.
    pub const NAMES: &'static str = "json, text, srt, vtt, verbose_json";

    /// The format the form's `response_format` names; `None` for an unknown one.
    pub fn parse(name: &str) -> Option<ResponseFormat> {
        Some(match name.trim() {
            "json" => ResponseFormat::Json,
            "text" => ResponseFormat::Text,
            "srt" => ResponseFormat::Srt,
            "vtt" => ResponseFormat::Vtt,
            "verbose_json" => ResponseFormat::VerboseJson,
            _ => return None,
        })
    }

    /// Whether the format shows segment times (the decoding then asks for timestamps).
    pub fn timed(self) -> bool {
        matches!(self, ResponseFormat::Srt | ResponseFormat::Vtt | ResponseFormat::VerboseJson)
    }
}

/// The multipart form of both speech routes (OpenAI's). `file` is required; unknown fields are ignored.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct TranscriptionForm {
    /// The audio file: WAV, FLAC, MP3, Ogg Vorbis or M4A/AAC (any rate, any channels: mixed to mono and resampled).
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// The served speech model (default: the default model, or the first speech model served).
    pub model: Option<String>,
    /// The spoken language: a code (`de`) or an English name (`german`); detected when absent.
    pub language: Option<String>,
    /// Text to condition the decoding on (earlier speech, spellings).
    pub prompt: Option<String>,
    /// What to return (default `json`).
    pub response_format: Option<ResponseFormat>,
    /// Sampling temperature, 0 to 1 (Whisper). 0 (the default): greedy decoding first, then, for a 30-second window
    /// whose text repeats itself (zlib compression ratio of its tokens above 2.4) or is improbable (average
    /// log-probability below -1), decoded again at 0.2, 0.4, ... up to 1.0 until it passes; a window that is improbable
    /// and probably silent (no-speech probability above 0.6) is skipped. A value above 0 starts that schedule there.
    /// `verbose_json` segments say which temperature was kept. Qwen3-ASR decodes greedily and takes only 0.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub temperature: Option<f32>,
    /// Where the random draws at temperatures above 0 start (a bulkhead extension; default 0): the same file,
    /// options and number give the same text.
    pub seed: Option<u64>,
    /// A window whose zlib compression ratio is above this is decoded at the next temperature (a bulkhead extension,
    /// as openai-whisper's option; default 2.4; `none` turns the check off).
    pub compression_ratio_threshold: Option<String>,
    /// A window whose average log-probability is below this is decoded at the next temperature (default -1.0;
    /// `none`: off).
    pub logprob_threshold: Option<String>,
    /// A window with a no-speech probability above this and a low log-probability is skipped (default 0.6;
    /// `none`: never). With all three `none`, decoding is greedy only.
    pub no_speech_threshold: Option<String>,
    /// `segment` (with `verbose_json`); `word` is not served.
    #[serde(rename = "timestamp_granularities[]")]
    pub timestamp_granularities: Option<Vec<String>>,
    /// How long the model stays loaded once idle after this request (models loaded on demand): seconds or a
    /// duration such as `5m`; `0` unloads it after this request, negative never.
    pub keep_alive: Option<String>,
}

/// `json`: the text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TranscriptionResponse {
    /// The transcription (or translation).
    pub text: String,
}

/// `verbose_json`: the text with its language, duration and segments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VerboseTranscription {
    /// `transcribe` or `translate`.
    pub task: String,
    /// The spoken language's English name (`english`), given or detected.
    pub language: String,
    /// The audio's duration in seconds.
    pub duration: f64,
    /// The text.
    pub text: String,
    /// The segments, in order.
    pub segments: Vec<VerboseSegment>,
}

/// One segment of a `verbose_json` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VerboseSegment {
    /// Its position, from 0.
    pub id: usize,
    /// Start, seconds.
    pub start: f64,
    /// End, seconds.
    pub end: f64,
    /// Its text.
    pub text: String,
    /// Its token ids.
    pub tokens: Vec<i64>,
    /// The temperature its window was decoded at (0: greedy).
    pub temperature: f32,
    /// The mean log-probability of its window's tokens (Whisper; absent for Qwen3-ASR).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub avg_logprob: Option<f64>,
    /// The zlib compression ratio of its window's tokens (Whisper).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub compression_ratio: Option<f64>,
    /// The probability of no speech in its window (Whisper).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub no_speech_prob: Option<f64>,
}

impl VerboseSegment {
    /// The segment `id` of a transcript, with its window's decoding.
    pub fn of(id: usize, s: &crate::backend::TranscriptSegment) -> VerboseSegment {
        let d = s.decoding.as_ref();
        VerboseSegment {
            id,
            start: s.start,
            end: s.end,
            text: s.text.clone(),
            tokens: s.tokens.clone(),
            temperature: d.map_or(0.0, |d| d.temperature),
            avg_logprob: d.map(|d| d.avg_logprob),
            compression_ratio: d.map(|d| d.compression_ratio),
            no_speech_prob: d.and_then(|d| d.no_speech_prob),
        }
    }
}

/// `seconds` as `HH:MM:SS` + `sep` + milliseconds.
fn clock(seconds: f64, sep: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!("{:02}:{:02}:{:02}{sep}{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

/// SubRip: numbered cues from 1, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, the text, a blank line.
pub fn srt(segments: &[VerboseSegment]) -> String {
    let mut out = String::new();
    for (i, s) in segments.iter().enumerate() {
        out.push_str(&format!("{}\n{} --> {}\n{}\n\n", i + 1, clock(s.start, ','), clock(s.end, ','), s.text.trim()));
    }
    out
}

/// WebVTT: the `WEBVTT` header, then `HH:MM:SS.mmm --> HH:MM:SS.mmm` cues.
pub fn vtt(segments: &[VerboseSegment]) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for s in segments {
        out.push_str(&format!("{} --> {}\n{}\n\n", clock(s.start, '.'), clock(s.end, '.'), s.text.trim()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: f64, end: f64, text: &str) -> VerboseSegment {
        let s = crate::backend::TranscriptSegment { start, end, text: text.into(), tokens: vec![], decoding: None };
        VerboseSegment::of(0, &s)
    }

    #[test]
    fn subtitles_have_their_formats() {
        let s = [seg(0.0, 2.5, " Hello"), seg(3661.0, 3662.004, " world ")];
        assert_eq!(srt(&s), "1\n00:00:00,000 --> 00:00:02,500\nHello\n\n2\n01:01:01,000 --> 01:01:02,004\nworld\n\n");
        assert_eq!(vtt(&s[..1]), "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello\n\n");
        assert_eq!(ResponseFormat::parse("verbose_json"), Some(ResponseFormat::VerboseJson));
        assert_eq!(ResponseFormat::parse("xml"), None);
        assert!(ResponseFormat::Srt.timed() && !ResponseFormat::Text.timed());
    }
}
