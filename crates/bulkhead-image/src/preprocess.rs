//! An upright RGB image -> the model's `pixel_values` (CHW `f32`), exactly as transformers' torchvision-backed
//! processors compute them: resize (uint8, antialiased), centre crop, then the fused rescale + normalise
//! `(x - mean / rescale) / (std / rescale)` in `f32`.

use std::path::Path;

use crate::config::{PreprocessorConfig, ProcessorKind, ResizeTo, Size};
use crate::decode::RgbImage;
use crate::error::ConfigError;
use crate::resample::resize;

/// A configured image preprocessor (CLIP, SigLIP or SAM2).
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessor {
    config: PreprocessorConfig,
}

/// One preprocessed image.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelValues {
    /// `3 x height x width` values, channel-major (R plane, G plane, B plane).
    pub data: Vec<f32>,
    /// The model input's size (after resize and crop).
    pub size: Size,
    /// The decoded image's size, before any resize (what SAM2 maps prompts and masks from and back to).
    pub original_size: Size,
    /// The size after the resize step, before any crop.
    pub resized_size: Size,
}

impl Preprocessor {
    /// A preprocessor for a resolved configuration.
    pub fn new(config: PreprocessorConfig) -> Preprocessor {
        Preprocessor { config }
    }

    /// A preprocessor from a model folder's `preprocessor_config.json`.
    pub fn from_model_dir(dir: &Path) -> Result<Preprocessor, ConfigError> {
        PreprocessorConfig::from_model_dir(dir).map(Preprocessor::new)
    }

    /// A preprocessor from the text of a `preprocessor_config.json`.
    pub fn from_json(text: &str) -> Result<Preprocessor, ConfigError> {
        PreprocessorConfig::from_json(text).map(Preprocessor::new)
    }

    /// The configuration in use.
    pub fn config(&self) -> &PreprocessorConfig {
        &self.config
    }

    /// The processor class followed.
    pub fn kind(&self) -> ProcessorKind {
        self.config.kind
    }

    /// The size the resize step produces for an image of `original` size.
    pub fn resized_size(&self, original: Size) -> Size {
        match self.config.resize {
            None => original,
            Some((ResizeTo::Exact(size), _)) => size,
            Some((ResizeTo::ShortestEdge(short), _)) => {
                // transformers' get_resize_output_image_size: new_long = int(short * long / old_short).
                let (h, w) = (u64::from(original.height), u64::from(original.width));
                let (old_short, long) = if w <= h { (w, h) } else { (h, w) };
                let new_long = ((u64::from(short) * long) as f64 / old_short as f64) as u32;
                if w <= h {
                    Size { height: new_long.max(1), width: short }
                } else {
                    Size { height: short, width: new_long.max(1) }
                }
            }
        }
    }

    /// Resize and centre crop, still 8-bit: the model input before rescaling and normalising.
    pub fn resize_and_crop(&self, image: &RgbImage) -> RgbImage {
        let original = Size { height: image.height(), width: image.width() };
        let resized = match self.config.resize {
            Some((_, filter)) => {
                let size = self.resized_size(original);
                if size == original {
                    image.clone()
                } else {
                    resize(image, size.width, size.height, filter)
                }
            }
            None => image.clone(),
        };
        match self.config.center_crop {
            Some(crop) => center_crop(&resized, crop),
            None => resized,
        }
    }

    /// The full preprocessing: `pixel_values` for the model, with the sizes needed to map results back.
    pub fn preprocess(&self, image: &RgbImage) -> PixelValues {
        let original_size = Size { height: image.height(), width: image.width() };
        let resized_size = self.resized_size(original_size);
        let input = self.resize_and_crop(image);
        let size = Size { height: input.height(), width: input.width() };
        PixelValues { data: self.normalize(&input), size, original_size, resized_size }
    }

    /// Rescale and normalise an 8-bit image into CHW `f32`, with transformers' float32 arithmetic: when both
    /// steps are on, mean and std are first divided by the rescale factor (`f32(mean) * f32(1 / factor)`), then
    /// each value is `(x - mean') / std'`.
    pub fn normalize(&self, image: &RgbImage) -> Vec<f32> {
        let (mean, std): ([f32; 3], [f32; 3]) = match (self.config.rescale, self.config.normalize) {
            (Some(factor), Some((mean, std))) => {
                let inv = (1.0 / factor) as f32;
                (mean.map(|m| m as f32 * inv), std.map(|s| s as f32 * inv))
            }
            (None, Some((mean, std))) => (mean.map(|m| m as f32), std.map(|s| s as f32)),
            (Some(factor), None) => return planes(image, |_, x| x * factor as f32),
            (None, None) => return planes(image, |_, x| x),
        };
        planes(image, |c, x| (x - mean[c]) / std[c])
    }
}

/// Channel-major planes from interleaved RGB, each value mapped by `f(channel, value)`. The inputs are bytes,
/// so `f` is evaluated once per channel and level into a table: the same floats, without a division per value.
fn planes(image: &RgbImage, f: impl Fn(usize, f32) -> f32) -> Vec<f32> {
    let table: Vec<[f32; 256]> = (0..3).map(|c| std::array::from_fn(|v| f(c, v as f32))).collect();
    let n = image.width() as usize * image.height() as usize;
    let mut out = vec![0.0f32; 3 * n];
    let (r, rest) = out.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    for (i, px) in image.as_raw().chunks_exact(3).enumerate() {
        r[i] = table[0][usize::from(px[0])];
        g[i] = table[1][usize::from(px[1])];
        b[i] = table[2][usize::from(px[2])];
    }
    out
}

/// transformers' torchvision `center_crop`: zero-pad when the crop is larger (left/top get the floor half),
/// then crop from `int((size - crop) / 2)`.
pub fn center_crop(image: &RgbImage, crop: Size) -> RgbImage {
    let (w, h) = (image.width() as i64, image.height() as i64);
    let (cw, ch) = (i64::from(crop.width), i64::from(crop.height));
    let (pad_left, pad_top) = (if cw > w { (cw - w) / 2 } else { 0 }, if ch > h { (ch - h) / 2 } else { 0 });
    let (pw, ph) = (w.max(cw), h.max(ch));
    let left = ((pw - cw) / 2) - pad_left;
    let top = ((ph - ch) / 2) - pad_top;
    let mut out = vec![0u8; (cw * ch * 3) as usize];
    for y in 0..ch {
        let sy = y + top;
        if !(0..h).contains(&sy) {
            continue;
        }
        for x in 0..cw {
            let sx = x + left;
            if (0..w).contains(&sx) {
                let src = ((sy * w + sx) * 3) as usize;
                let dst = ((y * cw + x) * 3) as usize;
                out[dst..dst + 3].copy_from_slice(&image.as_raw()[src..src + 3]);
            }
        }
    }
    RgbImage::new(crop.width, crop.height, out).expect("the crop buffer matches its size")
}
