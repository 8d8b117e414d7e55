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

use std::ops::Range;

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

/// Fixed-point filter taps for a range of output indices of one axis.
struct Taps {
    /// First input index of each output index of the range.
    start: Vec<usize>,
    /// Number of taps of each output index of the range.
    len: Vec<usize>,
    /// `ksize` weights per output index (unused trailing ones are 0).
    weights: Vec<i16>,
    ksize: usize,
    precision: u32,
}

/// One axis's filter geometry.
struct Axis {
    input: usize,
    scale: f64,
    support: f64,
    inv_scale: f64,
    ksize: usize,
    filter: Filter,
}

impl Axis {
    fn new(input: usize, output: usize, filter: Filter) -> Axis {
        let scale = input as f64 / output as f64;
        let support = if scale >= 1.0 { filter.support() * scale } else { filter.support() };
        let inv_scale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
        Axis { input, scale, support, inv_scale, ksize: support.ceil() as usize * 2 + 1, filter }
    }

    /// The normalised f64 weights of output index `i` into `buf`; returns (first input index, tap count).
    fn weights(&self, i: usize, buf: &mut [f64]) -> (usize, usize) {
        let center = self.scale * (i as f64 + 0.5);
        // `as i64` truncates toward zero, as the C++ `static_cast<int64_t>` does.
        let xmin = ((center - self.support + 0.5) as i64).max(0);
        let xmax = ((center + self.support + 0.5) as i64).min(self.input as i64);
        let n = ((xmax - xmin).max(0) as usize).min(buf.len());
        let mut total = 0.0;
        for (j, w) in buf[..n].iter_mut().enumerate() {
            *w = self.filter.weight((j as f64 + xmin as f64 - center + 0.5) * self.inv_scale);
            total += *w;
        }
        if total != 0.0 {
            for w in &mut buf[..n] {
                *w /= total;
            }
        }
        (xmin as usize, n)
    }
}

/// The taps of output indices `range` of an axis resized from `input` to `output`. The fixed-point precision
/// depends on the largest weight of the *whole* axis (as in PyTorch), so every output index is visited once
/// for it, without storing its weights.
fn taps(input: usize, output: usize, filter: Filter, range: Range<usize>) -> Taps {
    let axis = Axis::new(input, output, filter);
    let ksize = axis.ksize;
    let mut buf = vec![0.0f64; ksize];
    let mut w_max = f64::MIN;
    for i in 0..output {
        let (_, n) = axis.weights(i, &mut buf);
        w_max = buf[..n].iter().copied().fold(w_max, f64::max);
        if n < ksize {
            // PyTorch's buffer holds zeros after the taps, and its maximum runs over them too.
            w_max = w_max.max(0.0);
        }
    }
    let mut precision = 0u32;
    while precision < 22 {
        let next = (0.5 + w_max * f64::from(1u32 << (precision + 1))) as i32;
        if next >= 1 << 15 {
            break;
        }
        precision += 1;
    }
    let unit = f64::from(1u32 << precision);
    let mut taps = Taps { start: Vec::new(), len: Vec::new(), weights: Vec::new(), ksize, precision };
    for i in range {
        let (first, n) = axis.weights(i, &mut buf);
        taps.start.push(first);
        taps.len.push(n);
        for (k, &v) in buf.iter().enumerate() {
            let v = if k < n { v } else { 0.0 };
            taps.weights.push(if v < 0.0 { (-0.5 + v * unit) as i32 as i16 } else { (0.5 + v * unit) as i32 as i16 });
        }
    }
    taps
}

fn clamp_shift(sum: i32, precision: u32) -> u8 {
    (sum >> precision).clamp(0, 255) as u8
}

/// A rectangle of an output image: columns `x..x + width`, rows `y..y + height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First column.
    pub x: u32,
    /// First row.
    pub y: u32,
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
}

/// Resizes an RGB image to `width` x `height` with antialiasing, as torchvision's uint8 resize does.
///
/// Both sizes must be at least 1 (the callers derive them from validated configurations).
pub fn resize(image: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let (width, height) = (width.max(1), height.max(1));
    resize_region(image, width, height, filter, Region { x: 0, y: 0, width, height })
}

