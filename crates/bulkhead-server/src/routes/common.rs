//! What every handler shares: the typed JSON body extractor, the one path into a model's compute side
//! ([`submit_rows`] through the model's batcher for every route that takes rows, [`submit_tensors`] for KServe
//! tensors, [`submit_segment`] for segmentation: each maps the errors and record the stage metrics once), and the headers of every inference response.
//!
//! Handlers never see the supervisor: a model is reached only through these functions, with the server's own
//! types (the crate's `tests/invariants.rs` checks it).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bulkhead_core::{NamedTensor, Precision, Row, Unit};
use bulkhead_embed::StageTiming;
use bulkhead_segment::{SegmentJob, SegmentOutput};
use serde::de::DeserializeOwned;
use serde_json::error::Category;
use std::sync::Arc;

use crate::backend::{Answer, BackendError, BackendOutput};
pub use crate::backend::{AudioRequest, FallbackChecks, SpeechOptions, SpeechTask, Transcript};
use crate::batcher::SubmitError;
use crate::error::ApiError;
use crate::grouping::Shape;
use crate::state::{AppState, ModelEntry};
use crate::trace::AnswerFacts;

/// Routes that answer without the API key: the liveness and readiness probes.
pub(crate) fn is_probe(path: &str) -> bool {
    path == "/health" || path.starts_with("/v2/health/")
}

/// `/openapi.json`, rendered once when the router is built (it depends on the models and the settings only).
#[derive(Clone)]
pub(crate) struct OpenApiDocument(pub Bytes);

/// The model a response was for, for the request metrics.
#[derive(Clone)]
pub(crate) struct ModelLabel(pub String);

/// A JSON body parsed straight into its type: malformed JSON is 400, JSON of the wrong shape or types 422, a body
/// over `--max-body-bytes` 413. A body past [`LARGE_BODY_BYTES`] is parsed on the server's thread for large requests
/// (at lower CPU priority, [`crate::bulk`]), so that the milliseconds a multi-megabyte text takes to parse never hold
/// an async runtime thread, nor a core, that short requests need.
pub struct JsonBody<T>(pub T);

/// Bodies larger than this are parsed off the async runtime's threads (about a quarter of a millisecond of parsing).
pub const LARGE_BODY_BYTES: usize = 256 << 10;

impl<T: DeserializeOwned + Send + 'static> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(state.config.max_body_bytes)
            } else {
                ApiError::MalformedJson(e.body_text())
            }
        })?;
        let parsed = if bytes.len() > LARGE_BODY_BYTES {
            crate::bulk::run(move || serde_json::from_slice::<T>(&bytes))
                .await
                .map_err(|e| ApiError::Internal(format!("parsing the request body stopped: {e}")))?
        } else {
            serde_json::from_slice(&bytes)
        };
        parsed.map(JsonBody).map_err(|e| match e.classify() {
            Category::Syntax | Category::Eof => ApiError::MalformedJson(e.to_string()),
            Category::Data | Category::Io => ApiError::Invalid(format!("invalid request: {e}")),
        })
    }
}

/// Who computed an answer and how long each stage took: what the headers of every inference response say.
#[derive(Debug, Clone, Copy)]
pub struct Provenance {
    /// The unit that computed it.
    pub unit: Unit,
    /// The weight precision that unit loaded (`None` when it did not say).
    pub precision: Option<Precision>,
    /// The worker process that computed it (`None` in-process).
    pub worker_pid: Option<u32>,
    /// Workers the request was retried after.
    pub retries: u32,
    /// tokenize / queue / infer / post milliseconds.
    pub timing: StageTiming,
    /// The forward passes that computed it, summed (rows, real and padded tokens); `None` for tensors.
    pub shape: Option<Shape>,
}

/// What a model computed, with its provenance.
pub struct Computed<T> {
    /// The answer.
    pub value: T,
    /// Who computed it, and the stage timing.
    pub provenance: Provenance,
}

/// Runs one request's rows (token rows of an embedding model, pairs of a cross-encoder) through the model's
/// batcher: one vector per row. Its `texts` go along only when the backend wants them (a fault rule that matches
/// on text); a full queue is 429, a backend failure its own error.
pub async fn submit_rows(
    model: &ModelEntry,
    state: &AppState,
    rows: Vec<Row>,
    texts: impl FnOnce() -> Vec<String>,
) -> Result<Computed<Vec<Vec<f32>>>, ApiError> {
    let texts = if model.backend.wants_texts() { texts() } else { vec![] };
    let out = model.batcher.submit(rows, texts).await.map_err(|e| match e {
        SubmitError::Overloaded => ApiError::Overloaded(model.name.clone()),
        SubmitError::Backend(e) => ApiError::from(e),
    })?;
    record_stages(state, &model.name, &out.timing);
    Ok(Computed {
        value: out.vectors,
        provenance: Provenance {
            unit: out.unit,
            precision: out.precision,
            worker_pid: out.worker_pid,
            retries: out.retries,
            timing: out.timing,
            shape: Some(out.shape),
        },
    })
}

