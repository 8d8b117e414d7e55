//! Temperature fallback, as transformers' `WhisperForConditionalGeneration.generate` does it with a list of
//! temperatures (`generate_with_fallback`, `_need_fallback`), with openai-whisper's `transcribe` defaults
//! ([`Fallback::default`]): each 30-second window is decoded at the first temperature of the schedule; when the
//! result fails a quality check (the zlib compression ratio of its tokens above `compression_ratio_threshold`, or the
//! average log-probability of its tokens below `logprob_threshold`) it is decoded again at the next temperature, and
//! the last temperature's result is kept whatever it scores. When the average log-probability is below its threshold
//! and the probability of `<|nospeech|>` at `<|startoftranscript|>` is above `no_speech_threshold`, the window is
//! silence: no fallback, and the window is skipped (no segment).
//!
//! The checks are transformers' (`_retrieve_compression_ratio`, `_retrieve_avg_logprobs`): the compression ratio is
//! that of the window's generated token ids (end of text included) written as little-endian integers of
//! `int(log2(vocab_size) / 8) + 1` bytes, compressed as Python's `zlib.compress` (level 6); the average
//! log-probability is the mean over the same tokens of the log-softmax of the processed logits (suppression and
//! timestamp rules applied, before the temperature). The no-speech probability is the softmax of the raw logits at
//! the position of `<|startoftranscript|>`, at the id before `<|notimestamps|>` (`WhisperNoSpeechDetection`).
//!
//! A temperature above 0 samples from `softmax(logits / T)` of the processed logits, as openai-whisper's decoder does
//! (transformers' sampler also keeps only the 50 most probable tokens, its default `top_k`; there is no top-k here),
//! with a [`SplitMix64`] generator seeded by [`Fallback::seed`] once per transcription: the same request gives the same
//! text. Temperature 0 is the greedy choice (the first maximum), exactly as without fallback.

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::logits::{argmax, Rules};
use crate::model::EncoderOutput;
use crate::{DecoderCall, SpeechError, WhisperModel};

/// The seed of a request that gives none.
pub const DEFAULT_SEED: u64 = 0;

/// How a transcription falls back to higher temperatures (openai-whisper's `transcribe` defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct Fallback {
    /// The schedule, tried in order (default 0.0, 0.2, 0.4, 0.6, 0.8, 1.0); 0 is greedy decoding.
    pub temperatures: Vec<f32>,
    /// A window whose compression ratio is above this is decoded again (default 2.4; `None`: no check).
    pub compression_ratio_threshold: Option<f64>,
    /// A window whose average log-probability is below this is decoded again (default -1.0; `None`: no check).
    pub logprob_threshold: Option<f64>,
    /// A window whose no-speech probability is above this, with its average log-probability below
    /// `logprob_threshold`, is silence and skipped (default 0.6; `None`: never skipped).
    pub no_speech_threshold: Option<f64>,
    /// Where the sampling generator starts (default [`DEFAULT_SEED`]).
    pub seed: u64,
}

impl Default for Fallback {
    fn default() -> Self {
        Fallback {
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            compression_ratio_threshold: Some(2.4),
            logprob_threshold: Some(-1.0),
            no_speech_threshold: Some(0.6),
            seed: DEFAULT_SEED,
        }
    }
}

impl Fallback {
    /// The default checks with the schedule starting at `temperature`: `temperature`, then steps of 0.2 up to 1.0
    /// (openai-whisper's `--temperature` with `--temperature_increment_on_fallback 0.2`); 0 is the default schedule.
    pub fn starting_at(temperature: f32) -> Fallback {
        let start = f64::from(temperature);
        let temperatures = (0..)
            .map(|i| start + 0.2 * f64::from(i))
            .take_while(|&t| t == start || t <= 1.0 + 1e-6)
            .map(|t| ((t * 1e4).round() / 1e4) as f32)
            .collect();
        Fallback { temperatures, ..Fallback::default() }
    }

