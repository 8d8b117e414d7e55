//! Audio in for speech models: bytes of a file to the log-mel features a Whisper-style encoder takes.
//!
//! * [`decode`]: WAV (8/16/24/32-bit integer, 32/64-bit float, A-law, mu-law, ADPCM), AIFF, CAF, FLAC, MP3,
//!   Ogg Vorbis, M4A/MP4 (AAC-LC, ALAC), Matroska/WebM (Vorbis, FLAC) through symphonia, every channel averaged
//!   into one ([`Pcm`]), within [`Limits`] of size and duration;
//! * [`resample`] (and [`Pcm::resampled`]): band-limited rate conversion (rubato's FFT resampler);
//! * [`FeatureExtractor`]: transformers' `WhisperFeatureExtractor` (configured by [`FeatureConfig`] from a model's
//!   `preprocessor_config.json`): padded to 30 s for Whisper ([`Padding::MaxLength`]) or as long as the audio
//!   with a frame count for models that do not pad ([`Padding::Longest`], Qwen3-ASR);
//! * [`LongForm`]: audio past 30 s cut into model windows by frame offset, as openai-whisper's `transcribe` does;
//! * [`AudioError`]: what is wrong with a file, typed (a server answers 4xx, the CLI exits with 2).
//!
//! The usual path: `let pcm = bulkhead_audio::load(bytes, &limits, extractor.sampling_rate())?;` then
//! `extractor.extract(&pcm.samples, Padding::MaxLength)`.
//!
//! # Architecture invariants
//!
//! * Nothing panics on input: every malformed, truncated, empty, unsupported, over-long or over-large file is an
//!   [`AudioError`] naming the problem, the container and, where there is one, the codec or the limit.
//! * A duration limit holds while decoding: decoding stops at the limit, whatever the header claims.
//! * The features are transformers' numpy computation (float64 STFT and mel, float32 log and normalisation), within
//!   1e-4 of it on the same PCM for every committed clip and configuration (tests/fixtures/speech/clips, from
//!   scripts/fixtures/make_audio.py); a configuration value it would not follow exactly is a [`ConfigError`],
//!   never ignored.
//! * The PCM of a lossless file is its samples exactly; a lossy file's is its decode with the encoder's delay and
//!   padding dropped (MP3's LAME tag, MP4's edit list), sample-aligned with ffmpeg's.
//! * PCM handed to the extractor is mono at the extractor's rate; [`FeatureExtractor::extract`] does not resample.
//! * No I/O beyond reading a `preprocessor_config.json`, no threads, no async.
#![deny(missing_docs)]

mod config;
mod decode;
mod error;
mod features;
mod longform;
mod mel;
mod mp4;
mod resample;
mod sniff;

pub use config::{FeatureConfig, PREPROCESSOR_CONFIG};
pub use decode::{decode, Limits, Pcm, Source, DEFAULT_MAX_BYTES, DEFAULT_MAX_SECONDS};
pub use error::{AudioError, ConfigError};
pub use features::{FeatureExtractor, Features, Padding};
pub use longform::{LongForm, Window};
pub use resample::resample;
pub use sniff::Container;

/// Decodes `bytes` ([`decode`]) and resamples the mono PCM to `rate` Hz ([`Pcm::resampled`]).
pub fn load<B>(bytes: B, limits: &Limits, rate: u32) -> Result<Pcm, AudioError>
where
    B: AsRef<[u8]> + Send + Sync + 'static,
{
    decode(bytes, limits)?.resampled(rate)
}
