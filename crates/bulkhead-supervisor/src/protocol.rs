//! The supervisor ⇄ worker wire protocol: length-delimited postcard frames over pipes.
//!
//! A frame is a little-endian `u32` byte length followed by that many bytes of postcard. The supervisor writes
//! [`Request`]s to the worker's standard input; the worker writes [`Response`]s to a private duplicate of its
//! original standard output (fd 1 itself is pointed at stderr, so stray prints from native libraries can never
//! corrupt a frame).
//!
//! The first frame a worker sends is always [`Response::Hello`] carrying [`PROTOCOL_VERSION`] and the crate
//! version; the supervisor refuses any other peer. [`Response::Ready`] is sent only after the model is loaded and
//! warmed up with the live input preparation.

use std::io::{self, Read, Write};

use bulkhead_core::{EngineError, SessionReport, TensorSpec};
use bulkhead_embed::StageTiming;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use crate::payload::{Answer, Payload, PayloadKind};

/// Bumped on every incompatible change of [`Request`] or [`Response`] (3: [`Payload`] and [`Answer`] enums, typed
/// load failures and run errors; 4: the prompt length of each token row; 5: a format too new and an unsupported
/// model as their own load-failure kinds; 6: one row type for every batchable payload, the prompt length inside
/// its token row; 7: segmentation payloads and answers, image rows ([`Row::Pixels`](bulkhead_core::Row::Pixels)) for
/// image-text models, audio payloads and transcription answers).
pub const PROTOCOL_VERSION: u32 = 9;

/// The version of this crate; worker and supervisor must be the same build.
pub const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Frames larger than this are refused (a corrupt length must not allocate gigabytes).
pub const MAX_FRAME_BYTES: usize = 512 << 20;

/// The nice value (over the worker's own) of the thread that runs a long prediction.
pub const LONG_NICE: i32 = crate::priority::BACKGROUND_NICE;

/// Supervisor → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Run one prediction.
    Run {
        /// Correlates the answer.
        id: u64,
        /// What to run.
        payload: Payload,
        /// The input texts, sent only while a fault rule with `match` is active (it is all they are for); empty
        /// otherwise.
        texts: Vec<String>,
        /// A long prediction ([`SupervisorConfig::long_row_tokens`](crate::SupervisorConfig::long_row_tokens)): the
        /// worker runs it on a thread of lower CPU priority ([`LONG_NICE`]), so that on a busy machine the short
        /// predictions of other workers, and the server, go first.
        long: bool,
    },
    /// Finish and exit 0.
    Shutdown,
}

/// One warm-up measurement: a batch shape and its latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmupShape {
    /// Rows in the batch.
    pub batch: usize,
    /// Padded sequence length.
    pub seq: usize,
    /// Median latency over the warm-up iterations, in milliseconds (the full prediction time).
    pub ms: f64,
}

/// Why a model could not be loaded on a unit: what a doctor classifies and what `/units` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadFailureKind {
    /// The unit's engine or device support is not in this build.
    NotCompiled,
    /// The unit cannot run on this machine (library without the provider, no device, wrong OS).
    Unusable,
    /// The engine refused the model's files (they do not parse, one is missing, the graph is invalid).
    ModelRejected,
    /// The model's format (ONNX IR version, an opset) is newer than the engine knows.
    FormatTooNew,
    /// The engine does not implement what the model needs (an operator, an architecture, a head).
    Unsupported,
    /// The model loaded but its warm-up forward pass failed.
    Inference,
    /// Anything around the engine: the tokenizer, the fault rules, a worker that speaks another protocol.
    Setup,
}

impl LoadFailureKind {
    /// The short name: `not_compiled`, `unusable`, `model_rejected`, `format_too_new`, `unsupported`, `inference`
    /// or `setup`.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadFailureKind::NotCompiled => "not_compiled",
            LoadFailureKind::Unusable => "unusable",
            LoadFailureKind::ModelRejected => "model_rejected",
            LoadFailureKind::FormatTooNew => "format_too_new",
            LoadFailureKind::Unsupported => "unsupported",
            LoadFailureKind::Inference => "inference",
            LoadFailureKind::Setup => "setup",
        }
    }
}

