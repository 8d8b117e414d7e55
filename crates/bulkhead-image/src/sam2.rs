//! SAM2's prompt mapping and mask post-processing, as transformers' `Sam2Processor` and
//! `Sam2ImageProcessor.post_process_masks` do them.
//!
//! * Points and boxes (pixels of the original image) are scaled to the model's square input:
//!   `x * f32(target / width)`, `y * f32(target / height)` in `f32` (the processor's `_normalize_coordinates`).
//! * Low-resolution mask logits (256x256) are interpolated straight to the original size (bilinear,
//!   `align_corners=False`, no antialias; SAM2's input is resized without padding, so there is nothing to crop)
//!   and thresholded (`> 0.0` by default).

use crate::config::Size;
use crate::error::PromptError;
use crate::mask::Mask;

/// A prompt point in original-image pixels with its label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Pixels from the left edge.
    pub x: f32,
    /// Pixels from the top edge.
    pub y: f32,
    /// `true` for foreground (label 1), `false` for background (label 0).
    pub foreground: bool,
}

/// A prompt box in original-image pixels: top-left then bottom-right corner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxPrompt {
    /// Left.
    pub x0: f32,
    /// Top.
    pub y0: f32,
    /// Right.
    pub x1: f32,
    /// Bottom.
    pub y1: f32,
}

fn finite(values: &[f32]) -> Result<(), PromptError> {
    match values.iter().find(|v| !v.is_finite()) {
        Some(&v) => Err(PromptError::NotFinite(v)),
        None => Ok(()),
    }
}

fn factors(original: Size, target: u32) -> (f32, f32) {
    // Python `new_w / old_w` is a float64 division; torch multiplies the float32 coordinates by it as float32.
    ((f64::from(target) / f64::from(original.width)) as f32, (f64::from(target) / f64::from(original.height)) as f32)
}

/// Maps a point from the original image to the model's `target` x `target` input (1024 for SAM2).
///
/// Points outside the image (beyond `0..=width`, `0..=height`) are refused: they are almost always swapped or
/// mis-scaled coordinates.
pub fn map_point(point: Point, original: Size, target: u32) -> Result<[f32; 2], PromptError> {
    finite(&[point.x, point.y])?;
    let (w, h) = (original.width as f32, original.height as f32);
    if point.x < 0.0 || point.y < 0.0 || point.x > w || point.y > h {
        let (width, height) = (original.width, original.height);
        return Err(PromptError::PointOutside { x: point.x, y: point.y, width, height });
    }
    let (fx, fy) = factors(original, target);
    Ok([point.x * fx, point.y * fy])
}

/// Maps a box from the original image to the model's `target` x `target` input, as `[x0, y0, x1, y1]`.
pub fn map_box(b: BoxPrompt, original: Size, target: u32) -> Result<[f32; 4], PromptError> {
    finite(&[b.x0, b.y0, b.x1, b.y1])?;
    let (w, h) = (original.width as f32, original.height as f32);
    let inside = |v: f32, max: f32| (0.0..=max).contains(&v);
    if !(b.x0 <= b.x1 && b.y0 <= b.y1 && inside(b.x0, w) && inside(b.x1, w) && inside(b.y0, h) && inside(b.y1, h)) {
        let (width, height) = (original.width, original.height);
        return Err(PromptError::BadBox { x0: b.x0, y0: b.y0, x1: b.x1, y1: b.y1, width, height });
    }
    let (fx, fy) = factors(original, target);
    Ok([b.x0 * fx, b.y0 * fy, b.x1 * fx, b.y1 * fy])
}

/// Source index and weights of one output index for bilinear, `align_corners=False` (PyTorch's
/// `compute_source_index_and_lambda` in `f32`).
fn linear_taps(input: usize, output: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            if input == output {
                return (o, o, 1.0, 0.0);
            }
            let real = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (real.floor() as usize).min(input - 1);
            let l1 = (real - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// Bilinearly interpolates `masks` planes of `low` size to `original` size (width pass, then height pass, as
/// PyTorch's separable CPU kernel does). Returns `masks x height x width` values.
pub fn upscale_logits(logits: &[f32], masks: usize, low: Size, original: Size) -> Result<Vec<f32>, PromptError> {
    let (lh, lw) = (low.height as usize, low.width as usize);
    let (oh, ow) = (original.height as usize, original.width as usize);
    if logits.len() != masks * lh * lw || lh == 0 || lw == 0 {
        return Err(PromptError::BadLogits { got: logits.len(), masks, height: lh, width: lw });
    }
    let xs = linear_taps(lw, ow);
    let ys = linear_taps(lh, oh);
    let mut out = Vec::with_capacity(masks * oh * ow);
    let mut wide = vec![0.0f32; lh * ow];
    for plane in logits.chunks_exact(lh * lw) {
        for (src, dst) in plane.chunks_exact(lw).zip(wide.chunks_exact_mut(ow)) {
            for (d, &(i0, i1, l0, l1)) in dst.iter_mut().zip(&xs) {
                *d = src[i0] * l0 + src[i1] * l1;
            }
        }
        for &(i0, i1, l0, l1) in &ys {
            let (r0, r1) = (&wide[i0 * ow..(i0 + 1) * ow], &wide[i1 * ow..(i1 + 1) * ow]);
            out.extend(r0.iter().zip(r1).map(|(&a, &b)| a * l0 + b * l1));
        }
    }
    Ok(out)
}

/// `post_process_masks`: upscale low-resolution logits to the original size and keep `value > threshold`
/// (transformers' default threshold is 0.0).
pub fn post_process_masks(
    logits: &[f32],
    masks: usize,
    low: Size,
    original: Size,
    threshold: f32,
) -> Result<Vec<Mask>, PromptError> {
    let values = upscale_logits(logits, masks, low, original)?;
    let plane = original.height as usize * original.width as usize;
    Ok(values.chunks_exact(plane).map(|v| Mask::from_fn(original, |i| v[i] > threshold)).collect())
}
