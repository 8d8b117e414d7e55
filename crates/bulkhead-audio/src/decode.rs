//! Bytes to mono PCM: symphonia demuxes and decodes, every channel is averaged into one, and the limits (size,
//! duration) are enforced before and while decoding, so a 10-hour file is refused after decoding one hour of it at
//! most (and at once where the header declares its length).

use std::io::{Cursor, ErrorKind};

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{self, CodecType, DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::sniff::{head_hex, sniff, Container};
use crate::{mp4, AudioError};

/// The default `--max-audio-s`: one hour.
pub const DEFAULT_MAX_SECONDS: f64 = 3600.0;

/// The default size limit: 1 GiB (one hour of 48 kHz stereo 24-bit WAV is 1.04 GB; a server usually sets its own,
/// lower, request-body limit in front of this).
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// What a file may be: larger or longer files are refused with [`AudioError::TooLarge`] / [`AudioError::TooLong`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// The most bytes a file may have.
    pub max_bytes: u64,
    /// The longest a file may play, in seconds.
    pub max_seconds: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: DEFAULT_MAX_BYTES, max_seconds: DEFAULT_MAX_SECONDS }
    }
}

/// What the file held before the down-mix and any resampling.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    /// The container.
    pub container: Container,
    /// The codec, as symphonia names it (`pcm_s16le`, `flac`, `mp3`, `vorbis`, `aac`, ...).
    pub codec: String,
    /// The file's sample rate in Hz.
    pub rate: u32,
    /// The file's channel count (all were averaged into one).
    pub channels: usize,
    /// Packets the decoder rejected and skipped (damaged frames); 0 for an intact file.
    pub skipped_packets: usize,
}

/// Mono PCM: `samples` at `rate` Hz, nominally in [-1, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct Pcm {
    /// The samples, one channel (the mean of the file's channels).
    pub samples: Vec<f32>,
    /// Samples per second.
    pub rate: u32,
    /// What the file held.
    pub source: Source,
}

impl Pcm {
    /// The duration in seconds.
    pub fn duration_s(&self) -> f64 {
        self.samples.len() as f64 / self.rate as f64
    }

    /// Qwen3-ASR's last loading step (`float_range_normalize` in the qwen-asr package, after its down-mix and
    /// resampling): if a sample's magnitude exceeds 1, every sample is divided by the peak; then all are clipped to
    /// [-1, 1]. Audio already within [-1, 1] is unchanged. Whisper's pipelines do not do this.
    pub fn peak_limited(mut self) -> Pcm {
        let peak = self.samples.iter().fold(0f32, |m, x| m.max(x.abs()));
        if peak > 1.0 {
            for x in &mut self.samples {
                *x /= peak;
            }
        }
        for x in &mut self.samples {
            *x = x.clamp(-1.0, 1.0);
        }
        self
    }

    /// The same audio at `rate` Hz (band-limited, see [`crate::resample()`]); unchanged if already at that rate.
    pub fn resampled(self, rate: u32) -> Result<Pcm, AudioError> {
        if rate == self.rate {
            return Ok(self);
        }
        let samples = crate::resample(&self.samples, self.rate, rate)?;
        Ok(Pcm { samples, rate, source: self.source })
    }
}

/// Decodes a whole file (WAV, AIFF, CAF, FLAC, MP3, Ogg Vorbis, M4A/MP4 with AAC or ALAC, Matroska/WebM with
/// Vorbis or FLAC) into mono PCM at the file's own rate. Takes the bytes by value (`Vec<u8>`, `Arc<[u8]>`, ...)
/// because the demuxer reads from an owned source.
///
/// Errors are typed and name the problem; nothing here panics on any input.
pub fn decode<B>(bytes: B, limits: &Limits) -> Result<Pcm, AudioError>
where
    B: AsRef<[u8]> + Send + Sync + 'static,
{
    let len = bytes.as_ref().len() as u64;
    if len > limits.max_bytes {
        return Err(AudioError::TooLarge { bytes: len, limit: limits.max_bytes });
    }
    let container = sniff(bytes.as_ref())?;
    // symphonia is a parser of untrusted bytes: should it panic on some malformed stream, that is this file's
    // problem (a typed error), not the caller's.
    let run = std::panic::AssertUnwindSafe(|| decode_container(bytes, container, limits));
    std::panic::catch_unwind(run).unwrap_or_else(|_| {
        Err(AudioError::Corrupt { container: container.name(), detail: "the decoder failed on malformed data".into() })
    })
}