impl From<&EngineError> for LoadFailureKind {
    fn from(e: &EngineError) -> Self {
        match e {
            EngineError::NotCompiled { .. } => LoadFailureKind::NotCompiled,
            EngineError::Unusable { .. } => LoadFailureKind::Unusable,
            EngineError::ModelRejected { .. } => LoadFailureKind::ModelRejected,
            EngineError::FormatTooNew { .. } => LoadFailureKind::FormatTooNew,
            EngineError::Unsupported { .. } => LoadFailureKind::Unsupported,
            EngineError::Inference { .. } => LoadFailureKind::Inference,
        }
    }
}

impl std::fmt::Display for LoadFailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a prediction was not answered while the worker stays alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RunError {
    /// The model cannot run this kind of payload (texts sent to a graph, pairs sent to an embedding model).
    #[error("not supported by this model: {0}")]
    Unsupported(String),
    /// The engine returned an error for this input.
    #[error("{0}")]
    Engine(String),
    /// The request's options do not fit the model (a language it lacks, a prompt longer than its positions): the
    /// caller's mistake, answered as such.
    #[error("{0}")]
    Invalid(String),
}

/// A tensor model's graph signature (both empty for a model that takes tokens).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    /// The graph inputs.
    pub inputs: Vec<TensorSpec>,
    /// The graph outputs.
    pub outputs: Vec<TensorSpec>,
}

/// Worker → supervisor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// First frame: who is talking.
    Hello {
        /// [`PROTOCOL_VERSION`] of the worker.
        protocol: u32,
        /// [`CRATE_VERSION`] of the worker.
        version: String,
        /// The worker's process id.
        pid: u32,
    },
    /// The model is loaded; warm-up starts.
    Loaded {
        /// What really runs the session.
        report: SessionReport,
    },
    /// Loaded and warmed up: the worker accepts predictions.
    Ready {
        /// What really runs the session.
        report: SessionReport,
        /// Latency per warm-up shape.
        warmup: Vec<WarmupShape>,
        /// Resident memory after warm-up.
        rss_bytes: u64,
        /// A tensor model's graph inputs and outputs.
        signature: Signature,
    },
    /// The answer to a [`Request::Run`].
    Answered {
        /// The request id.
        id: u64,
        /// The output.
        answer: Answer,
        /// Stage timing inside the worker.
        timing: StageTiming,
        /// Resident memory after the prediction.
        rss_bytes: u64,
    },
    /// A [`Request::Run`] that was not answered; the worker stays alive.
    Failed {
        /// The request id.
        id: u64,
        /// Why.
        error: RunError,
    },
    /// The model could not be loaded on this unit; the worker exits after sending this.
    LoadFailed {
        /// What kind of failure.
        kind: LoadFailureKind,
        /// The engine's message.
        reason: String,
    },
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The pipe closed (the peer exited).
    #[error("the pipe closed")]
    Closed,
    /// An I/O error.
    #[error("pipe error: {0}")]
    Io(#[from] io::Error),
    /// The length prefix is absurd.
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    /// The bytes are not a valid message.
    #[error("malformed frame: {0}")]
    Decode(#[from] postcard::Error),
}

/// Serialises `msg` into one frame (length prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = postcard::to_stdvec(msg)?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

fn check_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

fn map_eof(e: io::Error) -> FrameError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        FrameError::Closed
    } else {
        FrameError::Io(e)
    }
}

/// Writes one frame (blocking).
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(msg)?)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame (blocking). [`FrameError::Closed`] on a clean end of stream.
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> Result<T, FrameError> {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix).map_err(map_eof)?;
    let mut body = vec![0u8; check_len(prefix)?];
    r.read_exact(&mut body).map_err(map_eof)?;
    Ok(postcard::from_bytes(&body)?)
}

