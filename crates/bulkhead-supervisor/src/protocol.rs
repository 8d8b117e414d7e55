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

use bulkhead_core::{NamedTensor, SessionReport, TensorSpec};
use bulkhead_embed::StageTiming;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bumped on every incompatible change of [`Request`] or [`Response`].
pub const PROTOCOL_VERSION: u32 = 3;

/// The version of this crate; worker and supervisor must be the same build.
pub const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Frames larger than this are refused (a corrupt length must not allocate gigabytes).
pub const MAX_FRAME_BYTES: usize = 512 << 20;

/// Supervisor → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Embed `rows` (token ids, unpadded). `texts` are the original inputs, used only by fault rules with `match`.
    Predict {
        /// Correlates the answer.
        id: u64,
        /// Token ids per input.
        rows: Vec<Vec<i64>>,
        /// The original texts (may be empty when the caller sent tokens).
        texts: Vec<String>,
        /// Per row, how many leading tokens are a prompt (pooling leaves them out when the model's pooling
        /// excludes prompts); empty when no row has one.
        prompt_tokens: Vec<usize>,
    },
    /// Run a tensor model (no tokenizer) on named `inputs`; no inputs runs the warm-up inputs (health probes).
    Infer {
        /// Correlates the answer.
        id: u64,
        /// Every graph input, by name.
        inputs: Vec<NamedTensor>,
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
    /// Median latency over the warm-up iterations, in milliseconds (full `embed_tokens` time).
    pub ms: f64,
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
        /// A tensor model's graph inputs (empty for embedding models).
        inputs: Vec<TensorSpec>,
        /// A tensor model's graph outputs (empty for embedding models).
        outputs: Vec<TensorSpec>,
    },
    /// The answer to a [`Request::Predict`].
    Predicted {
        /// The request id.
        id: u64,
        /// One vector per row.
        vectors: Vec<Vec<f32>>,
        /// Stage timing inside the worker.
        timing: StageTiming,
        /// Resident memory after the prediction.
        rss_bytes: u64,
    },
    /// The answer to a [`Request::Infer`].
    Inferred {
        /// The request id.
        id: u64,
        /// Every graph output.
        outputs: Vec<NamedTensor>,
        /// Stage timing inside the worker.
        timing: StageTiming,
        /// Resident memory after the prediction.
        rss_bytes: u64,
    },
    /// The engine returned an error for a prediction (the worker stays alive).
    Failed {
        /// The request id.
        id: u64,
        /// The engine's message.
        message: String,
    },
    /// The model could not be loaded on this unit; the worker exits after sending this.
    LoadFailed {
        /// The engine's message.
        reason: String,
        /// `not_compiled`, `unusable`, `model_rejected`, `inference` or `setup`.
        kind: String,
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
    use super::*;

    #[test]
    fn frames_round_trip() {
        let req = Request::Predict {
            id: 7,
            rows: vec![vec![101, 2, 102], vec![]],
            texts: vec!["a".into()],
            prompt_tokens: vec![1, 0],
        };
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
}
