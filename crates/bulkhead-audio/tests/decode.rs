//! Decoding every committed format, and WAV in every sample format (written here from one known signal).

mod common;

use bulkhead_audio::{decode, Container, Limits};
use common::{bytes, clip, decoded, f32s};

/// Our decoder against ffmpeg's on the lossy clips: the sample count, and an excerpt of the samples. Two correct
/// float decoders of the same stream differ by rounding only (measured under 1e-6); 1e-5 (-100 dBFS) bounds that.
const LOSSY_PCM_TOLERANCE: f32 = 1e-5;

#[test]
fn every_format_decodes_to_the_reference_pcm() {
    let wav = decoded("speech.wav");
    assert_eq!((wav.rate, wav.source.channels, wav.source.container), (16000, 1, Container::Wav));
    assert_eq!(wav.source.codec, "pcm_s16le");
    assert_eq!(wav.samples.len() as u64, clip("speech.wav")["samples"].as_u64().unwrap());

    let flac = decoded("speech.flac");
    assert_eq!((flac.source.container, flac.source.codec.as_str()), (Container::Flac, "flac"));
    assert_eq!(flac.samples, wav.samples, "FLAC is lossless: the same samples as the WAV");

    for (name, container, codec) in [
        ("speech.mp3", Container::Mpeg, "mp3"),
        ("speech.ogg", Container::Ogg, "vorbis"),
        ("speech.m4a", Container::Mp4, "aac"),
        ("long-45s.mp3", Container::Mpeg, "mp3"),
    ] {
        let pcm = decoded(name);
        let entry = clip(name);
        assert_eq!((pcm.source.container, pcm.source.codec.as_str(), pcm.rate), (container, codec, 16000), "{name}");
        assert_eq!(pcm.source.skipped_packets, 0, "{name}: no damaged packet");
        let want_len = entry["samples"].as_u64().unwrap() as usize;
        let excerpt = &entry["pcm_excerpt"];
        let start = excerpt["start"].as_u64().unwrap() as usize;
        let want = f32s(excerpt["file"].as_str().unwrap());
        let got = &pcm.samples[start..start + want.len()];
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        println!(
            "{name:14} {} samples (ffmpeg {want_len}), excerpt max |ours - ffmpeg| = {diff:.2e}",
            pcm.samples.len()
        );
        assert_eq!(pcm.samples.len(), want_len, "{name}: sample count as ffmpeg (gapless trimming)");
        assert!(diff <= LOSSY_PCM_TOLERANCE, "{name}: {diff:e}");
    }
}

#[test]
fn stereo_is_the_mean_of_the_channels() {
    let pcm = decoded("stereo-44k.wav");
    assert_eq!((pcm.rate, pcm.source.channels, pcm.samples.len()), (44100, 2, 44100));
    // Right = left / 2 (sox `remix 1 1v0.5`, 16-bit): the mean is 3/4 of the left channel, to 16-bit rounding.
    let raw = bytes("stereo-44k.wav");
    let at = raw.windows(4).position(|w| w == b"data").expect("a data chunk") + 8;
    let data = &raw[at..];
    for (i, frame) in data.chunks_exact(4).enumerate().step_by(97) {
        let l = i16::from_le_bytes([frame[0], frame[1]]) as f32 / 32768.0;
        let r = i16::from_le_bytes([frame[2], frame[3]]) as f32 / 32768.0;
        assert_eq!(pcm.samples[i], (l + r) / 2.0, "frame {i}");
    }
}

/// A WAV file with `channels` interleaved channels of `bits`-bit samples (`float` for IEEE float).
fn wav(samples: &[f64], channels: u16, rate: u32, bits: u16, float: bool) -> Vec<u8> {
    let mut data = Vec::new();
    for &x in samples {
        for _ in 0..channels {
            match (bits, float) {
                (8, false) => data.push(((x * 128.0).round() as i32 + 128).clamp(0, 255) as u8),
                (16, false) => data.extend(((x * 32768.0).round() as i16).to_le_bytes()),
                (24, false) => data.extend(&((x * 8_388_608.0).round() as i32).to_le_bytes()[..3]),
                (32, false) => data.extend(((x * 2_147_483_648.0).round() as i32).to_le_bytes()),
                (32, true) => data.extend((x as f32).to_le_bytes()),
                (64, true) => data.extend(x.to_le_bytes()),
                _ => unreachable!(),
            }
        }
    }
    let block = channels * bits / 8;
    let mut out = Vec::new();
    out.extend(b"RIFF");
    out.extend((36 + data.len() as u32).to_le_bytes());
    out.extend(b"WAVEfmt ");
    out.extend(16u32.to_le_bytes());
    out.extend((if float { 3u16 } else { 1u16 }).to_le_bytes());
    out.extend(channels.to_le_bytes());
    out.extend(rate.to_le_bytes());
    out.extend((rate * block as u32).to_le_bytes());
    out.extend(block.to_le_bytes());
    out.extend(bits.to_le_bytes());
    out.extend(b"data");
    out.extend((data.len() as u32).to_le_bytes());
    out.extend(data);
    out
}

#[test]
fn wav_in_every_sample_format() {
    let signal: Vec<f64> = (0..4000).map(|i| 0.6 * (i as f64 * 0.031).sin() - 0.2 * (i as f64 * 0.17).cos()).collect();
    // The quantisation step of each format bounds the error.
    for (bits, float, tolerance) in [
        (8, false, 1.0 / 128.0),
        (16, false, 1.0 / 32768.0),
        (24, false, 1e-6),
        (32, false, 1e-6),
        (32, true, 1e-7),
        (64, true, 1e-7),
    ] {
        for channels in [1u16, 2, 6] {
            let file = wav(&signal, channels, 22050, bits, float);
            let pcm = decode(file, &Limits::default()).unwrap_or_else(|e| panic!("{bits}-bit float={float}: {e}"));
            assert_eq!((pcm.rate, pcm.source.channels, pcm.samples.len()), (22050, channels as usize, 4000));
            let diff = pcm.samples.iter().zip(&signal).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
            assert!(diff <= tolerance, "{bits}-bit float={float} x{channels}: {diff:e} > {tolerance:e}");
        }
    }
}

#[test]
fn load_resamples_to_the_model_rate() {
    let pcm = bulkhead_audio::load(bytes("stereo-44k.wav"), &Limits::default(), 16000).unwrap();
    assert_eq!((pcm.rate, pcm.samples.len(), pcm.source.rate), (16000, 16000, 44100));
    let same = bulkhead_audio::load(bytes("speech.wav"), &Limits::default(), 16000).unwrap();
    assert_eq!(same.samples, decoded("speech.wav").samples, "already at 16 kHz: untouched");
}

#[test]
fn peak_limiting_as_qwen3_asr_loads_audio() {
    // A float WAV peaking at 2.0: divided by the peak, as qwen-asr's float_range_normalize does.
    let loud: Vec<f64> = (0..1000).map(|i| 2.0 * (i as f64 * 0.01).sin()).collect();
    let pcm = decode(wav(&loud, 1, 16000, 32, true), &Limits::default()).unwrap().peak_limited();
    let peak = pcm.samples.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!((peak - 1.0).abs() < 1e-6, "{peak}");
    assert!((pcm.samples[100] as f64 - loud[100] / 2.0).abs() < 1e-6);
    // Within [-1, 1]: untouched.
    let speech = decoded("speech.wav");
    assert_eq!(speech.clone().peak_limited(), speech);
}
