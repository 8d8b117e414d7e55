//! The log-mel features of transformers' `WhisperFeatureExtractor`, computed as its numpy path does: the audio
//! padded (or truncated) with `padding_value`, centred frames with numpy's `reflect` padding, a periodic Hann
//! window, the power spectrum of a real FFT in float64, a Slaney-scale mel filter bank with Slaney normalisation
//! (0 to 8000 Hz), `log10(max(mel, 1e-10))` cast to float32, the last frame dropped, then `max(x, max - 8)` and
//! `(x + 4) / 4` in float32. The window, the filter bank and the FFT plan are made once per extractor.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

use crate::mel::MelBank;
use crate::{ConfigError, FeatureConfig};

/// How the audio is brought to the model's input length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Pad with `padding_value` or truncate to `n_samples` (30 s): always `nb_max_frames` (3000) frames, the
    /// Whisper input (transformers' default, `padding="max_length"`).
    MaxLength,
    /// The audio as it is (`padding="longest"` on one clip, `truncation=False`): `samples / hop_length` frames,
    /// as Qwen3-ASR's processor computes them.
    Longest,
}

/// Log-mel features, `[n_mels][n_frames]` row-major (the layout of transformers' `input_features[0]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    /// The values, mel bin by mel bin.
    pub data: Vec<f32>,
    /// Mel bins (rows).
    pub n_mels: usize,
    /// Frames (columns).
    pub n_frames: usize,
    /// Frames that hold audio rather than padding: the attention mask's sum as transformers returns it
    /// (`ceil(samples / hop)` capped at `n_frames` for [`Padding::MaxLength`], `n_frames` for
    /// [`Padding::Longest`]).
    pub valid_frames: usize,
}

impl Features {
    /// The value of mel bin `mel` at frame `frame`.
    pub fn at(&self, mel: usize, frame: usize) -> f32 {
        self.data[mel * self.n_frames + frame]
    }

    /// One mel bin's values over time.
    pub fn row(&self, mel: usize) -> &[f32] {
        &self.data[mel * self.n_frames..(mel + 1) * self.n_frames]
    }

    /// The attention mask over frames (1 for audio, 0 for padding), as transformers returns it.
    pub fn attention_mask(&self) -> Vec<i64> {
        (0..self.n_frames).map(|f| i64::from(f < self.valid_frames)).collect()
    }
}

/// Computes log-mel features for one configuration. Cheap to share (`Arc` inside) and `Send + Sync`.
#[derive(Clone)]
pub struct FeatureExtractor {
    config: FeatureConfig,
    window: Arc<[f64]>,
    bank: Arc<MelBank>,
    fft: Arc<dyn RealToComplex<f64>>,
}

impl std::fmt::Debug for FeatureExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureExtractor").field("config", &self.config).finish_non_exhaustive()
    }
}

