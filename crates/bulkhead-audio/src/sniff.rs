//! What a file is, from its first bytes: the container (to name it in errors and in [`crate::Source`], and to hint
//! the demuxer), well-known non-audio files (so a PNG renamed `.wav` is called a PNG), and a check of a WAV header's
//! sample rate and channel count before any decoder sees it.

use crate::AudioError;

/// A container format, as recognised from the file's magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    /// RIFF WAVE.
    Wav,
    /// AIFF / AIFF-C.
    Aiff,
    /// Apple Core Audio Format.
    Caf,
    /// Native FLAC.
    Flac,
    /// MPEG audio (MP3, and MP1/MP2), with or without an ID3v2 tag.
    Mpeg,
    /// AAC in ADTS frames (`.aac`).
    Adts,
    /// Ogg (Vorbis, and Opus, which this build cannot decode).
    Ogg,
    /// ISO base media / MP4 (`.m4a`, `.mp4`).
    Mp4,
    /// Matroska / WebM.
    Matroska,
    /// Not recognised from the magic bytes (the demuxers may still read it).
    Unknown,
}

impl Container {
    /// The name users know it by.
    pub fn name(self) -> &'static str {
        match self {
            Container::Wav => "WAV",
            Container::Aiff => "AIFF",
            Container::Caf => "CAF",
            Container::Flac => "FLAC",
            Container::Mpeg => "MPEG audio",
            Container::Adts => "AAC (ADTS)",
            Container::Ogg => "Ogg",
            Container::Mp4 => "MP4",
            Container::Matroska => "Matroska",
            Container::Unknown => "unknown",
        }
    }

    /// The file extension symphonia's probe is hinted with.
    pub(crate) fn extension(self) -> Option<&'static str> {
        Some(match self {
            Container::Wav => "wav",
            Container::Aiff => "aiff",
            Container::Caf => "caf",
            Container::Flac => "flac",
            Container::Mpeg => "mp3",
            Container::Adts => "aac",
            Container::Ogg => "ogg",
            Container::Mp4 => "m4a",
            Container::Matroska => "mka",
            Container::Unknown => return None,
        })
    }
}

/// The container of `bytes`, or the error for bytes that are certainly not audio (empty, or a well-known other
/// file type).
pub fn sniff(bytes: &[u8]) -> Result<Container, AudioError> {
    if bytes.is_empty() {
        return Err(AudioError::Empty { what: "0 bytes".into() });
    }
    let at = |i: usize, magic: &[u8]| bytes.get(i..i + magic.len()) == Some(magic);
    let container = if at(0, b"RIFF") && at(8, b"WAVE") || at(0, b"RF64") && at(8, b"WAVE") {
        Container::Wav
    } else if at(0, b"FORM") && (at(8, b"AIFF") || at(8, b"AIFC")) {
        Container::Aiff
    } else if at(0, b"caff") {
        Container::Caf
    } else if at(0, b"fLaC") {
        Container::Flac
    } else if at(0, b"OggS") {
        Container::Ogg
    } else if at(4, b"ftyp") {
        Container::Mp4
    } else if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        Container::Matroska
    } else if at(0, b"ID3") {
        Container::Mpeg
    } else if bytes.len() >= 2 && bytes[0] == 0xFF && bytes[1] & 0xF6 == 0xF0 {
        Container::Adts // sync word 0xFFF, layer 00
    } else if bytes.len() >= 2 && bytes[0] == 0xFF && bytes[1] & 0xE0 == 0xE0 {
        Container::Mpeg // frame sync, any layer
    } else if let Some(other) = other_file_type(bytes) {
        return Err(AudioError::NotAudio { detail: other });
    } else {
        Container::Unknown
    };
    if container == Container::Wav {
        check_wav_header(bytes)?;
    }
    Ok(container)
}

