//! An upright RGB image -> the model's `pixel_values` (CHW `f32`), exactly as transformers' torchvision-backed
//! processors compute them: resize (uint8, antialiased), centre crop, then the fused rescale + normalise
//! `(x - mean / rescale) / (std / rescale)` in `f32`.

use std::path::Path;

use crate::config::{PreprocessorConfig, ProcessorKind, ResizeTo, Size};
use crate::decode::RgbImage;
use crate::error::{ConfigError, ImageError};
use crate::resample::{resize, resize_region, Region};

/// The longest side a resize may produce (a shortest-edge resize of a 1:4681 image at 224).
pub const MAX_RESIZED_SIDE: u64 = 1 << 20;

/// The most pixels a resize without a following crop may produce (4096 x 4096).
pub const MAX_RESIZED_PIXELS: u64 = 1 << 24;

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

impl PixelValues {
    /// A batch `N x 3 x H x W` of images of one size, in order; `None` when the sizes differ or `items` is empty.
    pub fn stack(items: &[PixelValues]) -> Option<Vec<f32>> {
        let first = items.first()?;
        if items.iter().any(|p| p.size != first.size) {
            return None;
        }
        Some(items.iter().flat_map(|p| p.data.iter().copied()).collect())
    }
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

    /// The model input size every image gets (the crop, or an exact resize); `None` when it depends on the
    /// image (a shortest-edge resize without a crop, or no resize).
    pub fn input_size(&self) -> Option<Size> {
        match (self.config.center_crop, self.config.resize) {
            (Some(crop), _) => Some(crop),
            (None, Some((ResizeTo::Exact(size), _))) => Some(size),
            _ => None,
        }
    }

    /// The size the resize step produces for an image of `original` size (64-bit: a shortest-edge resize of an
    /// elongated image can exceed `u32`).
    fn resized_size_wide(&self, original: Size) -> (u64, u64) {
        let (h, w) = (u64::from(original.height), u64::from(original.width));
        match self.config.resize {
            None => (h, w),
            Some((ResizeTo::Exact(size), _)) => (u64::from(size.height), u64::from(size.width)),
            Some((ResizeTo::ShortestEdge(short), _)) => {
                // transformers' get_resize_output_image_size: new_long = int(short * long / old_short).
                let short = u64::from(short);
                let (old_short, long) = if w <= h { (w, h) } else { (h, w) };
                let new_long = ((short * long) as f64 / old_short as f64) as u64;
                if w <= h {
                    (new_long.max(1), short)
                } else {
                    (short, new_long.max(1))
                }
            }
        }
    }

    /// The size the resize step produces for an image of `original` size; `None` when it would be too large
    /// to hold (see [`ImageError::ExtremeAspectRatio`]).
    pub fn resized_size(&self, original: Size) -> Option<Size> {
        let (h, w) = self.resized_size_wide(original);
        let fits = h.max(w) <= MAX_RESIZED_SIDE && (self.config.center_crop.is_some() || h * w <= MAX_RESIZED_PIXELS);
        fits.then_some(Size { height: h as u32, width: w as u32 })
    }

    /// Resize and centre crop, still 8-bit: the model input before rescaling and normalising. Only the part of
    /// the resized image that the crop keeps is computed.
    pub fn resize_and_crop(&self, image: &RgbImage) -> Result<RgbImage, ImageError> {
        let original = Size { height: image.height(), width: image.width() };
        let resized = self.resized_size(original).ok_or_else(|| {
            let (resized_height, resized_width) = self.resized_size_wide(original);
            ImageError::ExtremeAspectRatio {
                width: original.width,
                height: original.height,
                resized_width,
                resized_height,
            }
        })?;
        let filter = self.config.resize.map(|(_, filter)| filter);
        let crop = match self.config.center_crop {
            Some(crop) => crop,
            None => {
                return Ok(match filter {
                    Some(filter) if resized != original => resize(image, resized.width, resized.height, filter),
                    _ => image.clone(),
                })
            }
        };
        // The crop window in resized coordinates (it starts before 0 on a side that is zero-padded).
        let (left, top) = crop_origin(resized, crop);
        let x0 = left.max(0);
        let y0 = top.max(0);
        let x1 = (left + i64::from(crop.width)).min(i64::from(resized.width));
        let y1 = (top + i64::from(crop.height)).min(i64::from(resized.height));
        let region = Region { x: x0 as u32, y: y0 as u32, width: (x1 - x0) as u32, height: (y1 - y0) as u32 };
        let part = match filter {
            Some(filter) if resized != original => resize_region(image, resized.width, resized.height, filter, region),
            _ => sub_image(image, region),
        };
        if (region.width, region.height) == (crop.width, crop.height) {
            return Ok(part);
        }
        // Zero padding around the part, as torchvision pads before cropping.
        let mut out = vec![0u8; crop.width as usize * crop.height as usize * 3];
        let (dx, dy) = ((x0 - left) as usize, (y0 - top) as usize);
        for (y, row) in part.as_raw().chunks_exact(region.width as usize * 3).enumerate() {
            let at = ((dy + y) * crop.width as usize + dx) * 3;
            out[at..at + row.len()].copy_from_slice(row);
        }
        Ok(RgbImage::new(crop.width, crop.height, out).expect("the crop buffer matches its size"))
    }

    /// The full preprocessing: `pixel_values` for the model, with the sizes needed to map results back.
    pub fn preprocess(&self, image: &RgbImage) -> Result<PixelValues, ImageError> {
        let original_size = Size { height: image.height(), width: image.width() };
        let input = self.resize_and_crop(image)?;
        let resized_size = self.resized_size(original_size).expect("resize_and_crop checked the size");
        let size = Size { height: input.height(), width: input.width() };
        Ok(PixelValues { data: self.normalize(&input), size, original_size, resized_size })
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

/// Where transformers' torchvision `center_crop` takes its window from an image of `size`: zero-pad when the
/// crop is larger (left/top get the floor half), then start at `int((padded - crop) / 2)`. Returned in the
/// unpadded image's coordinates, so negative on a padded side.
fn crop_origin(size: Size, crop: Size) -> (i64, i64) {
    let origin = |side: u32, want: u32| {
        let (side, want) = (i64::from(side), i64::from(want));
        let pad = if want > side { (want - side) / 2 } else { 0 };
        (side.max(want) - want) / 2 - pad
    };
    (origin(size.width, crop.width), origin(size.height, crop.height))
}

/// The pixels of `region` (inside the image).
fn sub_image(image: &RgbImage, region: Region) -> RgbImage {
    let stride = image.width() as usize * 3;
    let (x, w) = (region.x as usize * 3, region.width as usize * 3);
    let rows = image.as_raw().chunks_exact(stride).skip(region.y as usize).take(region.height as usize);
    let data = rows.flat_map(|row| &row[x..x + w]).copied().collect();
    RgbImage::new(region.width, region.height, data).expect("the region lies inside the image")
}

/// transformers' torchvision `center_crop` of an 8-bit image (zero padding where the crop is larger).
pub fn center_crop(image: &RgbImage, crop: Size) -> RgbImage {
    let (w, h) = (i64::from(image.width()), i64::from(image.height()));
    let (cw, ch) = (i64::from(crop.width), i64::from(crop.height));
    let (left, top) = crop_origin(Size { height: image.height(), width: image.width() }, crop);
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
