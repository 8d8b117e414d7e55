//! Antialiased separable resampling of 8-bit images, bit-exact with the path transformers takes by default.
//!
//! Transformers 5's image processors (`CLIPImageProcessor`, `SiglipImageProcessor`, `Sam2ImageProcessor`) run
//! on the torchvision backend: `torchvision.transforms.v2.functional.resize(uint8 tensor, antialias=True)`.
//! On x86 with AVX2/AVX-512 and on ARM, torchvision keeps the tensor in `uint8` for bilinear and bicubic and calls
//! PyTorch's native uint8 antialias kernel, itself derived from Pillow-SIMD's `ImagingResample`:
//!
//! * per axis, a filter of support `s * scale` (scale = in/out when shrinking, 1 when enlarging; `s` = 1 for
//!   bilinear's triangle, 2 for bicubic's cubic with a = -0.5) centred on `scale * (i + 0.5)`, taps
//!   `[trunc(centre - support + 0.5), trunc(centre + support + 0.5))` clipped to the image, weights
//!   normalised to sum 1 in f64;
//! * weights rounded to `i16` fixed point with the largest precision `p <= 22` for which `2 * max_weight * 2^p`
//!   stays below 2^15 (round half away from zero);
//! * the horizontal pass first (when the width changes), then the vertical pass (when the height changes), each
//!   computing `(2^(p-1) + sum(pixel * weight)) >> p` in `i32` and clamping to 0..=255, so the intermediate image
//!   is `uint8` like the final one.
//!
//! Pillow's own resize differs only in using a fixed 22-bit precision in `i32`, so results can differ from PIL
//! by one level on a few pixels; transformers' default (torchvision) path is what this module reproduces.

use crate::decode::RgbImage;

/// The interpolation filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Triangle filter (PIL `BILINEAR` = 2).
    Bilinear,
    /// Cubic convolution with a = -0.5 (PIL `BICUBIC` = 3).
    Bicubic,
}

