//! Rerankers: text-embeddings-inference `POST /rerank` and Cohere / Jina `POST /v1/rerank`; classifiers:
//! text-embeddings-inference `POST /predict`. Each route serves only its kind of model and refuses any other with
//! 400, naming the route to use.
//!
//! Scores are what sentence-transformers' `CrossEncoder` gives by default: the sigmoid of a reranker's logit (or
//! the logit itself when the model's config names the `Identity` activation, as ms-marco-MiniLM's does), the
//! softmax over a classifier's labels; `raw_scores` returns the logits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use bulkhead_core::ModelTask;
use bulkhead_embed::Truncation;

use super::common::{inference_headers, labelled, JsonBody};
use super::score::{best_first, score, ScoreJob};
use crate::api::rerank::{
    BilledUnits, CohereRerankRequest, CohereRerankResponse, CohereRerankResult, DocumentText, PredictInput,
    PredictRequest, PredictResponse, Prediction, Rank, RerankDocument, RerankMeta, RerankRequest, RerankResponse,
    RerankUsage, Sequence,
};
use crate::api::tei::TruncationDirection;
use crate::error::{ApiError, ErrorKind};
use crate::state::AppState;

/// The errors the scoring routes answer with.
pub const SCORE_ERRORS: &[ErrorKind] = super::openai::EMBEDDINGS_ERRORS;

fn is_reranker(t: &ModelTask) -> bool {
    matches!(t, ModelTask::Rerank { .. })
}

fn is_classifier(t: &ModelTask) -> bool {
    matches!(t, ModelTask::Classify { .. })
}

fn side(d: Option<TruncationDirection>) -> Truncation {
    match d.unwrap_or_default() {
        TruncationDirection::Right => Truncation::Right,
        TruncationDirection::Left => Truncation::Left,
    }
}

/// One relevance score per document: the reranker's activation of its logit, or the logit.
fn relevance(task: &ModelTask, logits: &[Vec<f32>], raw: bool) -> Vec<f32> {
    logits.iter().map(|l| if raw { l[0] } else { task.scores(l)[0] }).collect()
}

/// Ranks texts against a query (text-embeddings-inference compatible): every text, best first. A (query, text)
/// pair longer than the model's maximum is refused unless `truncate` is true.
#[utoipa::path(
    post,
    path = "/rerank",
    tag = "text-embeddings-inference",
    request_body = RerankRequest,
    responses((status = 200, description = "Every text with its score, best first", body = RerankResponse))
)]
pub async fn rerank(State(state): State<Arc<AppState>>, JsonBody(req): JsonBody<RerankRequest>) -> Response {
    let name = req.model.as_ref().map_or_else(|| state.default_model.clone(), |m| m.0.clone());
    let result = async {
        let model = state
            .model_for_kept(req.model.as_ref().map(|m| m.0.as_str()), req.keep_alive.as_ref(), is_reranker)
            .await?;
        let model = &model;
        let (tokenizer, task) = model.cross_encoder("POST /rerank", is_reranker)?;
        let job = ScoreJob {
            pairs: req.texts.0.iter().map(|t| (req.query.clone(), Some(t.clone()))).collect(),
            truncate: req.truncate.unwrap_or(false).then_some(side(req.truncation_direction)),
            noun: "text",
        };
        let s = score(model, &state, tokenizer, job).await?;
        let scores = relevance(task, &s.logits, req.raw_scores);
        let ranks = best_first(&scores)
            .into_iter()
            .map(|i| Rank { index: i, score: scores[i], text: req.return_text.then(|| req.texts.0[i].clone()) })
            .collect();
        Ok::<_, ApiError>(inference_headers(Json(RerankResponse(ranks)), model, &s.provenance))
    }
    .await;
    result.unwrap_or_else(|e| labelled(e, &name))
}

