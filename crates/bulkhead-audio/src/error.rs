//! The typed errors: [`AudioError`] for a file that cannot become PCM (each variant is the user's fault and maps to
//! a 4xx / exit code 2), [`ConfigError`] for a `preprocessor_config.json` the feature extractor cannot follow.

use std::path::PathBuf;

/// Why a file could not be turned into PCM. Every message says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// Zero bytes, or a container that holds no samples.
    #[error("the audio is empty ({what}): send a file with at least one sample of sound")]
    Empty {
        /// What was empty: "0 bytes", "no audio track", "0 samples decoded".
        what: String,
    },
    /// The bytes are not a container this build reads (or not audio at all).
    #[error(
        "not an audio file this server reads ({detail}): send WAV, FLAC, MP3, Ogg Vorbis or M4A/AAC \
         (or convert it, e.g. `ffmpeg -i IN -ar 16000 -ac 1 OUT.wav`)"
    )]
    NotAudio {
        /// What the bytes look like (e.g. "a PNG image", "unrecognised bytes 00 01 ...").
        detail: String,
    },
    /// A known container whose data is broken: truncated, or a header that contradicts itself.
    #[error("the {container} file is damaged ({detail}): re-export or re-encode it")]
    Corrupt {
        /// The container (e.g. "WAV").
        container: &'static str,
        /// What the decoder found.
        detail: String,
    },
    /// The container is readable but its codec is not compiled in.
    #[error(
        "unsupported audio codec {codec} in {container}: send WAV, FLAC, MP3, Ogg Vorbis or M4A/AAC \
         (e.g. `ffmpeg -i IN -c:a flac OUT.flac`)"
    )]
    UnsupportedCodec {
        /// The codec's name (e.g. "Opus").
        codec: String,
        /// The container (e.g. "Ogg").
        container: &'static str,
    },
    /// The header declares a sample rate of 0 (or none at all).
    #[error("the {container} header declares a sample rate of {rate} Hz: the file is damaged; re-export it")]
    InvalidSampleRate {
        /// The container.
        container: &'static str,
        /// The declared rate (0 where none is declared).
        rate: u32,
    },
    /// The header declares no channels.
    #[error("the {container} header declares 0 channels: the file is damaged; re-export it")]
    NoChannels {
        /// The container.
        container: &'static str,
    },
    /// Longer than the configured maximum duration.
    #[error(
        "the audio is {seconds:.1} s long (or longer), past the limit of {limit_s:.0} s: cut it into shorter files \
         or raise the limit (--max-audio-s)"
    )]
    TooLong {
        /// The duration seen when decoding stopped (the declared duration when the header says so).
        seconds: f64,
        /// The limit.
        limit_s: f64,
    },
    /// Larger than the configured maximum size in bytes.
    #[error("the audio file is {bytes} bytes, past the limit of {limit} bytes: send a shorter or compressed file")]
    TooLarge {
        /// The file's size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The resampler refused the rates (only for rates no audio file has).
    #[error("cannot resample from {from} Hz to {to} Hz: {detail}")]
    Resample {
        /// The source rate.
        from: u32,
        /// The target rate.
        to: u32,
        /// The resampler's message.
        detail: String,
    },
}

impl AudioError {
    /// A short stable name for the kind of problem (for logs, metrics and JSON error bodies).
    pub fn kind(&self) -> &'static str {
        match self {
            AudioError::Empty { .. } => "empty",
            AudioError::NotAudio { .. } => "not_audio",
            AudioError::Corrupt { .. } => "corrupt",
            AudioError::UnsupportedCodec { .. } => "unsupported_codec",
            AudioError::InvalidSampleRate { .. } => "invalid_sample_rate",
            AudioError::NoChannels { .. } => "no_channels",
            AudioError::TooLong { .. } => "too_long",
            AudioError::TooLarge { .. } => "too_large",
            AudioError::Resample { .. } => "resample",
        }
    }
}

/// Why a feature-extractor configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The JSON is malformed or a field has the wrong type.
    #[error("{path}: not a valid preprocessor_config.json: {detail}")]
    Json {
        /// The file (`<inline>` for text).
        path: PathBuf,
        /// serde_json's message.
        detail: String,
    },
    /// A field's value is one this extractor does not compute (it would compute something else silently).
    #[error("{path}: `{field}` = {value} is not supported: {reason}")]
    Unsupported {
        /// The file (`<inline>` for text).
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// Its value as written.
        value: String,
        /// Why, and what is supported.
        reason: String,
    },
}
