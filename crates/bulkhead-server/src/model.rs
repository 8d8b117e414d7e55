//! One served model: what it takes and returns ([`ModelKind`]), its files, backend and queue ([`ModelEntry`]), and
//! a model ready to be served ([`LoadedModel`]).

use std::sync::Arc;

use bulkhead_core::{ModelFiles, ModelTask, TensorSpec};
use bulkhead_embed::Tokenizer;

use crate::backend::Backend;
use crate::batcher::Batcher;
use crate::error::ApiError;
use crate::segmenter::Segmenter;
use crate::speech::SpeechInfo;

/// What a served model takes and returns.
pub enum ModelKind {
    /// Texts (or token ids) in, one vector per input out: every route.
    Embedding {
        /// Its tokenizer (tokenization happens in the server, so the batcher can count tokens).
        tokenizer: Tokenizer,
        /// Embedding dimensions.
        dimensions: usize,
    },
    /// A cross-encoder: a reranker (`/rerank`, `/v1/rerank`) or a classifier (`/predict`), texts or pairs of texts
    /// in, scores out. A sparse embedding model (SPLADE, [`ModelTask::SparseEmbedding`]) is served the same way:
    /// texts in, its pooled vocabulary-sized vector out as the row's logits (`/embed_sparse`).
    CrossEncoder {
        /// Its tokenizer (pairs are tokenized in the server, so the batcher can count tokens).
        tokenizer: Tokenizer,
        /// Reranker or classifier, with its labels.
        task: ModelTask,
    },
    /// A two-tower image-text model (CLIP, SigLIP): texts through its text tower (every embedding route), images
    /// through its vision tower (`/v1/embeddings` image parts, `/embeddings_image`), into one space.
    ImageText {
        /// Its tokenizer (the text tower's).
        tokenizer: Tokenizer,
        /// Embedding dimensions.
        dimensions: usize,
        /// Its image processor (`preprocessor_config.json`): images are decoded and preprocessed in the server.
        preprocessor: Arc<bulkhead_image::Preprocessor>,
        /// Positions of the vision encoder per image: what an image row counts against the token budget.
        image_positions: usize,
    },
    /// An ONNX graph without a tokenizer: named tensors in and out, through KServe v2 infer only.
    Tensor {
        /// The graph inputs.
        inputs: Vec<TensorSpec>,
        /// The graph outputs.
        outputs: Vec<TensorSpec>,
    },
    /// A SAM2 segmentation model: an image and a prompt in, masks out (`POST /v1/segment`).
    Segmentation(Box<Segmenter>),
    /// Speech to text: audio in (decoded and resampled in the server), a transcription out, through
    /// `/v1/audio/transcriptions` and `/v1/audio/translations`.
    Speech(SpeechInfo),
}

/// One served model.
pub struct ModelEntry {
    /// The name clients use.
    pub name: String,
    /// Its files and settings.
    pub files: ModelFiles,
    /// Embedding or tensor model.
    pub kind: ModelKind,
    /// What computes it.
    pub backend: Arc<dyn Backend>,
    /// Its queue (embedding requests).
    pub batcher: Batcher,
    /// Unix time it was loaded.
    pub created: u64,
}

impl ModelEntry {
    /// What the model computes.
    pub fn task(&self) -> Option<&ModelTask> {
        match &self.kind {
            ModelKind::Embedding { .. } => Some(&ModelTask::Embedding),
            ModelKind::ImageText { .. } => Some(&ModelTask::ImageText),
            ModelKind::CrossEncoder { task, .. } => Some(task),
            ModelKind::Tensor { .. } => None,
            ModelKind::Segmentation(_) => Some(&ModelTask::Segmentation),
            ModelKind::Speech(_) => Some(&ModelTask::SpeechToText),
        }
    }

    /// What a speech model takes; a clear 400 naming the route to use for any other model.
    pub fn speech(&self) -> Result<&SpeechInfo, ApiError> {
        match &self.kind {
            ModelKind::Speech(info) => Ok(info),
            ModelKind::Tensor { .. } => Err(self.tensor_refusal()),
            _ => {
                let task = self.task().unwrap_or(&ModelTask::Embedding);
                Err(ApiError::WrongKind(format!(
                    "model `{}` is {}, not a speech-to-text model; call {}",
                    self.name,
                    task.noun(),
                    task.routes()
                )))
            }
        }
    }

    /// The tokenizer and task of a cross-encoder of the kind `wanted` accepts; a clear 400 naming the route to use
    /// for any other model.
    pub fn cross_encoder(
        &self,
        route: &str,
        wanted: impl Fn(&ModelTask) -> bool,
    ) -> Result<(&Tokenizer, &ModelTask), ApiError> {
        match &self.kind {
            ModelKind::CrossEncoder { tokenizer, task } if wanted(task) => Ok((tokenizer, task)),
            ModelKind::Tensor { .. } => Err(self.tensor_refusal()),
            _ => {
                let task = self.task().unwrap_or(&ModelTask::Embedding);
                Err(ApiError::WrongKind(format!(
                    "model `{}` is {}, which {route} does not serve; call {}",
                    self.name,
                    task.noun(),
                    task.routes()
                )))
            }
        }
    }

    fn tensor_refusal(&self) -> ApiError {
        ApiError::WrongKind(format!(
            "model `{}` is a tensor model (an ONNX graph without a tokenizer): it takes named tensors, not texts; \
             call POST /v2/models/{}/infer (GET /v2/models/{} lists its inputs)",
            self.name, self.name, self.name
        ))
    }

    /// The tokenizer and dimensions of an embedding model; a clear 400 naming the route to use for any other.
    pub fn embedding(&self) -> Result<(&Tokenizer, usize), ApiError> {
        match &self.kind {
            ModelKind::Embedding { tokenizer, dimensions } | ModelKind::ImageText { tokenizer, dimensions, .. } => {
                Ok((tokenizer, *dimensions))
            }
            ModelKind::CrossEncoder { task, .. } => Err(ApiError::WrongKind(format!(
                "model `{}` is {}, not an embedding model; call {}",
                self.name,
                task.noun(),
                task.routes()
            ))),
            ModelKind::Tensor { .. } => Err(self.tensor_refusal()),
            ModelKind::Speech(_) => Err(ApiError::WrongKind(format!(
                "model `{}` is a speech-to-text model, not an embedding model; call {}",
                self.name,
                ModelTask::SpeechToText.routes()
            ))),
            ModelKind::Segmentation(_) => Err(ApiError::WrongKind(format!(
                "model `{}` is a segmentation model (SAM2), not an embedding model; call POST /v1/segment",
                self.name
            ))),
        }
    }

    /// The server-side state of a segmentation model; a clear 400 naming the route to use for any other.
    pub fn segmenter(&self) -> Result<&Segmenter, ApiError> {
        match &self.kind {
            ModelKind::Segmentation(s) => Ok(s),
            ModelKind::Tensor { .. } => Err(self.tensor_refusal()),
            _ => {
                let task = self.task().unwrap_or(&ModelTask::Embedding);
                Err(ApiError::WrongKind(format!(
                    "model `{}` is {}, not a segmentation model; call {}",
                    self.name,
                    task.noun(),
                    task.routes()
                )))
            }
        }
    }
}

/// A model ready to be served: what [`AppState::new`] takes.
pub struct LoadedModel {
    /// The name clients use.
    pub name: String,
    /// Its files and settings.
    pub files: ModelFiles,
    /// Embedding or tensor model.
    pub kind: ModelKind,
    /// What computes it.
    pub backend: Arc<dyn Backend>,
}