/// What a well-known non-audio file is, from its magic bytes.
fn other_file_type(bytes: &[u8]) -> Option<String> {
    const KNOWN: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n", "a PNG image"),
        (b"\xFF\xD8\xFF", "a JPEG image"),
        (b"GIF8", "a GIF image"),
        (b"%PDF", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive"),
        (b"\x1F\x8B", "a gzip archive"),
        (b"\x7FELF", "an ELF executable"),
    ];
    for (magic, name) in KNOWN {
        if bytes.starts_with(magic) {
            return Some((*name).to_string());
        }
    }
    if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
        return Some("a WebP image".into());
    }
    let head = &bytes[..bytes.len().min(512)];
    if std::str::from_utf8(head).is_ok_and(|t| t.chars().all(|c| !c.is_control() || c.is_whitespace())) {
        return Some("text".into());
    }
    None
}

/// A short hex dump of the first bytes, for "unrecognised bytes ..." messages.
pub(crate) fn head_hex(bytes: &[u8]) -> String {
    let hex: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("unrecognised bytes {}", hex.join(" "))
}

/// Checks a WAV file's `fmt ` chunk: present, complete, a non-zero sample rate and channel count. Decoders vary in
/// what they do with a zero rate (a division by zero further on); this turns it into a typed error first.
fn check_wav_header(bytes: &[u8]) -> Result<(), AudioError> {
    let corrupt = |detail: String| AudioError::Corrupt { container: "WAV", detail };
    if bytes.len() < 12 {
        return Err(corrupt(format!("the RIFF header is truncated at {} bytes", bytes.len())));
    }
    let mut pos = 12;
    loop {
        let Some(header) = bytes.get(pos..pos + 8) else {
            return Err(corrupt(format!("no `fmt ` chunk in the first {} bytes (truncated header)", bytes.len())));
        };
        let id = &header[..4];
        let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let body = pos + 8;
        if id == b"fmt " {
            let Some(fmt) = bytes.get(body..body + size.min(16)).filter(|f| f.len() == 16) else {
                return Err(corrupt(format!("the `fmt ` chunk is truncated ({} of 16 bytes)", bytes.len() - body)));
            };
            let tag = u16::from_le_bytes([fmt[0], fmt[1]]);
            if let Some(codec) = unsupported_wav_codec(tag) {
                return Err(AudioError::UnsupportedCodec { codec, container: "WAV" });
            }
            let channels = u16::from_le_bytes([fmt[2], fmt[3]]);
            let rate = u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]);
            if channels == 0 {
                return Err(AudioError::NoChannels { container: "WAV" });
            }
            if rate == 0 {
                return Err(AudioError::InvalidSampleRate { container: "WAV", rate });
            }
            return Ok(());
        }
        if id == b"data" {
            return Err(corrupt("the `data` chunk comes before any `fmt ` chunk".into()));
        }
        // Chunks are padded to an even size.
        pos = body.saturating_add(size).saturating_add(size & 1);
    }
}

/// The name of a WAV format tag this build cannot decode; `None` for the ones it can (integer PCM, IEEE float,
/// A-law, mu-law, Microsoft and IMA ADPCM, and WAVE_FORMAT_EXTENSIBLE, whose sub-format the decoder checks).
fn unsupported_wav_codec(tag: u16) -> Option<String> {
    let name = match tag {
        0x0001 | 0x0002 | 0x0003 | 0x0006 | 0x0007 | 0x0011 | 0xFFFE => return None,
        0x0031 => "GSM 6.10",
        0x0050 => "MPEG audio",
        0x0055 => "MP3",
        0x0064 | 0x0045 => "G.726 ADPCM",
        0x0161..=0x0163 => "Windows Media Audio",
        0x2000 => "AC-3",
        0x00FF | 0x1610 => "AAC",
        _ => "",
    };
    Some(if name.is_empty() {
        format!("WAV format tag 0x{tag:04x}")
    } else {
        format!("{name} (WAV format tag 0x{tag:04x})")
    })
}
