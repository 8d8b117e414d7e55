//! One input row of a model, in one shape from the tokenizer to the worker: [`Row`].
//!
//! A row is what a batch is made of and what its cost is counted in: the batcher sorts rows by [`Row::len`], the
//! supervisor concatenates the rows of several requests into one prediction, and the worker pads them into the
//! engine's batch ([`TokenBatch::from_rows`](crate::TokenBatch::from_rows),
//! [`TokenBatch::from_typed_rows`](crate::TokenBatch::from_typed_rows)). A new kind of input (audio features,
//! pixels) is a new variant here, with what only it needs inside the variant, never an optional field beside the
//! others; rows of different kinds never share a batch ([`Row::kind`]).

use serde::{Deserialize, Serialize};

/// One input row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Row {
    /// Token ids of an embedding model: special tokens included, unpadded.
    Tokens {
        /// Token ids.
        ids: Vec<i64>,
        /// How many leading ids are a prompt (0: none), counted as sentence-transformers counts them; pooling leaves
        /// them out when the model's pooling excludes prompts (`include_prompt: false`).
        prompt: usize,
    },
    /// One row of a cross-encoder (a reranker or a classifier): a (query, document) pair as `[CLS] query [SEP]
    /// document [SEP]` with token type ids 0 then 1, or one classified text with type ids 0.
    Pair {
        /// Token ids.
        ids: Vec<i64>,
        /// Token type (segment) ids, one per token id.
        type_ids: Vec<i64>,
    },
    /// One preprocessed image of an image-text model's vision tower: `channels x side x side` float32 pixel values
    /// in the model's layout (`pixel_values` of one image, as its image processor computes them).
    Pixels {
        /// The pixel values, channel-major.
        values: Vec<f32>,
        /// Positions of the vision encoder's sequence (patches, plus a class token where the model has one): what
        /// the image costs in the units the token budgets count.
        positions: usize,
    },
}

/// The kind of a [`Row`]: rows of one kind may share a batch, rows of different kinds never do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    /// [`Row::Tokens`].
    Tokens,
    /// [`Row::Pair`].
    Pair,
    /// [`Row::Pixels`].
    Pixels,
}

impl std::fmt::Display for RowKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RowKind::Tokens => "token rows",
            RowKind::Pair => "token pairs",
            RowKind::Pixels => "images",
        })
    }
}

impl Row {
    /// Token ids without a prompt.
    pub fn tokens(ids: Vec<i64>) -> Row {
        Row::Tokens { ids, prompt: 0 }
    }

    /// Its kind.
    pub fn kind(&self) -> RowKind {
        match self {
            Row::Tokens { .. } => RowKind::Tokens,
            Row::Pair { .. } => RowKind::Pair,
            Row::Pixels { .. } => RowKind::Pixels,
        }
    }

    /// The token ids (empty for an image).
    pub fn ids(&self) -> &[i64] {
        match self {
            Row::Tokens { ids, .. } | Row::Pair { ids, .. } => ids,
            Row::Pixels { .. } => &[],
        }
    }

    /// The token type ids (empty for a row that has none: they are all 0).
    pub fn type_ids(&self) -> &[i64] {
        match self {
            Row::Pair { type_ids, .. } => type_ids,
            Row::Tokens { .. } | Row::Pixels { .. } => &[],
        }
    }

    /// The leading ids that are a prompt (0 for a row that has none).
    pub fn prompt(&self) -> usize {
        match self {
            Row::Tokens { prompt, .. } => *prompt,
            Row::Pair { .. } | Row::Pixels { .. } => 0,
        }
    }

    /// Its length in positions: what padding and the token budgets count (an image: its encoder positions).
    pub fn len(&self) -> usize {
        match self {
            Row::Pixels { positions, .. } => *positions,
            _ => self.ids().len(),
        }
    }

    /// An image's pixel values (`None` for token rows).
    pub fn pixels(&self) -> Option<&[f32]> {
        match self {
            Row::Pixels { values, .. } => Some(values),
            _ => None,
        }
    }

    /// Whether it holds no position.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl AsRef<[i64]> for Row {
    fn as_ref(&self) -> &[i64] {
        self.ids()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_say_their_kind_length_and_prompt() {
        let t = Row::Tokens { ids: vec![101, 7, 8, 102], prompt: 2 };
        let p = Row::Pair { ids: vec![101, 5, 102, 6, 102], type_ids: vec![0, 0, 0, 1, 1] };
        assert_eq!((t.kind(), t.len(), t.prompt(), t.type_ids()), (RowKind::Tokens, 4, 2, &[][..]));
        assert_eq!((p.kind(), p.len(), p.prompt(), p.type_ids().len()), (RowKind::Pair, 5, 0, 5));
        assert!(Row::tokens(vec![]).is_empty());
        assert_eq!(RowKind::Pair.to_string(), "token pairs");
        let i = Row::Pixels { values: vec![0.5; 12], positions: 5 };
        assert_eq!((i.kind(), i.len(), i.ids(), i.pixels().map(<[f32]>::len)), (RowKind::Pixels, 5, &[][..], Some(12)));
        assert!(t.pixels().is_none());
    }
}
