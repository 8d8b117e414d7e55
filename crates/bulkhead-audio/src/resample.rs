//! Sample-rate conversion with rubato's synchronous FFT resampler: band-limited (a BlackmanHarris-windowed
//! low-pass below the lower Nyquist frequency, so nothing above it folds back), exact for any pair of integer rates,
//! and with its start-up delay trimmed so output sample `i` is at time `i / to`.
//!
//! transformers' feature extractors refuse audio that is not at the model's rate and leave resampling to the
//! caller; Qwen3-ASR's loader and most Whisper pipelines use `librosa.resample`, i.e. soxr at quality "HQ". The
//! tests measure this resampler against soxr HQ on a 44.1 kHz recording (numbers in the crate README).

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler, WindowFunction};

use crate::AudioError;

/// Output frames per FFT block the resampler aims for: longer blocks give a sharper anti-aliasing filter (a
/// cutoff nearer the Nyquist frequency) at the cost of delay, which offline resampling does not care about.
const BLOCK_OUT: usize = 2048;

/// `samples` at `from` Hz resampled to `to` Hz: `ceil(len * to / from)` samples. A copy when the rates are equal.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>, AudioError> {
    let error = |detail: String| AudioError::Resample { from, to, detail };
    if from == 0 || to == 0 {
        return Err(error("a sample rate of 0 Hz".into()));
    }
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    // FFT blocks of k * (from/gcd) in and k * (to/gcd) out, about BLOCK_OUT out. Both must be even: the delay
    // rubato trims is half a block, and half of an odd block is half a sample (a 0.18-sample time shift from 44.1
    // to 16 kHz otherwise).
    let gcd = gcd(from as u64, to as u64);
    let (block_in, block_out) = (from as u64 / gcd, to as u64 / gcd);
    let mut k = (BLOCK_OUT as u64).div_ceil(block_out).max(1);
    if k % 2 == 1 && (block_in % 2 == 1 || block_out % 2 == 1) {
        k += 1;
    }
    let chunk = (block_in * k) as usize;
    let mut resampler = Fft::<f32>::new_custom(
        from as usize,
        to as usize,
        chunk,
        1,
        1,
        WindowFunction::BlackmanHarris2,
        FixedSync::Input,
    )
    .map_err(|e| error(e.to_string()))?;
    let input = InterleavedSlice::new(samples, 1, samples.len()).map_err(|e| error(e.to_string()))?;
    let output = resampler.process_all(&input, samples.len(), None).map_err(|e| error(e.to_string()))?;
    Ok(output.take_data())
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}
