//! What a worker is asked to run ([`Payload`]) and what it answers ([`Answer`]).
//!
//! One variant per kind of input a model takes, so that a new kind of model adds a variant here (or a [`Row`]
//! variant, for inputs that batch by rows), never an optional field beside the others. A worker whose model cannot run a payload answers "not supported by this model"
//! ([`RunError::Unsupported`](crate::protocol::RunError::Unsupported)) instead of guessing.
//!
//! Payloads of the same kind can be concatenated into one prediction (the supervisor batches requests that way) and
//! the answer is cut back into one part per request: [`Payload::merge`] and [`Answer::split`].

use bulkhead_core::{NamedTensor, Row, RowKind};
use bulkhead_segment::{SegmentJob, SegmentOutput};

use crate::audio::{AudioRequest, Transcript};
use serde::{Deserialize, Serialize};

/// The input of one prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    /// Rows of one kind ([`Row`]: token rows of an embedding model, answered with one vector per row
    /// ([`Answer::Vectors`]); pairs of a cross-encoder, a reranker or a sequence classifier, answered with one score
    /// or one logit vector per row ([`Answer::Scores`])). What a row needs (a prompt length, token type ids) is
    /// inside its variant.
    Rows(Vec<Row>),
    /// Named tensors for any ONNX graph (a model without a tokenizer): every graph output ([`Answer::Tensors`]).
    /// Never batched with other requests.
    Tensors(Vec<NamedTensor>),
    /// A segmentation request (a SAM2 model): an image's content id, its pixels when at hand, a prompt
    /// ([`Answer::Segment`]). Never batched with other requests.
    Segment(SegmentJob),
    /// Decoded audio and the options of one transcription ([`Answer::Transcription`]). Never batched.
    Audio(AudioRequest),
    /// The worker's own warm-up input (health probes): whatever answer its model gives. Nothing is hard-coded on the
    /// supervisor's side, so a probe fits every tokenizer and every graph.
    Probe,
}

/// The kind of a [`Payload`], for messages and for deciding what may be batched together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadKind {
    /// [`Payload::Rows`] of this kind (an empty list counts as token rows).
    Rows(RowKind),
    /// [`Payload::Tensors`].
    Tensors,
    /// [`Payload::Segment`].
    Segment,
    /// [`Payload::Audio`].
    Audio,
    /// [`Payload::Probe`].
    Probe,
}

impl std::fmt::Display for PayloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PayloadKind::Rows(kind) => kind.fmt(f),
            PayloadKind::Tensors => f.write_str("named tensors"),
            PayloadKind::Segment => f.write_str("a segmentation request"),
            PayloadKind::Audio => f.write_str("audio"),
            PayloadKind::Probe => f.write_str("a probe"),
        }
    }
}

impl Payload {
    /// Its kind.
    pub fn kind(&self) -> PayloadKind {
        match self {
            Payload::Rows(rows) => PayloadKind::Rows(rows.first().map_or(RowKind::Tokens, Row::kind)),
            Payload::Tensors(_) => PayloadKind::Tensors,
            Payload::Segment(_) => PayloadKind::Segment,
            Payload::Audio(_) => PayloadKind::Audio,
            Payload::Probe => PayloadKind::Probe,
        }
    }

    /// Rows the answer will hold (1 for tensors and probes: they are answered whole).
    pub fn rows(&self) -> usize {
        match self {
            Payload::Rows(rows) => rows.len(),
            Payload::Tensors(_) | Payload::Segment(_) | Payload::Audio(_) | Payload::Probe => 1,
        }
    }

    /// Whether payloads of this kind may share one prediction with others.
    pub fn batchable(&self) -> bool {
        matches!(self, Payload::Rows(_))
    }

    /// (rows, padded width) of the prediction: what its cost scales with (audio: one row, as wide as its 30-second
    /// windows). A probe's shape is unknown here (`(0, 0)`).
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Payload::Rows(rows) => (rows.len(), rows.iter().map(Row::len).max().unwrap_or(0)),
            Payload::Tensors(t) => t.first().map_or((1, 1), NamedTensor::rows_and_width),
            // The decoder alone is one shape class, the encoder and the decoder (an image sent along) another.
            Payload::Segment(job) => (1, job.image.as_ref().map_or(1, |i| i.width as usize)),
            Payload::Audio(a) => (1, a.windows()),
            Payload::Probe => (0, 0),
        }
    }

    /// Concatenates payloads of one batchable kind into one (`None` for a mix of kinds, or for tensors and probes
    /// with more than one part). The parts are taken, not copied.
    pub fn merge(parts: impl IntoIterator<Item = Payload>) -> Option<Payload> {
        let mut parts = parts.into_iter();
        let mut merged = parts.next()?;
        let kind = merged.kind();
        for p in parts {
            if p.kind() != kind {
                return None;
            }
            match (&mut merged, p) {
                (Payload::Rows(a), Payload::Rows(b)) => a.extend(b),
                _ => return None,
            }
        }
        Some(merged)
    }
}

