//! The image input stage shared by image models (SAM2 segmentation, CLIP/SigLIP image embeddings).
//!
//! * [`decode`]: bytes -> an upright 8-bit [`RgbImage`] (PNG, JPEG, WebP; GIF's first frame and BMP too),
//!   EXIF orientation applied, converted as PIL's `convert("RGB")` does;
//! * [`Preprocessor`]: configured from a model folder's `preprocessor_config.json` (`CLIPImageProcessor`,
//!   `SiglipImageProcessor`, `Sam2ImageProcessor`), turns an image into the model's [`PixelValues`];
//! * [`sam2`]: prompt points and boxes mapped to the model input, low-resolution mask logits post-processed
//!   back to the original size into [`Mask`]s, encoded as COCO RLE ([`CocoRle`]) or PNG.
//!
//! # Reference behaviour
//!
//! The reference is transformers 5 with its default processor classes (the torchvision backend; the PIL
//! backend classes are named `...ImageProcessorPil`), on images loaded with
//! `transformers.image_utils.load_image` (which applies `ImageOps.exif_transpose` and `convert("RGB")`).
//! `scripts/fixtures/make_images.py` makes the reference outputs the tests compare against.
//!
//! # Architecture invariants
//!
//! * No input bytes make this crate panic or allocate beyond its [`Limits`]: the encoded size is checked first,
//!   then the pixel count the *header* declares (read by this crate's own header parser) before any decoder
//!   runs, and the decoders run under an allocation ceiling derived from the pixel limit.
//! * Preprocessing never materialises more than the model input: a centre crop after a shortest-edge resize
//!   computes only the cropped part ([`resample::resize_region`]); a resize that would exceed
//!   [`MAX_RESIZED_SIDE`] (or [`MAX_RESIZED_PIXELS`] without a crop) is refused as
//!   [`ImageError::ExtremeAspectRatio`], and configurations cannot ask for inputs over 4096 x 4096 pixels.
//! * Every refusal is a typed error ([`ImageError`], [`ConfigError`], [`PromptError`]) that names the problem
//!   and what to do; all of them are the client's fault (4xx, CLI exit 2).
//! * Resizing is bit-exact with torchvision's native uint8 antialiased kernel (see [`resample`]); the
//!   normalisation repeats transformers' float32 arithmetic, so decoded-identical images give identical
//!   `pixel_values`.
//! * [`RgbImage`] is never empty: both sides are at least 1.
#![deny(missing_docs)]

mod config;
mod decode;
mod error;
mod header;
mod mask;
mod preprocess;
pub mod resample;
pub mod sam2;

pub use config::{PreprocessorConfig, ProcessorKind, ResizeTo, Size};
pub use decode::{decode, Decoded, Limits, RgbImage, DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS};
pub use error::{ConfigError, ImageError, PromptError};
pub use header::ImageFormat;
pub use mask::{CocoRle, Mask};
pub use preprocess::{center_crop, PixelValues, Preprocessor, MAX_RESIZED_PIXELS, MAX_RESIZED_SIDE};