/// Ranks documents against a query (Cohere and Jina compatible): the best `top_n`, best first. Documents longer
/// than the model's maximum with the query are truncated, as Cohere does.
#[utoipa::path(
    post,
    path = "/v1/rerank",
    tag = "Cohere",
    request_body = CohereRerankRequest,
    responses((status = 200, description = "The best documents, best first", body = CohereRerankResponse))
)]
pub async fn cohere_rerank(
    State(state): State<Arc<AppState>>,
    JsonBody(req): JsonBody<CohereRerankRequest>,
) -> Response {
    let name = req.model.as_ref().map_or_else(|| state.default_model.clone(), |m| m.0.clone());
    let result = async {
        let model = state
            .model_for_kept(req.model.as_ref().map(|m| m.0.as_str()), req.keep_alive.as_ref(), is_reranker)
            .await?;
        let model = &model;
        let (tokenizer, task) = model.cross_encoder("POST /v1/rerank", is_reranker)?;
        let documents: Vec<String> = req.documents.0.into_iter().map(RerankDocument::into_text).collect();
        let mut warnings = vec![];
        let top_n = match req.top_n {
            None => documents.len(),
            Some(n) if n.0 == 0 => {
                return Err(ApiError::Invalid("top_n must be at least 1 (omit it to get every document)".into()))
            }
            Some(n) if n.0 > documents.len() && !documents.is_empty() => {
                warnings.push(format!(
                    "top_n {} is more than the {} documents; returning all {}",
                    n.0,
                    documents.len(),
                    documents.len()
                ));
                documents.len()
            }
            Some(n) => n.0,
        };
        let job = ScoreJob {
            pairs: documents.iter().map(|d| (req.query.clone(), Some(d.clone()))).collect(),
            truncate: Some(Truncation::Right),
            noun: "document",
        };
        let s = score(model, &state, tokenizer, job).await?;
        let scores = relevance(task, &s.logits, false);
        let results = best_first(&scores)
            .into_iter()
            .take(top_n)
            .map(|i| CohereRerankResult {
                index: i,
                relevance_score: scores[i],
                document: req.return_documents.then(|| DocumentText { text: documents[i].clone() }),
            })
            .collect();
        let body = CohereRerankResponse {
            id: request_id(),
            results,
            meta: RerankMeta { billed_units: BilledUnits { search_units: documents.len().div_ceil(100) }, warnings },
            model: model.name.clone(),
            usage: RerankUsage { total_tokens: s.tokens },
        };
        Ok::<_, ApiError>(inference_headers(Json(body), model, &s.provenance))
    }
    .await;
    result.unwrap_or_else(|e| labelled(e, &name))
}

/// Classifies texts or pairs of texts (text-embeddings-inference compatible): every label with its probability,
/// best first; a list of those for a batch. An input longer than the model's maximum is refused unless `truncate`
/// is true.
#[utoipa::path(
    post,
    path = "/predict",
    tag = "text-embeddings-inference",
    request_body = PredictRequest,
    responses((status = 200, description = "Every label with its score, best first", body = PredictResponse))
)]
pub async fn predict(State(state): State<Arc<AppState>>, JsonBody(req): JsonBody<PredictRequest>) -> Response {
    let name = req.model.as_ref().map_or_else(|| state.default_model.clone(), |m| m.0.clone());
    let result = async {
        let model = state
            .model_for_kept(req.model.as_ref().map(|m| m.0.as_str()), req.keep_alive.as_ref(), is_classifier)
            .await?;
        let model = &model;
        let (tokenizer, task) = model.cross_encoder("POST /predict", is_classifier)?;
        let ModelTask::Classify { labels } = task else { unreachable!("checked by cross_encoder") };
        let (sequences, batch) = match req.inputs {
            PredictInput::One(s) => (vec![s], false),
            PredictInput::Batch(b) => (b.0.into_iter().map(Sequence::Parts).collect(), true),
        };
        let mut pairs = Vec::with_capacity(sequences.len());
        for (i, s) in sequences.into_iter().enumerate() {
            let mut parts = s.into_parts().into_iter();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), b, None) => pairs.push((a, b)),
                (None, ..) | (_, _, Some(_)) => {
                    return Err(ApiError::Invalid(format!(
                        "input {i} must be one text or a pair of two texts ([text, text_pair])"
                    )))
                }
            }
        }
        let job = ScoreJob {
            pairs,
            truncate: req.truncate.unwrap_or(false).then_some(side(req.truncation_direction)),
            noun: "input",
        };
        let s = score(model, &state, tokenizer, job).await?;
        let mut all: Vec<Vec<Prediction>> = s
            .logits
            .iter()
            .map(|l| {
                let scores = if req.raw_scores { l.clone() } else { task.scores(l) };
                best_first(&scores)
                    .into_iter()
                    .map(|i| Prediction { label: labels[i].clone(), score: scores[i] })
                    .collect()
            })
            .collect();
        let body = if batch { PredictResponse::Batch(all) } else { PredictResponse::One(all.remove(0)) };
        Ok::<_, ApiError>(inference_headers(Json(body), model, &s.provenance))
    }
    .await;
    result.unwrap_or_else(|e| labelled(e, &name))
}

/// A request id: the process's start time and a counter, in hex.
fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let start = START
        .get_or_init(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    format!("{:016x}-{:08x}", *start as u64, NEXT.fetch_add(1, Ordering::Relaxed))
}