/// One supervised request that is never batched (tensors, a segmentation job, an audio): records its stages and
/// takes its answer apart with `take`, whose `None` is an internal error naming `what` the model failed to answer.
async fn submit_one<T>(
    model: &ModelEntry,
    state: &AppState,
    answer: Result<BackendOutput, BackendError>,
    take: impl FnOnce(Answer) -> Option<T>,
    what: &str,
) -> Result<Computed<T>, ApiError> {
    let answer = answer?;
    record_stages(state, &model.name, &answer.timing);
    let provenance = Provenance {
        unit: answer.unit,
        precision: answer.precision,
        worker_pid: answer.worker_pid,
        retries: answer.retries,
        timing: answer.timing,
        shape: None,
    };
    let value = take(answer.answer).ok_or_else(|| ApiError::Internal(format!("the model answered no {what}")))?;
    Ok(Computed { value, provenance })
}

/// Runs a tensor model on named inputs (one supervised request, never batched).
pub async fn submit_tensors(
    model: &ModelEntry,
    state: &AppState,
    inputs: Vec<NamedTensor>,
) -> Result<Computed<Vec<NamedTensor>>, ApiError> {
    submit_one(model, state, model.backend.infer(inputs).await, Answer::into_tensors, "tensors").await
}

/// Runs a segmentation job (one supervised request, never batched): masks, or the worker's request for the
/// image.
pub async fn submit_segment(
    model: &ModelEntry,
    state: &AppState,
    job: SegmentJob,
) -> Result<Computed<SegmentOutput>, ApiError> {
    submit_one(model, state, model.backend.segment(job).await, Answer::into_segment, "segmentation").await
}

/// Transcribes one decoded audio on a speech model (one supervised request, never batched); records the worker's
/// stages (`features`, `encode`, `generate`) beside `queue` and `infer`.
pub async fn submit_audio(
    model: &ModelEntry,
    state: &AppState,
    audio: AudioRequest,
) -> Result<Computed<Transcript>, ApiError> {
    let done = model.backend.transcribe(audio).await;
    let computed = submit_one(model, state, done, Answer::into_transcript, "transcription").await?;
    let t = &computed.value.timing;
    for (stage, ms) in [("features", t.features_ms), ("encode", t.encode_ms), ("generate", t.generate_ms)] {
        state.metrics.stage_ms(&model.name, stage, ms);
    }
    Ok(computed)
}

/// Runs `work` (tokenization: bounded per text, but CPU-bound) on tokio's blocking pool, at most one per core at
/// a time, so that it never runs on the async runtime's threads and small requests are not held behind long ones.
pub async fn tokenize_off_runtime<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = state
        .tokenize_permits
        .acquire()
        .await
        .map_err(|_| ApiError::Internal("the tokenizer pool is closed".into()))?;
    tokio::task::spawn_blocking(work).await.map_err(|e| ApiError::Internal(format!("tokenization stopped: {e}")))
}

/// Stage-duration metrics of an answered request (the preparation stage is recorded where it happens).
fn record_stages(state: &AppState, model: &str, t: &StageTiming) {
    for (stage, ms) in [("queue", t.queue_ms), ("infer", t.infer_ms), ("post", t.post_ms)] {
        state.metrics.stage_ms(model, stage, ms);
    }
}

/// The name of a weight precision in `x-bulkhead-precision` (`None` when unknown).
fn precision_name(p: Precision) -> Option<&'static str> {
    match p {
        Precision::Fp32 => Some("fp32"),
        Precision::Fp16 => Some("fp16"),
        Precision::Bf16 => Some("bf16"),
        Precision::Int8 => Some("int8"),
        Precision::Unknown => None,
    }
}

/// Adds `x-bulkhead-unit`, `x-bulkhead-precision` (the weight precision that ran, as the answer says),
/// `Server-Timing` (`tokenize` is the server-side preparation; for rows, a `batch` entry whose description gives the
/// rows, real tokens and padded tokens of the forward passes that computed the answer) and the model label to an
/// inference response, and what its trace needs (`trace`: who computed it, the stages, when the answer was back).
pub fn inference_headers(body: impl IntoResponse, entry: &ModelEntry, p: &Provenance) -> Response {
    let answered_at = std::time::Instant::now();
    let mut resp = body.into_response();
    let h: &mut HeaderMap = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&p.unit.to_string()) {
        h.insert("x-bulkhead-unit", v);
    }
    if let Some(name) = p.precision.and_then(precision_name) {
        h.insert("x-bulkhead-precision", HeaderValue::from_static(name));
    }
    let t = &p.timing;
    let mut timing = format!(
        "tokenize;dur={:.3}, queue;dur={:.3}, infer;dur={:.3}, post;dur={:.3}",
        t.tokenize_ms, t.queue_ms, t.infer_ms, t.post_ms
    );
    if let Some(s) = p.shape {
        timing.push_str(&format!(", batch;desc=\"rows={} real={} padded={}\"", s.rows, s.real, s.padded));
    }
    if let Ok(v) = HeaderValue::from_str(&timing) {
        h.insert("server-timing", v);
    }
    resp.extensions_mut().insert(ModelLabel(entry.name.clone()));
    resp.extensions_mut().insert(AnswerFacts {
        unit: p.unit,
        precision: p.precision,
        worker_pid: p.worker_pid,
        retries: p.retries,
        timing: p.timing,
        answered_at,
    });
    resp
}

/// An error response with the model label (for metrics).
pub fn labelled(err: ApiError, model: &str) -> Response {
    let mut resp = err.into_response();
    resp.extensions_mut().insert(ModelLabel(model.to_string()));
    resp
}
