//! The typed errors of the crate: one enum per stage, each message saying what is wrong and what to do.
//!
//! Every variant is a *client* error (the server answers 4xx, the CLI exits 2): the bytes, the prompt or the
//! `preprocessor_config.json` given were wrong, never the machine.

/// Why bytes could not be turned into an RGB image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Zero bytes were given.
    #[error("the image is empty (0 bytes); send the file's contents")]
    Empty,
    /// More bytes than [`Limits::max_bytes`](crate::Limits::max_bytes).
    #[error("the image is {bytes} bytes, over the limit of {max_bytes}; send a smaller file or raise the limit")]
    TooManyBytes {
        /// The size given.
        bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// The bytes are no image format this crate knows.
    #[error("not an image: {what}; send PNG, JPEG or WebP (GIF and BMP are read too)")]
    NotAnImage {
        /// What the first bytes look like.
        what: String,
    },
    /// A recognised image format that is not decoded here.
    #[error("{format} images are not supported; convert the image to PNG, JPEG or WebP")]
    UnsupportedFormat {
        /// The format recognised from the first bytes.
        format: &'static str,
    },
    /// The header declares more pixels than [`Limits::max_pixels`](crate::Limits::max_pixels) (a decompression
    /// bomb, or just too large): refused before any pixel is decoded.
    #[error(
        "the {format} image is {width}x{height} = {pixels} pixels, over the limit of {max_pixels} \
         (refused before decoding); downscale it or raise the limit (--max-image-pixels)",
        pixels = u64::from(*width) * u64::from(*height)
    )]
    TooManyPixels {
        /// The format.
        format: &'static str,
        /// The declared width.
        width: u32,
        /// The declared height.
        height: u32,
        /// The limit.
        max_pixels: u64,
    },
    /// The header declares a zero width or height.
    #[error("the {format} image declares a size of {width}x{height}; an image needs at least one pixel")]
    ZeroSize {
        /// The format.
        format: &'static str,
        /// The declared width.
        width: u32,
        /// The declared height.
        height: u32,
    },
    /// The processor's resize would make an image too large to hold: a shortest-edge resize of an extremely
    /// elongated image (transformers would try to allocate it).
    #[error(
        "the {width}x{height} image would be resized to {resized_width}x{resized_height} by the processor; \
         crop or pad it to a less extreme aspect ratio"
    )]
    ExtremeAspectRatio {
        /// The image width.
        width: u32,
        /// The image height.
        height: u32,
        /// The width after the resize.
        resized_width: u64,
        /// The height after the resize.
        resized_height: u64,
    },
    /// The data ends before the image does.
    #[error("the {format} image is truncated ({detail}); send the whole file")]
    Truncated {
        /// The format.
        format: &'static str,
        /// What the decoder saw.
        detail: String,
    },
    /// The data is damaged or uses a feature the decoder does not implement.
    #[error("the {format} image could not be decoded ({detail}); check the file or re-encode it")]
    Corrupt {
        /// The format.
        format: &'static str,
        /// What the decoder said.
        detail: String,
    },
}

/// Why a `preprocessor_config.json` cannot configure a [`Preprocessor`](crate::Preprocessor).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The file is not JSON or a field has the wrong type.
    #[error("preprocessor_config.json is not valid: {0}")]
    Invalid(String),
    /// `image_processor_type` names a processor this crate does not implement.
    #[error(
        "image processor `{0}` is not supported; supported: CLIPImageProcessor, SiglipImageProcessor, \
         Sam2ImageProcessor (with or without the Fast suffix)"
    )]
    UnsupportedProcessor(String),
    /// A `resample` other than bilinear (2) or bicubic (3).
    #[error("resample = {0} is not supported; bilinear (2) and bicubic (3) are")]
    UnsupportedResample(i64),
    /// A size, mean or standard deviation that cannot be used.
    #[error("preprocessor_config.json: {0}")]
    BadValue(String),
}

/// Why a SAM2 prompt (points, boxes) was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromptError {
    /// A coordinate is NaN or infinite.
    #[error("prompt coordinate {0} is not a finite number")]
    NotFinite(f32),
    /// A point outside the image.
    #[error(
        "point ({x}, {y}) lies outside the {width}x{height} image; coordinates are pixels from the top-left \
         corner, x across and y down"
    )]
    PointOutside {
        /// The point's x.
        x: f32,
        /// The point's y.
        y: f32,
        /// The image width.
        width: u32,
        /// The image height.
        height: u32,
    },
    /// A box whose corners are swapped or that lies outside the image.
    #[error(
        "box ({x0}, {y0}, {x1}, {y1}) is not inside the {width}x{height} image with x0 <= x1 and y0 <= y1; \
         give the top-left then the bottom-right corner"
    )]
    BadBox {
        /// Left.
        x0: f32,
        /// Top.
        y0: f32,
        /// Right.
        x1: f32,
        /// Bottom.
        y1: f32,
        /// The image width.
        width: u32,
        /// The image height.
        height: u32,
    },
    /// Mask logits whose length does not match the stated shape.
    #[error("mask logits: {got} values for a {masks}x{height}x{width} shape")]
    BadLogits {
        /// Values given.
        got: usize,
        /// Masks stated.
        masks: usize,
        /// Height stated.
        height: usize,
        /// Width stated.
        width: usize,
    },
}
