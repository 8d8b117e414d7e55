//! Bytes -> an upright RGB image: sniff, check the limits from the header, decode, apply EXIF orientation,
//! convert to 8-bit RGB exactly as PIL's `Image.convert("RGB")` does.
//!
//! This is what `transformers.image_utils.load_image` does (`PIL.Image.open`, `ImageOps.exif_transpose`,
//! `convert("RGB")`), the loader transformers' pipelines use. Transformers' image processors themselves never
//! apply EXIF orientation; the reference outputs are made through `load_image`.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder};

use crate::error::ImageError;
use crate::header::{self, HeaderError, ImageFormat, Sniffed, TransparentKey};

/// PIL's `Image.MAX_IMAGE_PIXELS` (above it PIL warns of a decompression bomb; at twice it PIL refuses).
pub const DEFAULT_MAX_PIXELS: u64 = 89_478_485;

/// Default limit on the encoded size: 64 MiB.
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;

/// What [`decode`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most encoded bytes.
    pub max_bytes: usize,
    /// The most pixels (width x height) the header may declare; checked before decoding.
    pub max_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: DEFAULT_MAX_BYTES, max_pixels: DEFAULT_MAX_PIXELS }
    }
}

/// An 8-bit RGB image, rows top to bottom, pixels interleaved `RGBRGB...` (HWC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl RgbImage {
    /// An image from interleaved RGB bytes; `None` when `data.len() != width * height * 3` or a side is 0.
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Option<RgbImage> {
        let expected = (width as usize).checked_mul(height as usize)?.checked_mul(3)?;
        (width > 0 && height > 0 && data.len() == expected).then_some(RgbImage { width, height, data })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The interleaved RGB bytes (`height * width * 3`).
    pub fn as_raw(&self) -> &[u8] {
        &self.data
    }

    /// The RGB value at (x, y); `None` outside the image.
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let at = (y as usize * self.width as usize + x as usize) * 3;
        Some([self.data[at], self.data[at + 1], self.data[at + 2]])
    }
}

/// A decoded image and how it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The upright RGB image (EXIF orientation applied).
    pub image: RgbImage,
    /// The format sniffed from the bytes.
    pub format: ImageFormat,
    /// The EXIF orientation that was applied (1 = none; 2..=8 flip and/or rotate).
    pub orientation: u8,
}

/// Decodes PNG, JPEG, WebP (and GIF's first frame, BMP) into an upright 8-bit RGB image.
///
/// The format is sniffed from the bytes. The byte limit is checked first, then the pixel count the header
/// declares, before any decoder allocates. Alpha is dropped (as `convert("RGB")` does) except for a PNG/GIF
/// transparent colour, which becomes white as transformers' processors make it; palettes are expanded, grey
/// replicated; 16-bit samples follow PIL: RGB(A) and grey+alpha keep the high byte, plain 16-bit grey is
/// clipped at 255 (PIL's `I;16` -> `L`).
pub fn decode(bytes: &[u8], limits: Limits) -> Result<Decoded, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(ImageError::TooManyBytes { bytes: bytes.len(), max_bytes: limits.max_bytes });
    }
    let format = match header::sniff(bytes) {
        Sniffed::Supported(format) => format,
        Sniffed::Unsupported(format) => return Err(ImageError::UnsupportedFormat { format }),
        Sniffed::Other(what) => return Err(ImageError::NotAnImage { what }),
    };
    let name = format.name();
    let (width, height) = header::dimensions(format, bytes).map_err(|e| match e {
        HeaderError::Truncated(detail) => ImageError::Truncated { format: name, detail: detail.into() },
        HeaderError::Malformed(detail) => ImageError::Corrupt { format: name, detail: detail.into() },
    })?;
    check_size(name, width, height, limits.max_pixels)?;
    if format == ImageFormat::Jpeg && !header::jpeg_has_end_marker(bytes) {
        let detail = "the data ends before the end-of-image marker".to_string();
        return Err(ImageError::Truncated { format: name, detail });
    }
    if format == ImageFormat::WebP && header::webp_is_truncated(bytes) {
        let detail = "the data is shorter than its RIFF header declares".to_string();
        return Err(ImageError::Truncated { format: name, detail });
    }

    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), image_format(format));
    reader.limits(decoder_limits(limits.max_pixels));
    let mut decoder = reader.into_decoder().map_err(|e| map_error(name, e, limits.max_pixels))?;
    // The decoder's own reading of the size is authoritative (a header can hold several frames or layers).
    let (width, height) = decoder.dimensions();
    check_size(name, width, height, limits.max_pixels)?;
    // PIL's exif_transpose ignores an unreadable EXIF block; so does this.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut dynamic = DynamicImage::from_decoder(decoder).map_err(|e| map_error(name, e, limits.max_pixels))?;
    dynamic.apply_orientation(orientation);
    let key = header::transparent_key(format, bytes);
    let image = to_rgb(dynamic, key);
    Ok(Decoded { image, format, orientation: orientation.to_exif() })
}

fn check_size(format: &'static str, width: u32, height: u32, max_pixels: u64) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::ZeroSize { format, width, height });
    }
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(ImageError::TooManyPixels { format, width, height, max_pixels });
    }
    Ok(())
}

