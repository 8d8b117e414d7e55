//! Our log-mel features against transformers' `WhisperFeatureExtractor` (numpy path) on every committed clip, for
//! the Whisper (80 bins) and Qwen3-ASR (128 bins) configurations, every stored frame including padding frames.

mod common;

use bulkhead_audio::{FeatureConfig, FeatureExtractor, Padding};
use common::{clip, decoded, extractor, f32s, max_diff};

/// The accuracy the extractor must have against transformers on the same PCM.
const TOLERANCE: f32 = 1e-4;

/// Decode (ours, symphonia) and extract against transformers on another decoder's PCM (ffmpeg's) of a lossy file.
const LOSSY_TOLERANCE: f32 = 5e-4;

/// Our features of `pcm` for every `max_length` entry of `clip_name`, compared with the reference; returns the
/// largest difference per configuration.
fn compare_max_length(clip_name: &str, pcm: &[f32]) -> Vec<(String, f32)> {
    let entry = clip(clip_name);
    let mut out = Vec::new();
    for f in entry["features"].as_array().unwrap().iter().filter(|f| f["mode"] == "max_length") {
        let config = f["config"].as_str().unwrap();
        let ours = extractor(config).extract(pcm, Padding::MaxLength);
        assert_eq!(ours.n_frames, f["n_frames"].as_u64().unwrap() as usize, "{clip_name} {config}: frames");
        let diff = max_diff(&ours, f);
        println!("{clip_name:16} {config:14} max |ours - transformers| = {diff:.2e}");
        out.push((format!("{clip_name} {config}"), diff));
    }
    assert_eq!(out.len(), 2, "{clip_name}: both configurations have references");
    out
}

/// The clips whose PCM is the file's own samples: our decoder's output is the reference's input, exactly.
#[test]
fn lossless_clips_match_transformers_within_1e4() {
    for name in ["speech.wav", "silence.wav", "tone-440.wav"] {
        let pcm = decoded(name);
        for (what, diff) in compare_max_length(name, &pcm.samples) {
            assert!(diff <= TOLERANCE, "{what}: {diff:e} > {TOLERANCE:e}");
        }
        let entry = clip(name);
        for f in entry["features"].as_array().unwrap() {
            let ours = extractor(f["config"].as_str().unwrap()).extract(&pcm.samples, Padding::MaxLength);
            assert_eq!(ours.valid_frames as u64, f["valid_frames"].as_u64().unwrap(), "{name}: attention mask sum");
            // transformers' default path when torch is installed (float32 torch.stft) is this far from its numpy
            // path on the clip: by the triangle inequality, within 1e-4 of ours too.
            let torch = f["torch_vs_numpy_max_abs"].as_f64().unwrap() as f32;
            assert!(max_diff(&ours, f) + torch <= TOLERANCE, "{name}: torch path {torch:e} away");
        }
    }
}

/// The extractor alone on the 44.1 kHz clip: fed exactly the PCM the reference was computed from (soxr's 16 kHz).
#[test]
fn resampled_clip_matches_transformers_within_1e4_on_the_same_pcm() {
    let pcm = f32s("stereo-44k.soxr16k.f32");
    for (what, diff) in compare_max_length("stereo-44k.wav", &pcm) {
        assert!(diff <= TOLERANCE, "{what}: {diff:e} > {TOLERANCE:e}");
    }
}

/// Lossy clips decoded by us (symphonia) against the reference computed from ffmpeg's decode of the same file.
/// The two decoders differ by rounding (under 1e-6 per sample, tests/decode.rs), which moves log10 by up to about
/// 1.3e-4 in the quietest bins kept (80 dB under the peak); the extractor itself is checked at 1e-4 above, on
/// identical PCM.
#[test]
fn lossy_clips_decoded_by_us_match_transformers_on_ffmpegs_pcm() {
    for name in ["speech.mp3", "speech.ogg", "speech.m4a"] {
        let pcm = decoded(name);
        for (what, diff) in compare_max_length(name, &pcm.samples) {
            assert!(diff <= LOSSY_TOLERANCE, "{what}: {diff:e} > {LOSSY_TOLERANCE:e}");
        }
    }
}

/// The upper edge in Hz of Slaney mel filter `m` of `n` (0 to 8 kHz).
fn mel_upper_hz(m: usize, n: usize) -> f64 {
    let to_mel = |hz: f64| if hz >= 1000.0 { 15.0 + (hz / 1000.0).ln() * 27.0 / 6.4f64.ln() } else { hz * 3.0 / 200.0 };
    let mel = to_mel(8000.0) * (m + 2) as f64 / (n + 1) as f64;
    if mel >= 15.0 {
        1000.0 * ((mel - 15.0) * 6.4f64.ln() / 27.0).exp()
    } else {
        mel * 200.0 / 3.0
    }
}