/// Writes one frame (async).
pub async fn write_frame_async<T: Serialize>(w: &mut (impl AsyncWrite + Unpin), msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(msg)?).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame (async). [`FrameError::Closed`] on a clean end of stream.
pub async fn read_frame_async<T: for<'de> Deserialize<'de>>(r: &mut (impl AsyncRead + Unpin)) -> Result<T, FrameError> {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix).await.map_err(map_eof)?;
    let mut body = vec![0u8; check_len(prefix)?];
    r.read_exact(&mut body).await.map_err(map_eof)?;
    Ok(postcard::from_bytes(&body)?)
}

#[cfg(test)]
mod tests {
    use bulkhead_core::Row;

    use super::*;

    #[test]
    fn frames_round_trip() {
        let rows = vec![Row::Tokens { ids: vec![5, 2, 9], prompt: 1 }, Row::tokens(vec![])];
        let req = Request::Run { id: 7, payload: Payload::Rows(rows), texts: vec!["a".into()], long: true };
        let mut buf = vec![];
        write_frame(&mut buf, &req).unwrap();
        write_frame(&mut buf, &Request::Shutdown).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame::<Request>(&mut r).unwrap(), req);
        assert_eq!(read_frame::<Request>(&mut r).unwrap(), Request::Shutdown);
        assert!(matches!(read_frame::<Request>(&mut r), Err(FrameError::Closed)));
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let mut huge = &u32::MAX.to_le_bytes()[..];
        assert!(matches!(read_frame::<Request>(&mut huge), Err(FrameError::TooLarge(_))));
        let mut junk = &[3u8, 0, 0, 0, 0xff, 0xff, 0xff][..];
        assert!(matches!(read_frame::<Request>(&mut junk), Err(FrameError::Decode(_))));
        let mut short = &[9u8, 0, 0, 0, 1][..];
        assert!(matches!(read_frame::<Request>(&mut short), Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn async_frames_round_trip() {
        let msg = Response::Hello { protocol: PROTOCOL_VERSION, version: CRATE_VERSION.into(), pid: 1 };
        let mut buf = vec![];
        write_frame_async(&mut buf, &msg).await.unwrap();
        let mut r = &buf[..];
        let back: Response = read_frame_async(&mut r).await.unwrap();
        assert!(matches!(back, Response::Hello { protocol: PROTOCOL_VERSION, pid: 1, .. }));
    }

    #[test]
    fn every_payload_and_answer_round_trips() {
        let tensor =
            bulkhead_core::NamedTensor::new("x", vec![1, 2], bulkhead_core::TensorData::F32(vec![1.0, 2.0])).unwrap();
        for payload in [
            Payload::Rows(vec![Row::tokens(vec![1, 2])]),
            Payload::Rows(vec![Row::Pair { ids: vec![1, 2], type_ids: vec![0, 1] }]),
            Payload::Tensors(vec![tensor.clone()]),
            Payload::Probe,
        ] {
            let req = Request::Run { id: 1, payload, texts: vec![], long: false };
            assert_eq!(read_frame::<Request>(&mut &encode(&req).unwrap()[..]).unwrap(), req);
        }
        for answer in
            [Answer::Vectors(vec![vec![0.5]]), Answer::Scores(vec![vec![1.0, -1.0]]), Answer::Tensors(vec![tensor])]
        {
            let msg =
                Response::Answered { id: 2, answer: answer.clone(), timing: StageTiming::default(), rss_bytes: 3 };
            match read_frame::<Response>(&mut &encode(&msg).unwrap()[..]).unwrap() {
                Response::Answered { answer: back, .. } => assert_eq!(back, answer),
                other => panic!("{other:?}"),
            }
        }
        let failed = Response::LoadFailed { kind: LoadFailureKind::ModelRejected, reason: "bad".into() };
        let back: Response = read_frame(&mut &encode(&failed).unwrap()[..]).unwrap();
        assert!(matches!(back, Response::LoadFailed { kind: LoadFailureKind::ModelRejected, .. }));
        assert_eq!(LoadFailureKind::NotCompiled.to_string(), "not_compiled");
    }
}