impl FeatureExtractor {
    /// An extractor for `config` (the window, filter bank and FFT plan are made here, once); a configuration with
    /// zero sizes, an odd FFT length or inconsistent lengths is refused.
    pub fn new(config: FeatureConfig) -> Result<Self, ConfigError> {
        config.check(std::path::Path::new("<FeatureConfig>"))?;
        let n = config.n_fft;
        // np.hanning(n + 1)[:-1]: the periodic Hann window.
        let window: Arc<[f64]> =
            (0..n).map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos()).collect();
        let bank = Arc::new(MelBank::slaney(config.n_mels, n / 2 + 1, config.sampling_rate, 0.0, 8000.0));
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(n);
        Ok(FeatureExtractor { config, window, bank, fft })
    }

    /// The configuration.
    pub fn config(&self) -> &FeatureConfig {
        &self.config
    }

    /// The rate the samples must be at (resample first otherwise: [`crate::Pcm::resampled`]).
    pub fn sampling_rate(&self) -> u32 {
        self.config.sampling_rate
    }

    /// The features of mono `samples` at [`Self::sampling_rate`], padded as `padding` says.
    pub fn extract(&self, samples: &[f32], padding: Padding) -> Features {
        let hop = self.config.hop_length;
        match padding {
            Padding::MaxLength => {
                let n = self.config.n_samples;
                let used = &samples[..samples.len().min(n)];
                let mut f = self.normalised(used, n);
                f.valid_frames = used.len().div_ceil(hop).min(f.n_frames);
                f
            }
            Padding::Longest => self.normalised(samples, samples.len()),
        }
    }

    /// `log10` mel features of `samples` extended with `padding_value` to `padded_len` samples, normalised
    /// (clamped to the maximum less 8, then `(x + 4) / 4`) over all of them. `padded_len / hop_length` frames.
    pub(crate) fn normalised(&self, samples: &[f32], padded_len: usize) -> Features {
        let (mut data, n_frames) = self.log_mel(samples, padded_len);
        if !data.is_empty() {
            let max = data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let floor = max - 8.0;
            for v in &mut data {
                *v = (v.max(floor) + 4.0) / 4.0;
            }
        }
        Features { data, n_mels: self.config.n_mels, n_frames, valid_frames: n_frames }
    }

    /// `log10(max(mel power, 1e-10))` as float32, `[n_mels][frames]`, frames = `padded_len / hop_length`.
    fn log_mel(&self, samples: &[f32], padded_len: usize) -> (Vec<f32>, usize) {
        let cfg = &self.config;
        let (n_fft, hop, n_mels) = (cfg.n_fft, cfg.hop_length, cfg.n_mels);
        let n_frames = padded_len / hop;
        let mut out = vec![0f32; n_mels * n_frames];
        if n_frames == 0 {
            return (out, 0);
        }
        let signal = Signal { samples, padded_len, pad: cfg.padding_value as f64 };
        let half = (n_fft / 2) as isize;
        let mut frame = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f64; spectrum.len()];
        for t in 0..n_frames {
            let start = (t * hop) as isize - half;
            if start >= 0 && start as usize + n_fft <= samples.len().min(padded_len) {
                let s = &samples[start as usize..start as usize + n_fft];
                for ((f, &x), &w) in frame.iter_mut().zip(s).zip(self.window.iter()) {
                    *f = x as f64 * w;
                }
            } else {
                for (j, (f, &w)) in frame.iter_mut().zip(self.window.iter()).enumerate() {
                    *f = signal.reflected(start + j as isize) * w;
                }
            }
            // realfft only fails on buffers of the wrong length; these come from the plan itself.
            self.fft.process_with_scratch(&mut frame, &mut spectrum, &mut scratch).expect("buffers sized by the plan");
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.re * c.re + c.im * c.im;
            }
            for (m, filter) in self.bank.filters.iter().enumerate() {
                let bins = &power[filter.first..filter.first + filter.weights.len()];
                let mel: f64 = bins.iter().zip(&filter.weights).map(|(p, w)| p * w).sum();
                out[m * n_frames + t] = mel.max(1e-10).log10() as f32;
            }
        }
        (out, n_frames)
    }
}

/// The samples as the STFT sees them: extended to `padded_len` with `pad`, then mirrored at both ends without
/// repeating the edge sample (numpy's `reflect`, which folds again and again when the padding is longer).
struct Signal<'a> {
    samples: &'a [f32],
    padded_len: usize,
    pad: f64,
}

impl Signal<'_> {
    fn at(&self, i: usize) -> f64 {
        self.samples.get(i).filter(|_| i < self.padded_len).map_or(self.pad, |&x| x as f64)
    }

    fn reflected(&self, i: isize) -> f64 {
        let n = self.padded_len as isize;
        if n == 1 {
            return self.at(0);
        }
        let period = 2 * (n - 1);
        let m = i.rem_euclid(period);
        self.at(if m >= n { period - m } else { m } as usize)
    }
}