/// The `region` of `image` resized to `width` x `height`: the same pixels as cropping [`resize`]'s output, but
/// only the region (and the input rows it needs) is ever computed or allocated. A shortest-edge resize of a
/// very elongated image followed by a centre crop thus costs the crop, not the resized image.
///
/// `region` must lie inside `width` x `height` and be at least 1x1.
pub fn resize_region(image: &RgbImage, width: u32, height: u32, filter: Filter, region: Region) -> RgbImage {
    let (in_w, in_h) = (image.width() as usize, image.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    let (x0, y0, w, h) = (region.x as usize, region.y as usize, region.width as usize, region.height as usize);
    assert!(w >= 1 && h >= 1 && x0 + w <= out_w && y0 + h <= out_h, "region {region:?} outside {width}x{height}");
    // The vertical taps of the region's rows, and the input rows they read.
    let vertical_taps = (out_h != in_h).then(|| taps(in_h, out_h, filter, y0..y0 + h));
    let rows = match &vertical_taps {
        Some(t) => {
            let first = t.start.iter().copied().min().unwrap_or(0);
            let end = t.start.iter().zip(&t.len).map(|(s, n)| s + n).max().unwrap_or(first);
            first..end.max(first + 1).min(in_h)
        }
        None => y0..y0 + h,
    };
    let src = &image.as_raw()[rows.start * in_w * 3..rows.end * in_w * 3];
    let wide = if out_w != in_w {
        horizontal(src, in_w, rows.len(), w, &taps(in_w, out_w, filter, x0..x0 + w))
    } else {
        src.chunks_exact(in_w * 3).flat_map(|row| &row[x0 * 3..(x0 + w) * 3]).copied().collect()
    };
    let data = match vertical_taps {
        Some(t) => vertical(&wide, w, rows.start, &t),
        None => wide,
    };
    RgbImage::new(w as u32, h as u32, data).expect("resize keeps the buffer length consistent")
}

fn horizontal(src: &[u8], in_w: usize, rows: usize, out_w: usize, t: &Taps) -> Vec<u8> {
    let mut out = vec![0u8; out_w * rows * 3];
    let half = 1i32 << (t.precision - 1).min(31);
    for (src_row, out_row) in src.chunks_exact(in_w * 3).zip(out.chunks_exact_mut(out_w * 3)) {
        for (x, px) in out_row.chunks_exact_mut(3).enumerate() {
            let k = &t.weights[x * t.ksize..x * t.ksize + t.len[x]];
            let taps = &src_row[t.start[x] * 3..(t.start[x] + k.len()) * 3];
            let mut sum = [half; 3];
            for (&w, p) in k.iter().zip(taps.chunks_exact(3)) {
                let w = i32::from(w);
                sum[0] = sum[0].wrapping_add(i32::from(p[0]) * w);
                sum[1] = sum[1].wrapping_add(i32::from(p[1]) * w);
                sum[2] = sum[2].wrapping_add(i32::from(p[2]) * w);
            }
            for (o, s) in px.iter_mut().zip(sum) {
                *o = clamp_shift(s, t.precision);
            }
        }
    }
    out
}

/// The vertical pass; `src` holds input rows from `first_row` on, `width` pixels each.
fn vertical(src: &[u8], width: usize, first_row: usize, t: &Taps) -> Vec<u8> {
    let stride = width * 3;
    let mut out = vec![0u8; stride * t.start.len()];
    let half = 1i32 << (t.precision - 1).min(31);
    let mut sums = vec![0i32; stride];
    for (y, out_row) in out.chunks_exact_mut(stride).enumerate() {
        sums.fill(half);
        let k = &t.weights[y * t.ksize..y * t.ksize + t.len[y]];
        for (j, &w) in k.iter().enumerate() {
            let at = t.start[y] + j - first_row;
            let row = &src[at * stride..(at + 1) * stride];
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
                let t = taps(input, output, filter, 0..output);
                for i in 0..output {
                    let sum: i32 = t.weights[i * t.ksize..(i + 1) * t.ksize].iter().map(|&w| i32::from(w)).sum();
                    let unit = 1i32 << t.precision;
                    assert!((sum - unit).abs() <= t.ksize as i32, "{input}->{output} {filter:?} row {i}");
                }
            }
        }
    }

    #[test]
    fn a_region_equals_the_crop_of_the_whole() {
        let data: Vec<u8> = (0..61 * 47 * 3).map(|i| (i * 7 % 251) as u8).collect();
        let image = RgbImage::new(61, 47, data).unwrap();
        for (w, h) in [(224, 300), (20, 15), (61, 100), (90, 47)] {
            for filter in [Filter::Bilinear, Filter::Bicubic] {
                let whole = resize(&image, w, h, filter);
                let region = Region { x: w / 5, y: h / 3, width: w / 2, height: h / 2 };
                let part = resize_region(&image, w, h, filter, region);
                for y in 0..region.height {
                    for x in 0..region.width {
                        assert_eq!(part.pixel(x, y), whole.pixel(x + region.x, y + region.y), "{w}x{h} {filter:?}");
                    }
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
