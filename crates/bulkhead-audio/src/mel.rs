//! The mel filter bank of transformers' `mel_filter_bank(..., norm="slaney", mel_scale="slaney")` (librosa's
//! default `filters.mel`, which openai-whisper ships as `mel_filters.npz`): triangles between mel points spaced
//! evenly on the Slaney scale (linear below 1 kHz, logarithmic above), each scaled by `2 / (right - left)` Hz so
//! every filter has about the same energy. Stored sparse: each filter's non-zero run of FFT bins.

/// One triangular filter: weights for bins `first..first + weights.len()`.
#[derive(Debug)]
pub(crate) struct MelFilter {
    pub first: usize,
    pub weights: Vec<f64>,
}

/// The filters of one configuration, in mel-bin order.
#[derive(Debug)]
pub(crate) struct MelBank {
    pub filters: Vec<MelFilter>,
}

const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = 15.0;

/// Hz to mel on the Slaney scale.
pub(crate) fn hz_to_mel(hz: f64) -> f64 {
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() * (27.0 / 6.4f64.ln())
    } else {
        3.0 * hz / 200.0
    }
}

/// Mel on the Slaney scale to Hz.
pub(crate) fn mel_to_hz(mel: f64) -> f64 {
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * ((6.4f64.ln() / 27.0) * (mel - MIN_LOG_MEL)).exp()
    } else {
        200.0 * mel / 3.0
    }
}

/// numpy's `linspace(start, stop, n)`.
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (stop - start) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
    v[n - 1] = stop;
    v
}

impl MelBank {
    /// `n_mels` Slaney filters over `n_bins` FFT bins (0 to `rate / 2` Hz, as transformers spaces them: integer
    /// `rate // 2`), from `f_min` to `f_max` Hz.
    pub(crate) fn slaney(n_mels: usize, n_bins: usize, rate: u32, f_min: f64, f_max: f64) -> Self {
        let fft_freqs = linspace(0.0, (rate / 2) as f64, n_bins);
        let mel_points = linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2);
        let hz: Vec<f64> = mel_points.iter().map(|&m| mel_to_hz(m)).collect();
        let filters = (0..n_mels)
            .map(|m| {
                let (left, centre, right) = (hz[m], hz[m + 1], hz[m + 2]);
                let enorm = 2.0 / (right - left);
                let dense: Vec<f64> = fft_freqs
                    .iter()
                    .map(|&f| {
                        let down = (f - left) / (centre - left);
                        let up = (right - f) / (right - centre);
                        0f64.max(down.min(up)) * enorm
                    })
                    .collect();
                let first = dense.iter().position(|&w| w > 0.0).unwrap_or(0);
                let last = dense.iter().rposition(|&w| w > 0.0).map_or(first, |l| l + 1);
                MelFilter { first, weights: dense[first..last].to_vec() }
            })
            .collect();
        MelBank { filters }
    }
}
