//! SAM2 promptable segmentation on a compute unit, for the supervised workers and the `bulkhead segment`
//! command.
//!
//! * [`job`]: what a worker is asked ([`SegmentJob`]: an image's content id, optionally its model-input pixels,
//!   a prompt already mapped to model-input coordinates) and what it answers ([`SegmentOutput`]: low-resolution
//!   mask logits and IoU predictions, or "send the image");
//! * [`prompt`]: points and boxes in original-image pixels checked and mapped to the model's input
//!   ([`MappedPrompt`]), masks post-processed back to the original size;
//! * [`Sam2`]: the image encoder and the prompt encoder + mask decoder (bulkhead-graph's SAM2 graphs, or an ONNX
//!   community pair `vision_encoder.onnx` + `prompt_encoder_mask_decoder.onnx`) loaded as two
//!   [`GraphSession`](bulkhead_core::GraphSession)s, with the image embeddings of recent images kept in a
//!   [`ByteLru`] keyed by the image's content id, so a second click on an image runs the decoder alone;
//! * [`image_id`]: the content id of an encoded image (SHA-256 of its bytes).
//!
//! # Architecture invariants
//!
//! * **No engine is linked here:** graphs are loaded through a caller-given loader (the worker passes its
//!   `Engines`), so this crate runs wherever a `GraphSession` can be had.
//! * **An embedding is only ever used for the image it was computed from:** the cache key is the content id of
//!   the image's bytes, and a job whose id is not cached and that carries no pixels is answered
//!   [`SegmentOutput::NeedImage`], never with another image's masks. A worker that restarted (an empty cache)
//!   therefore costs one round trip, never a wrong answer.
//! * **Caches are bounded in bytes** ([`ByteLru`]); an entry larger than the whole budget is not kept.
//! * **Prompts are checked before any model runs:** a point outside the image, a reversed box, more than one box
//!   or no prompt at all is a typed [`PromptRefusal`] (a client error), never a panic.
#![deny(missing_docs)]

pub mod cache;
pub mod job;
mod model;
pub mod prompt;

pub use cache::ByteLru;
pub use job::{InputImage, Masks, Prompt, SegmentJob, SegmentOutput};
pub use model::{graph_files, LoadError, RunFailure, Sam2, Sam2Files, IMAGE_CACHE_ENV};
pub use prompt::{MappedPrompt, PromptRefusal};

/// The content id of an encoded image: the first 128 bits of the SHA-256 of its bytes, as 32 hex digits. Two
/// requests with the same bytes share the id, and with it the cached embedding.
pub fn image_id(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}