/// The whole path on the 44.1 kHz stereo clip: decode, down-mix, our resampler, features, against the reference
/// on soxr's PCM. Resamplers differ in their transition band below 8 kHz (tests/resample.rs: 92 dB apart below
/// 7 kHz), so the top mel bins differ; the yardstick is how far scipy's `resample_poly` lands from soxr (recorded
/// by the fixture script). Printed for the README.
#[test]
fn stereo_44k_through_our_resampler_is_close_to_the_soxr_reference() {
    let pcm = decoded("stereo-44k.wav").resampled(16000).unwrap();
    let entry = clip("stereo-44k.wav");
    for f in entry["features"].as_array().unwrap() {
        let config = f["config"].as_str().unwrap();
        let ours = extractor(config).extract(&pcm.samples, Padding::MaxLength);
        let low = (0..ours.n_mels).filter(|&m| mel_upper_hz(m, ours.n_mels) < 7000.0).count();
        let frames: Vec<usize> = f["frames"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let want = f32s(f["file"].as_str().unwrap());
        let (mut all, mut below) = (0f32, 0f32);
        for (i, &frame) in frames.iter().enumerate() {
            for m in 0..ours.n_mels {
                let d = (ours.at(m, frame) - want[i * ours.n_mels + m]).abs();
                all = all.max(d);
                if m < low {
                    below = below.max(d);
                }
            }
        }
        let scipy = &entry["resampled"][format!("features_resample_poly_vs_soxr_hq_max_abs/{config}")];
        let (scipy_all, scipy_below) =
            (scipy["all_bins"].as_f64().unwrap(), scipy["bins_below_7khz"].as_f64().unwrap());
        println!(
            "stereo-44k.wav {config:14} vs the soxr reference: ours (rubato) all bins {all:.2e}, {low} bins < 7 kHz \
             {below:.2e} | scipy resample_poly all bins {scipy_all:.2e}, bins < 7 kHz {scipy_below:.2e}"
        );
        // As close to soxr as another good resampler (scipy's) is, with a little room.
        assert!(below as f64 <= 1.5 * scipy_below, "{config}: {below:e} in the bins below 7 kHz");
        assert!(all as f64 <= 1.5 * scipy_all, "{config}: {all:e} over all bins");
    }
}

/// Qwen3-ASR's processor does not pad: `samples / 160` frames, all valid (the 45 s clip, 4500 frames).
#[test]
fn longest_padding_matches_the_qwen3_asr_processor() {
    let pcm = decoded("long-45s.mp3");
    let entry = clip("long-45s.mp3");
    let f = entry["features"].as_array().unwrap().iter().find(|f| f["mode"] == "longest").unwrap();
    let ours = extractor(f["config"].as_str().unwrap()).extract(&pcm.samples, Padding::Longest);
    assert_eq!(ours.n_frames as u64, f["n_frames"].as_u64().unwrap());
    assert_eq!(ours.valid_frames as u64, f["valid_frames"].as_u64().unwrap());
    let diff = max_diff(&ours, f);
    println!("long-45s.mp3 longest qwen3-asr-128 max |ours - transformers| = {diff:.2e}");
    assert!(diff <= LOSSY_TOLERANCE, "{diff:e} (an MP3: decoded by us, the reference by ffmpeg)");
}

/// Frame counts and the attention mask at the edges of the hop and of the 30 s window.
#[test]
fn frame_counts_follow_transformers() {
    let fe = FeatureExtractor::new(FeatureConfig::whisper(80)).unwrap();
    let tone: Vec<f32> = (0..480_100).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
    for (len, valid, longest) in [(160, 1, 1), (161, 2, 1), (16000, 100, 100), (479_999, 3000, 2999)] {
        let f = fe.extract(&tone[..len], Padding::MaxLength);
        assert_eq!((f.n_frames, f.valid_frames), (3000, valid), "{len} samples padded");
        assert_eq!(f.attention_mask().iter().sum::<i64>(), valid as i64);
        assert_eq!(fe.extract(&tone[..len], Padding::Longest).n_frames, longest, "{len} samples unpadded");
    }
    // Longer than 30 s: truncated, every frame valid.
    let f = fe.extract(&tone, Padding::MaxLength);
    assert_eq!((f.n_frames, f.valid_frames), (3000, 3000));
    // Shorter than a hop and unpadded: no frame at all, no panic.
    assert_eq!(fe.extract(&tone[..100], Padding::Longest).n_frames, 0);
    assert_eq!(fe.extract(&[], Padding::Longest).n_frames, 0);
}

/// The committed configurations parse to what transformers wrote; values that would change the computation are
/// refused with the field named.
#[test]
fn preprocessor_configs() {
    let whisper = extractor("whisper-80");
    assert_eq!(whisper.config(), &FeatureConfig::whisper(80));
    let qwen = extractor("qwen3-asr-128");
    assert_eq!(qwen.config().n_mels, 128);
    assert!(qwen.config().return_attention_mask);
    let alias = FeatureConfig::from_json(r#"{"num_mel_bins": 128}"#).unwrap();
    assert_eq!(alias.n_mels, 128);
    for (json, field) in [
        (r#"{"dither": 1.0}"#, "dither"),
        (r#"{"feature_extractor_type": "Wav2Vec2FeatureExtractor"}"#, "feature_extractor_type"),
        (r#"{"n_fft": 401}"#, "n_fft"),
        (r#"{"hop_length": 0}"#, "hop_length"),
        (r#"{"n_samples": 480000, "nb_max_frames": 1500}"#, "nb_max_frames"),
    ] {
        let err = FeatureConfig::from_json(json).unwrap_err().to_string();
        assert!(err.contains(field), "{json}: {err}");
    }
    assert!(FeatureConfig::from_json("{").unwrap_err().to_string().contains("not a valid preprocessor_config"));
    // A configuration built in code is checked too.
    let zero_hop = FeatureConfig { hop_length: 0, ..FeatureConfig::whisper(80) };
    assert!(FeatureExtractor::new(zero_hop).unwrap_err().to_string().contains("hop_length"));
}
