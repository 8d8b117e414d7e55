//! What the server keeps for a segmentation model: its preprocessor (images are decoded and resized here, on the
//! blocking pool, so a bad image is a 4xx before any worker sees it) and the prepared images of recent requests
//! by `image_id`, bounded in bytes (`--image-cache-mb`). A later click sends only the id; a worker that lost the
//! embedding (a restart, a recycle, an eviction) asks for the image, which comes from here.

use std::sync::{Arc, Mutex};

use bulkhead_core::ModelFiles;
use bulkhead_image::{Preprocessor, ProcessorKind, Size};
use bulkhead_segment::{ByteLru, InputImage};

/// One image as the model takes it, with its original size.
#[derive(Debug)]
pub struct PreparedImage {
    /// The decoded image's size (after EXIF orientation): where prompts come from and masks go back to.
    pub original: Size,
    /// The image resized to the model input, 8-bit.
    pub input: InputImage,
}

/// A segmentation model's server-side state.
pub struct Segmenter {
    /// The model's `preprocessor_config.json`.
    pub preprocessor: Preprocessor,
    /// The model input's side in pixels.
    pub side: u32,
    images: Mutex<ByteLru<Arc<PreparedImage>>>,
}

impl Segmenter {
    /// The state of the SAM2 model `files`, keeping up to `cache_bytes` of prepared images.
    pub fn open(files: &ModelFiles, cache_bytes: usize) -> Result<Segmenter, String> {
        let dir = if files.source.is_dir() { files.source.clone() } else { files.source.with_file_name("") };
        let preprocessor = Preprocessor::from_model_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if preprocessor.kind() != ProcessorKind::Sam2 {
            return Err(format!("{}: the preprocessor is not Sam2ImageProcessor", dir.display()));
        }
        let side = match preprocessor.input_size() {
            Some(s) if s.width == s.height => s.width,
            other => return Err(format!("{}: SAM2 takes a square input, not {other:?}", dir.display())),
        };
        Ok(Segmenter { preprocessor, side, images: Mutex::new(ByteLru::new(cache_bytes)) })
    }

    /// The prepared image of `image_id`, when it is still held.
    pub fn image(&self, image_id: &str) -> Option<Arc<PreparedImage>> {
        self.images.lock().unwrap_or_else(|e| e.into_inner()).get(image_id).cloned()
    }

    /// Keeps a prepared image under its id.
    pub fn keep(&self, image_id: String, image: Arc<PreparedImage>) {
        let bytes = image.input.rgb.len() + 64;
        self.images.lock().unwrap_or_else(|e| e.into_inner()).insert(image_id, image, bytes);
    }
}
