//! What callers ask of the policy and what it answers: a [`Job`] (one request), its [`Answered`] result or a
//! [`PredictError`], and the [`StartError`] of a model no unit can serve. Plain data.

use bulkhead_core::{NamedTensor, Precision, Row, Unit};
use bulkhead_embed::StageTiming;

use crate::payload::{Answer, Payload};

/// One request: what to run and, only while a fault rule matches on text (`BULKHEAD_FAULTS` with `match`), the
/// texts that rule reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// What to run.
    pub payload: Payload,
    /// The input texts, for fault rules with `match` only (see
    /// [`Supervisor::wants_texts`](crate::Supervisor::wants_texts)); empty otherwise, so that texts never travel
    /// to a worker that does not read them.
    pub texts: Vec<String>,
}

impl Job {
    /// Rows of one kind (token rows, or pairs of a cross-encoder).
    pub fn rows(rows: Vec<Row>) -> Job {
        Job { payload: Payload::Rows(rows), texts: vec![] }
    }

    /// Token rows of an embedding model without a prompt, with `texts` for fault rules that match on text.
    pub fn tokens(rows: Vec<Vec<i64>>, texts: Vec<String>) -> Job {
        Job { payload: Payload::Rows(rows.into_iter().map(Row::tokens).collect()), texts }
    }

    /// Named tensors of any ONNX graph.
    pub fn tensors(inputs: Vec<NamedTensor>) -> Job {
        Job { payload: Payload::Tensors(inputs), texts: vec![] }
    }

    /// A segmentation request (a SAM2 model).
    pub fn segment(job: bulkhead_segment::SegmentJob) -> Job {
        Job { payload: Payload::Segment(job), texts: vec![] }
    }

    /// Decoded audio to transcribe (a speech model).
    pub fn audio(audio: crate::audio::AudioRequest) -> Job {
        Job { payload: Payload::Audio(audio), texts: vec![] }
    }

    /// A health probe: the worker runs its own warm-up input.
    pub fn probe() -> Job {
        Job { payload: Payload::Probe, texts: vec![] }
    }

    /// The same job with `texts` for fault rules that match on text.
    pub fn with_texts(self, texts: Vec<String>) -> Job {
        Job { texts, ..self }
    }
}

/// The answer to one [`Job`]: what the worker computed and what the response needs to say about it.
#[derive(Debug, Clone)]
pub struct Answered {
    /// The output.
    pub answer: Answer,
    /// The unit that computed it.
    pub unit: Unit,
    /// The weight precision that unit loaded (`None` before its session reported it).
    pub precision: Option<Precision>,
    /// The process id of the worker that computed it (`None` in-process, `--isolation none`).
    pub worker_pid: Option<u32>,
    /// `queue_ms`: time in the supervisor and the pipes; `infer_ms`/`post_ms`: the worker's.
    pub timing: StageTiming,
    /// Workers this request was retried after (0 normally).
    pub retries: u32,
}

/// Why a job was not answered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PredictError {
    /// The request crashed `poison_crashes` workers, one of them a fresh worker running it alone.
    #[error("{0}")]
    Poison(String),
    /// No unit of the chain can serve, or none could take the request within the queue timeout.
    #[error("{0}")]
    Unavailable(String),
    /// The engine returned an error for this input.
    #[error("{0}")]
    Failed(String),
    /// The model cannot run this kind of input.
    #[error("{0}")]
    Unsupported(String),
    /// The request's options do not fit the model (the caller's mistake).
    #[error("{0}")]
    Invalid(String),
    /// The supervisor is shutting down.
    #[error("the model is shutting down")]
    ShuttingDown,
}

/// Why the supervisor could not start serving.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no unit of the chain can serve {model}: {reasons}")]
pub struct StartError {
    /// The model.
    pub model: String,
    /// `unit: reason; unit: reason`.
    pub reasons: String,
}