impl Filter {
    /// Half-width of the filter at scale 1.
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Fixed-point filter taps for one axis.
struct Taps {
    /// First input index of each output index.
    start: Vec<usize>,
    /// Number of taps of each output index.
    len: Vec<usize>,
    /// `ksize` weights per output index (unused trailing ones are 0).
    weights: Vec<i16>,
    ksize: usize,
    precision: u32,
}

fn taps(input: usize, output: usize, filter: Filter) -> Taps {
    let scale = input as f64 / output as f64;
    let support = if scale >= 1.0 { filter.support() * scale } else { filter.support() };
    let ksize = support.ceil() as usize * 2 + 1;
    let inv_scale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let mut start = Vec::with_capacity(output);
    let mut len = Vec::with_capacity(output);
    let mut real = vec![0.0f64; output * ksize];
    for i in 0..output {
        let center = scale * (i as f64 + 0.5);
        // `as i64` truncates toward zero, as the C++ `static_cast<int64_t>` does.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(input as i64);
        let n = (xmax - xmin).max(0) as usize;
        let row = &mut real[i * ksize..i * ksize + n];
        let mut total = 0.0;
        for (j, w) in row.iter_mut().enumerate() {
            *w = filter.weight((j as f64 + xmin as f64 - center + 0.5) * inv_scale);
            total += *w;
        }
        if total != 0.0 {
            for w in row.iter_mut() {
                *w /= total;
            }
        }
        start.push(xmin as usize);
        len.push(n);
    }
    let w_max = real.iter().copied().fold(real[0], f64::max);
    let mut precision = 0u32;
    while precision < 22 {
        let next = (0.5 + w_max * f64::from(1u32 << (precision + 1))) as i32;
        if next >= 1 << 15 {
            break;
        }
        precision += 1;
    }
    let unit = f64::from(1u32 << precision);
    let weights = real
        .iter()
        .map(|&v| if v < 0.0 { (-0.5 + v * unit) as i32 as i16 } else { (0.5 + v * unit) as i32 as i16 })
        .collect();
    Taps { start, len, weights, ksize, precision }
}

fn clamp_shift(sum: i32, precision: u32) -> u8 {
    (sum >> precision).clamp(0, 255) as u8
}

/// Resizes an RGB image to `width` x `height` with antialiasing, as torchvision's uint8 resize does.
///
/// Both sizes must be at least 1 (the callers derive them from validated configurations).
pub fn resize(image: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let (in_w, in_h) = (image.width() as usize, image.height() as usize);
    let (out_w, out_h) = (width.max(1) as usize, height.max(1) as usize);
    let mut data = image.as_raw().to_vec();
    if out_w != in_w {
        data = horizontal(&data, in_w, in_h, out_w, &taps(in_w, out_w, filter));
    }
    if out_h != in_h {
        data = vertical(&data, out_w, in_h, out_h, &taps(in_h, out_h, filter));
    }
    RgbImage::new(out_w as u32, out_h as u32, data).expect("resize keeps the buffer length consistent")
}

fn horizontal(src: &[u8], in_w: usize, rows: usize, out_w: usize, t: &Taps) -> Vec<u8> {
    let mut out = vec![0u8; out_w * rows * 3];
    let half = 1i32 << (t.precision - 1).min(31);
    for (src_row, out_row) in src.chunks_exact(in_w * 3).zip(out.chunks_exact_mut(out_w * 3)) {
        for x in 0..out_w {
            let k = &t.weights[x * t.ksize..x * t.ksize + t.len[x]];
            let first = t.start[x];
            let mut sum = [half; 3];
            for (j, &w) in k.iter().enumerate() {
                let p = &src_row[(first + j) * 3..(first + j) * 3 + 3];
                for c in 0..3 {
                    sum[c] = sum[c].wrapping_add(i32::from(p[c]) * i32::from(w));
                }
            }
            for c in 0..3 {
                out_row[x * 3 + c] = clamp_shift(sum[c], t.precision);
            }
        }
    }
    out
}

fn vertical(src: &[u8], width: usize, in_h: usize, out_h: usize, t: &Taps) -> Vec<u8> {
    debug_assert_eq!(src.len(), width * in_h * 3);
    let stride = width * 3;
    let mut out = vec![0u8; stride * out_h];
    let half = 1i32 << (t.precision - 1).min(31);
    let mut sums = vec![0i32; stride];
    for (y, out_row) in out.chunks_exact_mut(stride).enumerate() {
        sums.fill(half);
        let k = &t.weights[y * t.ksize..y * t.ksize + t.len[y]];
        for (j, &w) in k.iter().enumerate() {
            let row = &src[(t.start[y] + j) * stride..(t.start[y] + j + 1) * stride];
            for (s, &p) in sums.iter_mut().zip(row) {
                *s = s.wrapping_add(i32::from(p) * i32::from(w));
            }
        }
        for (o, &s) in out_row.iter_mut().zip(&sums) {
            *o = clamp_shift(s, t.precision);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_of_each_output_sum_to_about_one() {
        for (input, output) in [(517, 224), (333, 1024), (1, 224), (224, 7), (4000, 224)] {
            for filter in [Filter::Bilinear, Filter::Bicubic] {
                let t = taps(input, output, filter);
                for i in 0..output {
                    let sum: i32 = t.weights[i * t.ksize..(i + 1) * t.ksize].iter().map(|&w| i32::from(w)).sum();
                    let unit = 1i32 << t.precision;
                    assert!((sum - unit).abs() <= t.ksize as i32, "{input}->{output} {filter:?} row {i}");
                }
            }
        }
    }

    #[test]
    fn a_flat_image_stays_flat() {
        let image = RgbImage::new(37, 23, [10u8, 128, 250].repeat(37 * 23)).unwrap();
        for filter in [Filter::Bilinear, Filter::Bicubic] {
            let out = resize(&image, 224, 9, filter);
            assert!(out.as_raw().chunks_exact(3).all(|p| p == [10, 128, 250]));
        }
    }
}