/// The output of one prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    /// One embedding per row.
    Vectors(Vec<Vec<f32>>),
    /// One score (a vector of one) or one logit vector per row.
    Scores(Vec<Vec<f32>>),
    /// Every graph output, by name.
    Tensors(Vec<NamedTensor>),
    /// A segmentation answer: masks, or a request for the image.
    Segment(SegmentOutput),
    /// The transcription of one audio.
    Transcription(Transcript),
}

impl Answer {
    /// The number of rows answered (1 for tensors).
    pub fn rows(&self) -> usize {
        match self {
            Answer::Vectors(v) | Answer::Scores(v) => v.len(),
            Answer::Tensors(_) | Answer::Segment(_) | Answer::Transcription(_) => 1,
        }
    }

    /// Cuts the answer of a merged prediction into parts of `sizes` rows, in order. `None` when the rows do not add
    /// up (a worker that answered the wrong number of rows).
    pub fn split(self, sizes: &[usize]) -> Option<Vec<Answer>> {
        if self.rows() != sizes.iter().sum::<usize>() {
            return None;
        }
        let cut = |rows: Vec<Vec<f32>>, wrap: fn(Vec<Vec<f32>>) -> Answer| {
            let mut rows = rows.into_iter();
            sizes.iter().map(|&n| wrap(rows.by_ref().take(n).collect())).collect()
        };
        match self {
            Answer::Vectors(v) => Some(cut(v, Answer::Vectors)),
            Answer::Scores(v) => Some(cut(v, Answer::Scores)),
            whole @ (Answer::Tensors(_) | Answer::Segment(_) | Answer::Transcription(_)) => {
                (sizes.len() == 1).then(|| vec![whole])
            }
        }
    }

    /// The vectors of an embedding answer, borrowed.
    pub fn as_vectors(&self) -> Option<&[Vec<f32>]> {
        match self {
            Answer::Vectors(v) => Some(v),
            _ => None,
        }
    }

    /// The vectors of an embedding answer.
    pub fn into_vectors(self) -> Option<Vec<Vec<f32>>> {
        match self {
            Answer::Vectors(v) => Some(v),
            _ => None,
        }
    }

    /// The contents of a segmentation answer.
    pub fn into_segment(self) -> Option<SegmentOutput> {
        match self {
            Answer::Segment(s) => Some(s),
            _ => None,
        }
    }

    /// The transcript of a speech answer.
    pub fn into_transcript(self) -> Option<Transcript> {
        match self {
            Answer::Transcription(t) => Some(t),
            _ => None,
        }
    }

    /// The outputs of a tensor answer.
    pub fn into_tensors(self) -> Option<Vec<NamedTensor>> {
        match self {
            Answer::Tensors(t) => Some(t),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_of_one_kind_merge_and_answers_split_back() {
        let tokens = |rows: &[&[i64]]| Payload::Rows(rows.iter().map(|r| Row::tokens(r.to_vec())).collect());
        let a = tokens(&[&[1, 2], &[3]]);
        let b = tokens(&[&[4, 5, 6]]);
        let merged = Payload::merge([a.clone(), b]).unwrap();
        assert_eq!(merged, tokens(&[&[1, 2], &[3], &[4, 5, 6]]));
        assert_eq!(merged.shape(), (3, 3));
        let answer = Answer::Vectors(vec![vec![1.0], vec![2.0], vec![3.0]]);
        let parts = answer.split(&[2, 1]).unwrap();
        assert_eq!(parts, vec![Answer::Vectors(vec![vec![1.0], vec![2.0]]), Answer::Vectors(vec![vec![3.0]])]);
        assert!(Answer::Scores(vec![vec![0.5]]).split(&[2]).is_none(), "a short answer is refused");
        let pair = Payload::Rows(vec![Row::Pair { ids: vec![1], type_ids: vec![0] }]);
        assert_eq!(pair.kind(), PayloadKind::Rows(RowKind::Pair));
        assert!(Payload::merge([a.clone(), pair]).is_none(), "kinds never mix");
        assert!(Payload::merge([Payload::Probe, Payload::Probe]).is_none());
        assert!(!Payload::Probe.batchable() && a.batchable());
    }
}