/// [`decode`] once the container is known.
fn decode_container<B>(bytes: B, container: Container, limits: &Limits) -> Result<Pcm, AudioError>
where
    B: AsRef<[u8]> + Send + Sync + 'static,
{
    let head = head_hex(bytes.as_ref());
    let edit_list = if container == Container::Mp4 { mp4::sound_edit_list(bytes.as_ref()) } else { None };
    // Errors before any sample: a recognised container is damaged, anything else is not audio.
    let unreadable = |err: SymError| match container {
        Container::Unknown => AudioError::NotAudio { detail: head.clone() },
        _ => AudioError::Corrupt { container: container.name(), detail: describe(&err) },
    };

    let mut hint = Hint::new();
    if let Some(ext) = container.extension() {
        hint.with_extension(ext);
    }
    let stream = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    // Gapless: drop the encoder delay and padding an MP3's LAME tag declares, as ffmpeg does (an MP4's edit list
    // is applied after decoding).
    let format_options = FormatOptions { enable_gapless: true, ..Default::default() };
    let probed = symphonia::default::get_probe()
        .format(&hint, stream, &format_options, &MetadataOptions::default())
        .map_err(unreadable)?;
    let mut reader = probed.format;

    let Some(track) = reader.tracks().iter().find(|t| t.codec_params.codec != CODEC_TYPE_NULL) else {
        return Err(AudioError::Empty { what: format!("no audio track in the {} file", container.name()) });
    };
    let track_id = track.id;
    let params = track.codec_params.clone();
    let registry = symphonia::default::get_codecs();
    let Some(descriptor) = registry.get_codec(params.codec) else {
        return Err(AudioError::UnsupportedCodec { codec: codec_name(params.codec), container: container.name() });
    };
    let codec = descriptor.short_name.to_string();
    // (A rate the container leaves unstated comes with the first decoded buffer, checked below.)
    if params.sample_rate == Some(0) {
        return Err(AudioError::InvalidSampleRate { container: container.name(), rate: 0 });
    }
    if params.channels.is_some_and(|c| c.count() == 0) {
        return Err(AudioError::NoChannels { container: container.name() });
    }
    // The declared length, where the container states one (WAV's may be a placeholder: checked while decoding).
    if let (Some(frames), Some(rate), false) = (params.n_frames, params.sample_rate, container == Container::Wav) {
        let seconds = frames as f64 / rate.max(1) as f64;
        if seconds > limits.max_seconds {
            return Err(AudioError::TooLong { seconds, limit_s: limits.max_seconds });
        }
    }
    let mut decoder = registry.make(&params, &DecoderOptions::default()).map_err(|e| match e {
        SymError::Unsupported(_) => {
            AudioError::UnsupportedCodec { codec: codec_name(params.codec), container: container.name() }
        }
        other => AudioError::Corrupt { container: container.name(), detail: describe(&other) },
    })?;

    let mut samples: Vec<f32> = Vec::new();
    let mut rate = 0u32;
    let mut channels = 0usize;
    let mut skipped = 0usize;
    let mut first_error: Option<String> = None;
    let mut interleaved: Option<SampleBuffer<f32>> = None;
    loop {
        let packet = match reader.next_packet() {
            Ok(p) => p,
            Err(SymError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break, // a chained stream: the first one is the audio
            Err(e) => {
                // A damaged tail: keep what decoded (as ffmpeg does); nothing decoded is an error.
                first_error.get_or_insert_with(|| describe(&e));
                break;
            }
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            Err(SymError::DecodeError(e)) => {
                skipped += 1;
                first_error.get_or_insert_with(|| e.to_string());
                continue;
            }
            Err(SymError::IoError(e)) => {
                skipped += 1;
                first_error.get_or_insert_with(|| e.to_string());
                continue;
            }
            Err(e) => return Err(AudioError::Corrupt { container: container.name(), detail: describe(&e) }),
        };
        let spec = *decoded.spec();
        let n_channels = spec.channels.count();
        if spec.rate == 0 {
            return Err(AudioError::InvalidSampleRate { container: container.name(), rate: 0 });
        }
        if n_channels == 0 {
            return Err(AudioError::NoChannels { container: container.name() });
        }
        if rate == 0 {
            rate = spec.rate;
        } else if spec.rate != rate {
            return Err(AudioError::Corrupt {
                container: container.name(),
                detail: format!("the sample rate changes mid-stream from {rate} Hz to {} Hz", spec.rate),
            });
        }
        channels = channels.max(n_channels);
        if decoded.frames() == 0 {
            continue;
        }
        let buf = match &mut interleaved {
            Some(b) if b.capacity() >= decoded.capacity() * n_channels => b,
            slot => slot.insert(SampleBuffer::new(decoded.capacity() as u64, spec)),
        };
        buf.copy_interleaved_ref(decoded);
        mix_down(buf.samples(), n_channels, &mut samples);
        let seconds = samples.len() as f64 / rate as f64;
        if seconds > limits.max_seconds {
            return Err(AudioError::TooLong { seconds, limit_s: limits.max_seconds });
        }
    }
    if let Some(edit) = edit_list {
        edit.apply(&mut samples, rate);
    }
    if samples.is_empty() {
        return Err(match first_error {
            Some(detail) => AudioError::Corrupt { container: container.name(), detail },
            None => AudioError::Empty { what: format!("0 samples in the {} file", container.name()) },
        });
    }
    Ok(Pcm { samples, rate, source: Source { container, codec, rate, channels, skipped_packets: skipped } })
}

/// Appends the mean of each interleaved frame's channels to `out`.
fn mix_down(interleaved: &[f32], channels: usize, out: &mut Vec<f32>) {
    if channels == 1 {
        out.extend_from_slice(interleaved);
        return;
    }
    let n = channels as f32;
    out.extend(interleaved.chunks_exact(channels).map(|frame| frame.iter().sum::<f32>() / n));
}

/// symphonia's error in words.
fn describe(err: &SymError) -> String {
    match err {
        SymError::IoError(e) if e.kind() == ErrorKind::UnexpectedEof => "the file ends early (truncated)".into(),
        other => other.to_string(),
    }
}

/// A codec's name for an error message, whether or not this build has a decoder for it.
fn codec_name(codec: CodecType) -> String {
    if let Some(d) = symphonia::default::get_codecs().get_codec(codec) {
        return d.long_name.to_string();
    }
    let name = match codec {
        codecs::CODEC_TYPE_OPUS => "Opus",
        codecs::CODEC_TYPE_SPEEX => "Speex",
        codecs::CODEC_TYPE_WMA => "Windows Media Audio",
        codecs::CODEC_TYPE_EAC3 => "E-AC-3",
        codecs::CODEC_TYPE_AC4 => "AC-4",
        codecs::CODEC_TYPE_DCA => "DTS",
        codecs::CODEC_TYPE_WAVPACK => "WavPack",
        codecs::CODEC_TYPE_MONKEYS_AUDIO => "Monkey's Audio",
        codecs::CODEC_TYPE_TTA => "TTA",
        codecs::CODEC_TYPE_MUSEPACK => "Musepack",
        codecs::CODEC_TYPE_ATRAC1 | codecs::CODEC_TYPE_ATRAC3 | codecs::CODEC_TYPE_ATRAC3PLUS => "ATRAC",
        codecs::CODEC_TYPE_ATRAC9 => "ATRAC9",
        codecs::CODEC_TYPE_ADPCM_G722 => "G.722 ADPCM",
        codecs::CODEC_TYPE_ADPCM_G726 | codecs::CODEC_TYPE_ADPCM_G726LE => "G.726 ADPCM",
        _ => return format!("(symphonia codec id {codec})"),
    };
    name.to_string()
}