/// The decoder's allocation ceiling: the largest allowed image at 16-bit RGBA plus room for the decoder's
/// own tables, so no input can make a decoder allocate far beyond what the pixel limit allows.
fn decoder_limits(max_pixels: u64) -> image::Limits {
    let mut limits = image::Limits::no_limits();
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    limits
}

fn image_format(format: ImageFormat) -> image::ImageFormat {
    match format {
        ImageFormat::Png => image::ImageFormat::Png,
        ImageFormat::Jpeg => image::ImageFormat::Jpeg,
        ImageFormat::WebP => image::ImageFormat::WebP,
        ImageFormat::Gif => image::ImageFormat::Gif,
        ImageFormat::Bmp => image::ImageFormat::Bmp,
    }
}

fn map_error(format: &'static str, error: image::ImageError, max_pixels: u64) -> ImageError {
    use image::error::{ImageError as E, LimitErrorKind};
    match error {
        E::Limits(limit) => match limit.kind() {
            LimitErrorKind::DimensionError => {
                ImageError::Corrupt { format, detail: "the decoder refused the declared size".into() }
            }
            _ => ImageError::Corrupt {
                format,
                detail: format!("decoding needs more memory than {max_pixels} pixels allow"),
            },
        },
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ImageError::Truncated { format, detail: io.to_string() }
        }
        other => {
            let detail = other.to_string();
            let lower = detail.to_ascii_lowercase();
            if ["eof", "end of file", "truncated", "not enough data", "unexpected end", "no more data"]
                .iter()
                .any(|needle| lower.contains(needle))
            {
                ImageError::Truncated { format, detail }
            } else {
                ImageError::Corrupt { format, detail }
            }
        }
    }
}

/// PIL's `convert("RGB")` for every layout the decoders produce, then the white compositing of a transparent
/// colour that transformers' `convert_to_rgb` applies (see [`TransparentKey`]).
fn to_rgb(image: DynamicImage, key: TransparentKey) -> RgbImage {
    let (width, height) = (image.width(), image.height());
    if key != TransparentKey::None {
        let rgba = match &image {
            DynamicImage::ImageRgba8(buffer) => Some(buffer.as_raw().clone()),
            DynamicImage::ImageLumaA8(buffer) => {
                Some(buffer.as_raw().chunks_exact(2).flat_map(|p| [p[0], p[0], p[0], p[1]]).collect())
            }
            _ => None,
        };
        if let Some(rgba) = rgba {
            return RgbImage { width, height, data: key_to_white(&rgba, key) };
        }
    }
    let n = width as usize * height as usize;
    let mut out = Vec::with_capacity(n * 3);
    match image {
        DynamicImage::ImageRgb8(buffer) => out = buffer.into_raw(),
        DynamicImage::ImageRgba8(buffer) => {
            for px in buffer.as_raw().chunks_exact(4) {
                out.extend_from_slice(&px[..3]);
            }
        }
        DynamicImage::ImageLuma8(buffer) => grey(&mut out, buffer.as_raw().iter().copied()),
        DynamicImage::ImageLumaA8(buffer) => grey(&mut out, buffer.as_raw().chunks_exact(2).map(|p| p[0])),
        // PIL opens 16-bit grey as `I;16` and converts to `L` by clipping, not scaling.
        DynamicImage::ImageLuma16(buffer) => grey(&mut out, buffer.as_raw().iter().map(|&v| v.min(255) as u8)),
        // 16-bit grey+alpha, RGB and RGBA are opened by PIL at 8 bits from the high byte.
        DynamicImage::ImageLumaA16(buffer) => {
            grey(&mut out, buffer.as_raw().chunks_exact(2).map(|p| (p[0] >> 8) as u8))
        }
        DynamicImage::ImageRgb16(buffer) => out.extend(buffer.as_raw().iter().map(|&v| (v >> 8) as u8)),
        DynamicImage::ImageRgba16(buffer) => {
            for px in buffer.as_raw().chunks_exact(4) {
                out.extend(px[..3].iter().map(|&v| (v >> 8) as u8));
            }
        }
        other => out = other.to_rgb8().into_raw(),
    }
    RgbImage { width, height, data: out }
}

fn grey(out: &mut Vec<u8>, values: impl Iterator<Item = u8>) {
    for v in values {
        out.extend_from_slice(&[v, v, v]);
    }
}

/// RGBA -> RGB, whitening the transparent colour as transformers does for PIL's `info["transparency"]`.
fn key_to_white(rgba: &[u8], key: TransparentKey) -> Vec<u8> {
    let colour = rgba.chunks_exact(4).find(|p| p[3] == 0).map(|p| [p[0], p[1], p[2]]);
    let mut out = Vec::with_capacity(rgba.len() / 4 * 3);
    for p in rgba.chunks_exact(4) {
        let white = match key {
            TransparentKey::ColourOfTransparentPixels => colour == Some([p[0], p[1], p[2]]),
            TransparentKey::TransparentPixels => p[3] == 0,
            TransparentKey::None => false,
        };
        out.extend_from_slice(if white { &[255, 255, 255] } else { &p[..3] });
    }
    out
}
