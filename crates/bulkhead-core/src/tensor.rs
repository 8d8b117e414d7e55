//! The data that crosses the engine boundary: a padded token batch in, a float tensor out.

use serde::{Deserialize, Serialize};

/// A batch of tokenized inputs, padded to a common length, row-major `[batch, seq]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBatch {
    /// Number of rows.
    pub batch: usize,
    /// Padded sequence length.
    pub seq: usize,
    /// Token ids.
    pub input_ids: Vec<i64>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// Segment ids (all zero for single sentences).
    pub token_type_ids: Vec<i64>,
}

impl TokenBatch {
    /// Builds a batch from per-row ids, padding each row with `pad_id` to the longest row (or `pad_to` when larger).
    pub fn from_rows(rows: &[Vec<i64>], pad_id: i64, pad_to: Option<usize>) -> TokenBatch {
        let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
        let seq = pad_to.map_or(longest, |p| p.max(longest));
        let mut batch = TokenBatch {
            batch: rows.len(),
            seq,
            input_ids: Vec::with_capacity(rows.len() * seq),
            attention_mask: Vec::with_capacity(rows.len() * seq),
            token_type_ids: vec![0; rows.len() * seq],
        };
        for row in rows {
            batch.input_ids.extend_from_slice(row);
            batch.input_ids.extend(std::iter::repeat_n(pad_id, seq - row.len()));
            batch.attention_mask.extend(std::iter::repeat_n(1, row.len()));
            batch.attention_mask.extend(std::iter::repeat_n(0, seq - row.len()));
        }
        batch
    }

    /// The number of real (non-padding) tokens.
    pub fn real_tokens(&self) -> usize {
        self.attention_mask.iter().filter(|&&m| m != 0).count()
    }
}

/// A dense float tensor, row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Elements, `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

impl Tensor {
    /// Creates a tensor, checking that the data fits the shape.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor, String> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(format!("tensor of shape {shape:?} needs {n} elements, got {}", data.len()));
        }
        Ok(Tensor { shape, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_to_longest_row() {
        let b = TokenBatch::from_rows(&[vec![101, 7, 102], vec![101, 102]], 0, None);
        assert_eq!((b.batch, b.seq), (2, 3));
        assert_eq!(b.input_ids, vec![101, 7, 102, 101, 102, 0]);
        assert_eq!(b.attention_mask, vec![1, 1, 1, 1, 1, 0]);
        assert_eq!(b.real_tokens(), 5);
        let b = TokenBatch::from_rows(&[vec![1]], 0, Some(4));
        assert_eq!(b.input_ids, vec![1, 0, 0, 0]);
    }

    #[test]
    fn tensor_checks_its_shape() {
        assert!(Tensor::new(vec![2, 3], vec![0.0; 6]).is_ok());
        assert!(Tensor::new(vec![2, 3], vec![0.0; 5]).unwrap_err().contains("needs 6"));
    }
}
