//! Bad files a user could send (committed under tests/fixtures/speech/clips/bad-*, or crafted here): each is a
//! typed [`AudioError`] whose message names the problem, never a panic.

mod common;

use bulkhead_audio::{decode, AudioError, Limits};
use common::bytes;

fn error_of(name: &str, limits: &Limits) -> AudioError {
    match decode(bytes(name), limits) {
        Ok(pcm) => panic!("{name}: decoded {} samples, expected an error", pcm.samples.len()),
        Err(e) => {
            println!("{name}: {e}");
            e
        }
    }
}

#[test]
fn zero_length_file() {
    let e = error_of("bad-empty.wav", &Limits::default());
    assert!(matches!(e, AudioError::Empty { .. }), "{e:?}");
    assert_eq!(e.kind(), "empty");
    assert!(e.to_string().contains("0 bytes"));
}

#[test]
fn random_bytes() {
    let e = error_of("bad-random.wav", &Limits::default());
    assert!(matches!(e, AudioError::NotAudio { .. }), "{e:?}");
    assert!(e.to_string().contains("not an audio file"), "{e}");
}

#[test]
fn truncated_wav_header() {
    let e = error_of("bad-truncated.wav", &Limits::default());
    assert!(matches!(e, AudioError::Corrupt { container: "WAV", .. }), "{e:?}");
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn png_renamed_wav() {
    let e = error_of("bad-png.wav", &Limits::default());
    assert!(matches!(&e, AudioError::NotAudio { detail } if detail == "a PNG image"), "{e:?}");
}

#[test]
fn wav_header_with_rate_zero() {
    let e = error_of("bad-rate0.wav", &Limits::default());
    assert!(matches!(e, AudioError::InvalidSampleRate { container: "WAV", rate: 0 }), "{e:?}");
    assert!(e.to_string().contains("sample rate of 0 Hz"), "{e}");
}

#[test]
fn wav_header_with_no_channels() {
    let e = error_of("bad-channels0.wav", &Limits::default());
    assert!(matches!(e, AudioError::NoChannels { container: "WAV" }), "{e:?}");
}

#[test]
fn unsupported_codec_is_named() {
    let e = error_of("bad-opus.ogg", &Limits::default());
    assert!(matches!(&e, AudioError::UnsupportedCodec { codec, container: "Ogg" } if codec == "Opus"), "{e:?}");
    // A WAV whose format tag is GSM 6.10 (speech.wav's header with the tag changed).
    let mut gsm = bytes("speech.wav");
    gsm[20..22].copy_from_slice(&0x0031u16.to_le_bytes());
    let e = decode(gsm, &Limits::default()).unwrap_err();
    assert!(e.to_string().contains("GSM 6.10"), "{e}");
}

#[test]
fn too_long_is_refused_with_the_limit_named() {
    // Counted while decoding (a WAV's header is not trusted for it).
    let limits = Limits { max_seconds: 1.0, ..Limits::default() };
    let e = error_of("speech.wav", &limits);
    assert!(matches!(e, AudioError::TooLong { limit_s, .. } if limit_s == 1.0), "{e:?}");
    assert!(e.to_string().contains("--max-audio-s"), "{e}");
    // Declared by the container (the MP3's Xing/LAME header): refused before decoding.
    let limits = Limits { max_seconds: 30.0, ..Limits::default() };
    let e = error_of("long-45s.mp3", &limits);
    assert!(matches!(e, AudioError::TooLong { seconds, .. } if seconds > 44.0), "{e:?}");
    // Every format stops at the limit.
    for name in ["speech.flac", "speech.ogg", "speech.m4a", "speech.mp3"] {
        let e = error_of(name, &Limits { max_seconds: 1.5, ..Limits::default() });
        assert_eq!(e.kind(), "too_long", "{name}");
    }
}

#[test]
fn too_large_is_refused_before_decoding() {
    let limits = Limits { max_bytes: 10_000, ..Limits::default() };
    let e = error_of("speech.wav", &limits);
    assert!(matches!(e, AudioError::TooLarge { limit: 10_000, .. }), "{e:?}");
}

#[test]
fn every_prefix_and_every_damaged_header_is_an_error_or_audio_never_a_panic() {
    for name in ["speech.wav", "speech.flac", "speech.mp3", "speech.ogg", "speech.m4a"] {
        let whole = bytes(name);
        for cut in [1, 4, 11, 12, 20, 36, 44, 100, 1000, whole.len() / 2] {
            let _ = decode(whole[..cut.min(whole.len())].to_vec(), &Limits::default());
        }
        for at in (0..200.min(whole.len())).step_by(3) {
            let mut damaged = whole.clone();
            damaged[at] ^= 0xA5;
            let _ = decode(damaged, &Limits::default());
        }
    }
}

#[test]
fn a_header_without_samples_is_empty() {
    // speech.wav's 44-byte header with the data chunk (and the RIFF size) saying 0 bytes of samples.
    let mut header = bytes("speech.wav")[..44].to_vec();
    header[4..8].copy_from_slice(&36u32.to_le_bytes());
    header[40..44].copy_from_slice(&0u32.to_le_bytes());
    let e = decode(header, &Limits::default()).unwrap_err();
    assert!(matches!(e, AudioError::Empty { .. }), "{e:?}");
    assert!(e.to_string().contains("0 samples"), "{e}");
}
