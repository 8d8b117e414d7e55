//! What a model is for, read from its config: an embedding model, or a cross-encoder (a reranker with one output
//! label, a sequence classifier with several) and how its logits become scores.
//!
//! A Hugging Face `*ForSequenceClassification` architecture is a cross-encoder; `id2label` (or `num_labels`) says
//! how many labels it has. sentence-transformers `CrossEncoder` folders are the same transformers folders, with the
//! activation it applies to one-label logits in config.json (`sentence_transformers.activation_fn`, or the older
//! `sbert_ce_default_activation_function`). A SAM2 checkpoint (`Sam2Model`, or `model_type` `sam2`) segments.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sparse::SparseSpec;

/// How logits become the scores a route returns by default (`raw_scores` returns the logits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `1 / (1 + e^-x)` per logit: sentence-transformers' default for one label.
    #[default]
    Sigmoid,
    /// Softmax over the labels: what a classifier's scores are.
    Softmax,
    /// The logits unchanged (a CrossEncoder whose config names `Identity`, as ms-marco-MiniLM's does).
    Identity,
}

impl Activation {
    /// Applies the activation to one row of logits.
    pub fn apply(self, logits: &[f32]) -> Vec<f32> {
        match self {
            Activation::Identity => logits.to_vec(),
            Activation::Sigmoid => logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect(),
            Activation::Softmax => {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
                let sum: f32 = exps.iter().sum();
                exps.into_iter().map(|e| e / sum).collect()
            }
        }
    }
}

/// `architectures[0]` values of two-tower image-text models ([`ModelTask::ImageText`]).
pub const IMAGE_TEXT_ARCHITECTURES: &[&str] = &["CLIPModel", "SiglipModel"];

/// What a model computes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum ModelTask {
    /// One vector per text (`/v1/embeddings`, `/embed`).
    #[default]
    Embedding,
    /// One relevance score per (query, document) pair (`/rerank`, `/v1/rerank`).
    Rerank {
        /// How the logit becomes the score.
        activation: Activation,
    },
    /// One score per label for a text or a pair of texts (`/predict`).
    Classify {
        /// The label names, in logit order (`id2label`; `LABEL_i` where a name is missing).
        labels: Vec<String>,
    },
    /// Promptable segmentation (SAM2): an image and points or boxes in, masks out (`/v1/segment`).
    Segmentation,
    /// A two-tower image-text model (CLIP, SigLIP: `CLIPModel`, `SiglipModel`): one vector per text from its text
    /// tower and one per image from its vision tower, in one space (`/v1/embeddings`, `/embed`,
    /// `/embeddings_image`).
    ImageText,
    /// Speech to text (a Whisper `*ForConditionalGeneration` folder): audio in, a transcription out
    /// (`/v1/audio/transcriptions`, `/v1/audio/translations`, `bulkhead transcribe`).
    SpeechToText,
    /// A sparse embedding model (SPLADE: a `*ForMaskedLM` with sentence-transformers' `SpladePooling`): one
    /// vocabulary-sized vector per text, returned as its active dimensions (`/embed_sparse`, `/v1/embeddings` with
    /// `"sparse": true`). Read from `modules.json`, not config.json ([`SparseSpec::read`]).
    SparseEmbedding(SparseSpec),
}

impl ModelTask {
    /// The task `config.json` describes: a Whisper model (`model_type: whisper` or
    /// `WhisperForConditionalGeneration`) is speech to text; a `*ForSequenceClassification` architecture is a
    /// reranker with one label and a classifier with several; anything else embeds.
    pub fn from_config(config: &Value) -> ModelTask {
        let arch = config.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str).unwrap_or_default();
        let model_type = config.get("model_type").and_then(Value::as_str).unwrap_or_default();
        if arch == "Sam2Model" || (arch.is_empty() && model_type == "sam2") {
            return ModelTask::Segmentation;
        }
        if IMAGE_TEXT_ARCHITECTURES.contains(&arch) {
            return ModelTask::ImageText;
        }
        if model_type == "whisper"
            || arch == "WhisperForConditionalGeneration"
            || model_type == "qwen3_asr"
            || arch == "Qwen3ASRForConditionalGeneration"
        {
            return ModelTask::SpeechToText;
        }
        if !arch.ends_with("ForSequenceClassification") {
            return ModelTask::Embedding;
        }
        let id2label = config.get("id2label").and_then(Value::as_object);
        let count = id2label
            .map(|m| m.len())
            .or_else(|| config.get("num_labels").and_then(Value::as_u64).map(|n| n as usize))
            .unwrap_or(2)
            .max(1);
        if count == 1 {
            let named = config
                .pointer("/sentence_transformers/activation_fn")
                .or_else(|| config.get("sbert_ce_default_activation_function"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let activation = if named.ends_with("Identity") { Activation::Identity } else { Activation::Sigmoid };
            return ModelTask::Rerank { activation };
        }
        let labels = (0..count)
            .map(|i| {
                id2label
                    .and_then(|m| m.get(&i.to_string()))
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("LABEL_{i}"), str::to_string)
            })
            .collect();
        ModelTask::Classify { labels }
    }

    /// Whether the model scores token pairs (a reranker or a classifier) rather than embedding texts.
    pub fn is_cross_encoder(&self) -> bool {
        matches!(self, ModelTask::Rerank { .. } | ModelTask::Classify { .. })
    }

    /// Whether the model embeds images too (a two-tower image-text model).
    pub fn takes_images(&self) -> bool {
        matches!(self, ModelTask::ImageText)
    }

