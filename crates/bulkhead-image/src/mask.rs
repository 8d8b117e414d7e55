//! Binary masks and their encodings: COCO uncompressed RLE and PNG.
//!
//! COCO's uncompressed RLE (`{"size": [h, w], "counts": [...]}`) walks the mask in column-major (Fortran) order
//! and alternates run lengths starting with a background run, which is 0 when the first pixel is foreground;
//! `pycocotools.mask.frPyObjects` reads it and `_mask_to_rle` in transformers writes the same.

use serde::{Deserialize, Serialize};

use crate::config::Size;

/// A binary mask, row-major, one byte per pixel (0 or 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    size: Size,
    data: Vec<u8>,
}

/// COCO uncompressed run-length encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CocoRle {
    /// `[height, width]`.
    pub size: [u32; 2],
    /// Run lengths in column-major order, background first.
    pub counts: Vec<u64>,
}

impl Mask {
    /// A mask whose pixel at row-major index `i` is `f(i)`.
    pub fn from_fn(size: Size, f: impl Fn(usize) -> bool) -> Mask {
        let n = size.height as usize * size.width as usize;
        Mask { size, data: (0..n).map(|i| u8::from(f(i))).collect() }
    }

    /// The mask's size.
    pub fn size(&self) -> Size {
        self.size
    }

    /// Whether the pixel at (x, y) is foreground; `false` outside the mask.
    pub fn get(&self, x: u32, y: u32) -> bool {
        x < self.size.width && y < self.size.height && self.data[(y * self.size.width + x) as usize] == 1
    }

    /// Row-major 0/1 bytes.
    pub fn as_raw(&self) -> &[u8] {
        &self.data
    }

    /// Foreground pixel count.
    pub fn area(&self) -> usize {
        self.data.iter().filter(|&&v| v == 1).count()
    }

    /// Intersection over union with another mask of the same size (1.0 when both are empty); `None` when the
    /// sizes differ.
    pub fn iou(&self, other: &Mask) -> Option<f64> {
        if self.size != other.size {
            return None;
        }
        let (mut inter, mut union) = (0usize, 0usize);
        for (&a, &b) in self.data.iter().zip(&other.data) {
            inter += usize::from(a & b);
            union += usize::from(a | b);
        }
        Some(if union == 0 { 1.0 } else { inter as f64 / union as f64 })
    }

    /// COCO uncompressed RLE.
    pub fn to_rle(&self) -> CocoRle {
        let (h, w) = (self.size.height as usize, self.size.width as usize);
        let mut counts = Vec::new();
        let mut current = 0u8;
        let mut run = 0u64;
        for x in 0..w {
            for y in 0..h {
                let v = self.data[y * w + x];
                if v != current {
                    counts.push(run);
                    run = 0;
                    current = v;
                }
                run += 1;
            }
        }
        counts.push(run);
        CocoRle { size: [self.size.height, self.size.width], counts }
    }

    /// The mask an RLE describes; `None` when the counts do not add up to `height * width`.
    pub fn from_rle(rle: &CocoRle) -> Option<Mask> {
        let size = Size { height: rle.size[0], width: rle.size[1] };
        let (h, w) = (size.height as usize, size.width as usize);
        let total = rle.counts.iter().try_fold(0u64, |sum, &run| sum.checked_add(run))?;
        if h == 0 || total != (h as u64).checked_mul(w as u64)? {
            return None;
        }
        let mut data = vec![0u8; h * w];
        let mut at = 0usize;
        for (i, &run) in rle.counts.iter().enumerate() {
            let value = (i % 2) as u8;
            for k in at..at + run as usize {
                data[(k % h) * w + k / h] = value;
            }
            at += run as usize;
        }
        Some(Mask { size, data })
    }

    /// An 8-bit greyscale PNG: foreground 255, background 0.
    pub fn to_png(&self) -> Vec<u8> {
        use image::ImageEncoder;
        let pixels: Vec<u8> = self.data.iter().map(|&v| v * 255).collect();
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(&pixels, self.size.width, self.size.height, image::ExtendedColorType::L8)
            .expect("encoding a well-formed 8-bit buffer into memory cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rle_is_column_major_and_starts_with_background() {
        // 2 rows x 3 columns:
        // 1 0 1
        // 1 1 0
        let size = Size { height: 2, width: 3 };
        let rows = [1u8, 0, 1, 1, 1, 0];
        let mask = Mask::from_fn(size, |i| rows[i] == 1);
        // Column-major: 1 1 | 0 1 | 1 0 -> runs: 0 background, 2 fg, 1 bg, 2 fg, 1 bg.
        assert_eq!(mask.to_rle().counts, vec![0, 2, 1, 2, 1]);
        assert_eq!(Mask::from_rle(&mask.to_rle()).unwrap(), mask);
        let empty = Mask::from_fn(size, |_| false);
        assert_eq!(empty.to_rle().counts, vec![6]);
        assert!(Mask::from_rle(&CocoRle { size: [2, 3], counts: vec![5] }).is_none());
    }
}