    /// Refuses an empty schedule, a negative or non-finite temperature and non-finite thresholds.
    pub fn check(&self) -> Result<(), SpeechError> {
        if self.temperatures.is_empty() {
            return Err(SpeechError::Options("the temperature schedule is empty: give at least one".into()));
        }
        if let Some(t) = self.temperatures.iter().find(|t| !t.is_finite() || **t < 0.0) {
            return Err(SpeechError::Options(format!("temperature {t} is not a number >= 0")));
        }
        let thresholds = [
            ("compression_ratio_threshold", self.compression_ratio_threshold),
            ("logprob_threshold", self.logprob_threshold),
            ("no_speech_threshold", self.no_speech_threshold),
        ];
        for (name, value) in thresholds {
            if value.is_some_and(|v| !v.is_finite()) {
                return Err(SpeechError::Options(format!("{name} is not a finite number")));
            }
        }
        Ok(())
    }
}

/// How a window was decoded (OpenAI's segment fields): the temperature kept and its scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WindowDecoding {
    /// The temperature of the decoding kept (0: greedy).
    pub temperature: f32,
    /// The mean log-probability of its tokens (end of text included).
    pub avg_logprob: f64,
    /// The zlib compression ratio of its tokens.
    pub compression_ratio: f64,
    /// The probability of `<|nospeech|>` at `<|startoftranscript|>`; computed with a [`Fallback`] only.
    pub no_speech_prob: Option<f64>,
    /// Decodings of the window (1 when the first temperature passed the checks).
    pub attempts: usize,
}

/// One window decoded: its tokens (pad removed, end of text kept when reached), how, and whether it is silence.
pub(crate) struct DecodedWindow {
    pub seq: Vec<i64>,
    pub decoding: WindowDecoding,
    pub skip: bool,
}

/// transformers' `_retrieve_compression_ratio`: raw bytes over zlib-compressed bytes of the token ids, each written
/// as `int(log2(vocab_size) / 8) + 1` little-endian bytes.
pub fn compression_ratio(tokens: &[i64], vocab_size: usize) -> f64 {
    let width = ((vocab_size.max(2) as f64).log2() / 8.0) as usize + 1;
    let bytes: Vec<u8> = tokens.iter().flat_map(|&t| (t as u64).to_le_bytes().into_iter().take(width)).collect();
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    let compressed = z.write_all(&bytes).and_then(|()| z.finish()).map(|c| c.len()).unwrap_or(usize::MAX);
    bytes.len() as f64 / compressed as f64
}

/// SplitMix64 (Steele, Lea and Flood): a small generator whose sequence for a seed never changes across versions.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A draw from `softmax(scores / temperature)`; `-inf` scores are never drawn.
pub(crate) fn sample(scores: &[f32], temperature: f32, rng: &mut SplitMix64) -> usize {
    let best = argmax(scores);
    let max = f64::from(scores[best]);
    let t = f64::from(temperature);
    let weights: Vec<f64> = scores.iter().map(|&s| ((f64::from(s) - max) / t).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.next_f64() * total;
    for (i, w) in weights.iter().enumerate() {
        if *w > 0.0 {
            if u < *w {
                return i;
            }
            u -= w;
        }
    }
    best
}

/// `log_softmax(scores)[token]`.
fn log_prob(scores: &[f32], token: usize) -> f64 {
    let max = f64::from(scores.iter().copied().fold(f32::NEG_INFINITY, f32::max));
    let sum: f64 = scores.iter().map(|&s| (f64::from(s) - max).exp()).sum();
    f64::from(scores[token]) - max - sum.ln()
}

/// What one window's decoding needs besides the model.
pub(crate) struct WindowInput<'a> {
    pub encoded: &'a EncoderOutput,
    /// Prompt or previous text, then the prefix.
    pub input: &'a [i64],
    /// Where `<|startoftranscript|>` is in `input`.
    pub sot: usize,
    pub rules: &'a Rules,
    /// Most tokens in all, input included.
    pub limit: usize,
}