    /// Whether the model turns audio into text.
    pub fn is_speech(&self) -> bool {
        matches!(self, ModelTask::SpeechToText)
    }

    /// Whether the model answers sparse embeddings (SPLADE).
    pub fn is_sparse(&self) -> bool {
        matches!(self, ModelTask::SparseEmbedding(_))
    }

    /// The number of logits per row (0 for an embedding model; the vocabulary size for a sparse one).
    pub fn outputs(&self) -> usize {
        match self {
            ModelTask::Embedding | ModelTask::Segmentation | ModelTask::ImageText | ModelTask::SpeechToText => 0,
            ModelTask::Rerank { .. } => 1,
            ModelTask::Classify { labels } => labels.len(),
            ModelTask::SparseEmbedding(spec) => spec.vocab,
        }
    }

    /// The default scores of one row of logits: the reranker's activation, softmax for a classifier, the pooled vector
    /// unchanged for a sparse model.
    pub fn scores(&self, logits: &[f32]) -> Vec<f32> {
        match self {
            ModelTask::Rerank { activation } => activation.apply(logits),
            // A sparse model's row is its pooled vector, already what it answers (before sparsification).
            ModelTask::SparseEmbedding(_) => logits.to_vec(),
            _ => Activation::Softmax.apply(logits),
        }
    }

    /// A word for messages: `embedding model`, `reranker`, `classifier`.
    pub fn noun(&self) -> &'static str {
        match self {
            ModelTask::Embedding => "an embedding model",
            ModelTask::ImageText => "an image-text embedding model",
            ModelTask::Rerank { .. } => "a reranker",
            ModelTask::Classify { .. } => "a classifier",
            ModelTask::Segmentation => "a segmentation model",
            ModelTask::SpeechToText => "a speech-to-text model",
            ModelTask::SparseEmbedding(_) => "a sparse embedding model (SPLADE)",
        }
    }

    /// The routes that serve this task, for errors that name the route to use.
    pub fn routes(&self) -> &'static str {
        match self {
            ModelTask::Embedding => "POST /v1/embeddings or POST /embed",
            ModelTask::ImageText => "POST /v1/embeddings, POST /embed or POST /embeddings_image",
            ModelTask::Rerank { .. } => "POST /rerank or POST /v1/rerank",
            ModelTask::Classify { .. } => "POST /predict",
            ModelTask::Segmentation => "POST /v1/segment",
            ModelTask::SpeechToText => "POST /v1/audio/transcriptions or POST /v1/audio/translations",
            ModelTask::SparseEmbedding(_) => "POST /embed_sparse or POST /v1/embeddings with \"sparse\": true",
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tasks_from_configs() {
        assert_eq!(ModelTask::from_config(&json!({"architectures": ["BertModel"]})), ModelTask::Embedding);
        let r = ModelTask::from_config(&json!({"architectures": ["BertForSequenceClassification"],
            "id2label": {"0": "LABEL_0"}}));
        assert_eq!(r, ModelTask::Rerank { activation: Activation::Sigmoid });
        let r = ModelTask::from_config(&json!({"architectures": ["BertForSequenceClassification"], "num_labels": 1,
            "sbert_ce_default_activation_function": "torch.nn.modules.linear.Identity"}));
        assert_eq!(r, ModelTask::Rerank { activation: Activation::Identity });
        let c = ModelTask::from_config(&json!({"architectures": ["XLMRobertaForSequenceClassification"],
            "id2label": {"1": "positive", "0": "negative", "2": "neutral"}}));
        assert_eq!(c, ModelTask::Classify { labels: vec!["negative".into(), "positive".into(), "neutral".into()] });
        assert_eq!(c.outputs(), 3);
        assert!(c.is_cross_encoder() && !ModelTask::Embedding.is_cross_encoder());
        let sam2 = ModelTask::from_config(&json!({"architectures": ["Sam2Model"], "model_type": "sam2"}));
        assert_eq!(sam2, ModelTask::Segmentation);
        assert_eq!(ModelTask::from_config(&json!({"model_type": "sam2"})), ModelTask::Segmentation);
        assert!(!sam2.is_cross_encoder());
        let clip = ModelTask::from_config(&json!({"architectures": ["CLIPModel"]}));
        assert!(clip == ModelTask::ImageText && !clip.is_cross_encoder() && clip.takes_images());
        assert_eq!(ModelTask::from_config(&json!({"architectures": ["SiglipModel"]})), ModelTask::ImageText);
        let w = ModelTask::from_config(&json!({"architectures": ["WhisperForConditionalGeneration"],
            "model_type": "whisper"}));
        assert_eq!(w, ModelTask::SpeechToText);
        assert_eq!(ModelTask::from_config(&json!({"model_type": "whisper"})), ModelTask::SpeechToText);
        assert!(w.is_speech() && !w.is_cross_encoder() && !ModelTask::Embedding.is_speech());
        let q = json!({"architectures": ["Qwen3ASRForConditionalGeneration"], "model_type": "qwen3_asr"});
        assert_eq!(ModelTask::from_config(&q), ModelTask::SpeechToText);
    }

    #[test]
    fn activations_match_their_definitions() {
        let s = Activation::Sigmoid.apply(&[0.0, 2.0]);
        assert!((s[0] - 0.5).abs() < 1e-7 && (s[1] - 0.880_797).abs() < 1e-6);
        let p = Activation::Softmax.apply(&[1.0, 1.0, 1000.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6 && p[2] > 0.999, "stable for large logits: {p:?}");
        assert_eq!(Activation::Identity.apply(&[-3.5]), vec![-3.5]);
    }
}