impl WhisperModel {
    /// Decodes one window: greedily without `fallback`, else along its schedule until a decoding passes the checks.
    pub(crate) fn decode_window(
        &mut self,
        w: &WindowInput<'_>,
        fallback: Option<&Fallback>,
        rng: &mut SplitMix64,
        calls: &mut Vec<DecoderCall>,
    ) -> Result<DecodedWindow, SpeechError> {
        let Some(f) = fallback else {
            let (seq, decoding) = self.attempt(w, 0.0, rng, calls)?;
            return Ok(DecodedWindow { seq, decoding, skip: false });
        };
        let no_speech = self.no_speech_prob(w, calls)?;
        let mut attempts = 0;
        let mut kept = None;
        for &t in &f.temperatures {
            attempts += 1;
            let (seq, mut decoding) = self.attempt(w, t, rng, calls)?;
            decoding.no_speech_prob = no_speech;
            decoding.attempts = attempts;
            let low_logprob = f.logprob_threshold.is_some_and(|l| decoding.avg_logprob < l);
            let mut again =
                f.compression_ratio_threshold.is_some_and(|c| decoding.compression_ratio > c) || low_logprob;
            let mut skip = false;
            if low_logprob && f.no_speech_threshold.zip(no_speech).is_some_and(|(n, p)| p > n) {
                again = false;
                skip = true;
            }
            tracing::debug!(temperature = t, ?decoding, again, skip, "window decoded");
            kept = Some(DecodedWindow { seq, decoding, skip });
            if !again {
                break;
            }
        }
        kept.ok_or_else(|| SpeechError::Options("the temperature schedule is empty: give at least one".into()))
    }

    /// One decoding of a window at `temperature`: its tokens and scores.
    fn attempt(
        &mut self,
        w: &WindowInput<'_>,
        temperature: f32,
        rng: &mut SplitMix64,
        calls: &mut Vec<DecoderCall>,
    ) -> Result<(Vec<i64>, WindowDecoding), SpeechError> {
        let eos = self.generation().eos.clone();
        let pad = self.generation().pad;
        let mut state = self.start(w.encoded)?;
        let mut logits = self.step(&mut state, w.input)?;
        let mut generated = vec![];
        let mut logprobs = vec![];
        loop {
            w.rules.apply(&mut logits, &generated);
            let next = if temperature > 0.0 { sample(&logits, temperature, rng) } else { argmax(&logits) };
            logprobs.push(log_prob(&logits, next));
            generated.push(next as i64);
            if eos.contains(&(next as i64)) || w.input.len() + generated.len() >= w.limit {
                break;
            }
            logits = self.step(&mut state, &[next as i64])?;
        }
        calls.append(&mut state.calls);
        // transformers removes trailing padding, keeping an end of text that is also the pad token.
        if let Some(pad) = pad.filter(|p| generated.last() == Some(p)) {
            let n = generated.iter().filter(|&&t| t == pad).count() - usize::from(eos.contains(&pad));
            generated.truncate(generated.len() - n);
        }
        let n = generated.len();
        let avg_logprob = if n == 0 { f64::NEG_INFINITY } else { logprobs[..n].iter().sum::<f64>() / n as f64 };
        let decoding = WindowDecoding {
            temperature,
            avg_logprob,
            compression_ratio: compression_ratio(&generated, self.config().vocab),
            no_speech_prob: None,
            attempts: 1,
        };
        Ok((generated, decoding))
    }

    /// The probability of `<|nospeech|>` (the id before `<|notimestamps|>`) at `<|startoftranscript|>`: the softmax
    /// of the raw logits there. One decoder run of the input up to it; `None` when the model has no
    /// `<|notimestamps|>`.
    fn no_speech_prob(
        &mut self,
        w: &WindowInput<'_>,
        calls: &mut Vec<DecoderCall>,
    ) -> Result<Option<f64>, SpeechError> {
        let Some(token) = self.generation().no_timestamps.and_then(|t| usize::try_from(t - 1).ok()) else {
            return Ok(None);
        };
        let mut state = self.start(w.encoded)?;
        let logits = self.step(&mut state, &w.input[..=w.sot])?;
        calls.append(&mut state.calls);
        Ok((token < logits.len()).then(|| log_prob(&logits, token).exp()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_ratio_is_pythons() {
        // The numbers of Python's zlib, as transformers computes them:
        // python -c "import zlib, math; t=[50258, 50259, 50359, 50363, 440, 1723, 50257]; \
        //   b=b''.join(x.to_bytes(int(math.log2(51865)/8)+1, 'little') for x in t); \
        //   print(len(b), len(zlib.compress(b)))"
        let cases: [(Vec<i64>, usize, usize, usize); 8] = [
            (vec![50258, 50259, 50359, 50363, 440, 1723, 50257], 51865, 14, 23),
            ([220i64, 1530].repeat(40).into_iter().chain([50257]).collect(), 51865, 162, 17),
            ((0..300).map(|i| (i * 7919) % 51865).collect(), 51865, 600, 611),
            ((0..100).map(|i| (i * i * 31) % 90).collect(), 100, 100, 94),
            (vec![], 51865, 0, 8),
            ((0..500).map(|i| (i * i) % 1000 + i / 7).collect(), 51865, 1000, 815),
            ((0..500).map(|i| (i * i) % 1000 + i / 7).collect(), 1 << 24, 2000, 1057),
            ([50364].into_iter().chain([440, 2068, 1530, 11, 220].repeat(30)).chain([50257]).collect(), 51866, 304, 26),
        ];
        for (tokens, vocab, raw, compressed) in cases {
            let ratio = compression_ratio(&tokens, vocab);
            assert_eq!(ratio, raw as f64 / compressed as f64, "{} tokens, vocab {vocab}", tokens.len());
        }
    }

    #[test]
    fn schedules_start_where_asked() {
        assert_eq!(Fallback::default().temperatures, vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(Fallback::starting_at(0.0).temperatures, Fallback::default().temperatures);
        assert_eq!(Fallback::starting_at(0.5).temperatures, vec![0.5, 0.7, 0.9]);
        assert_eq!(Fallback::starting_at(1.5).temperatures, vec![1.5]);
        assert!(Fallback { temperatures: vec![], ..Fallback::default() }.check().is_err());
        assert!(Fallback { temperatures: vec![-0.1], ..Fallback::default() }.check().is_err());
        assert!(Fallback { logprob_threshold: Some(f64::NAN), ..Fallback::default() }.check().is_err());
        assert!(Fallback::starting_at(0.7).check().is_ok());
    }

    #[test]
    fn sampling_follows_the_temperature() {
        let scores = [1.0, 3.0, f32::NEG_INFINITY, 2.9];
        let mut rng = SplitMix64::new(7);
        // A tiny temperature is the greedy choice.
        assert!((0..200).all(|_| sample(&scores, 1e-4, &mut rng) == 1));
        // At 1, every finite score is drawn about as often as its probability; -inf never.
        let mut counts = [0usize; 4];
        for _ in 0..20_000 {
            counts[sample(&scores, 1.0, &mut rng)] += 1;
        }
        assert_eq!(counts[2], 0);
        let total: f64 = scores.iter().filter(|s| s.is_finite()).map(|&s| f64::from(s).exp()).sum();
        for i in [0, 1, 3] {
            let expected = f64::from(scores[i]).exp() / total;
            let seen = counts[i] as f64 / 20_000.0;
            assert!((seen - expected).abs() < 0.02, "index {i}: {seen} drawn, {expected} expected");
        }
        // The same seed draws the same sequence.
        let draw = |seed| {
            let mut r = SplitMix64::new(seed);
            (0..50).map(|_| sample(&scores, 1.0, &mut r)).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn log_probs_are_log_softmax() {
        let lp = log_prob(&[0.0, 0.0, f32::NEG_INFINITY], 1);
        assert!((lp - 0.5f64.ln()).abs() < 1e-12);
    }
}
