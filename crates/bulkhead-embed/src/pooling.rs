//! Pooling of token states into one vector per input, and L2 normalisation.

use bulkhead_core::{Pooling, Tensor, TokenBatch};

/// Pools `[batch, seq, hidden]` token states with the batch's attention mask. A `[batch, hidden]` tensor (a model
/// that pools itself) is returned row by row.
pub fn pool(states: &Tensor, batch: &TokenBatch, mode: Pooling) -> Result<Vec<Vec<f32>>, String> {
    pool_excluding(states, batch, mode, &[])
}

/// [`pool`] leaving out the first `skip[row]` tokens of each row (a prompt that the model's pooling excludes:
/// sentence-transformers zeroes those positions of the attention mask before pooling, so every mode, `cls`
/// included, sees only the rest). An empty `skip` excludes nothing.
pub fn pool_excluding(
    states: &Tensor,
    batch: &TokenBatch,
    mode: Pooling,
    skip: &[usize],
) -> Result<Vec<Vec<f32>>, String> {
    match states.shape.as_slice() {
        &[b, h] if b == batch.batch => Ok(states.data.chunks_exact(h).map(<[f32]>::to_vec).collect()),
        &[b, s, h] if b == batch.batch && s == batch.seq => {
            let mut out = Vec::with_capacity(b);
            let mut masked = vec![];
            for row in 0..b {
                let mut mask = &batch.attention_mask[row * s..(row + 1) * s];
                let n = skip.get(row).copied().unwrap_or(0).min(s);
                if n > 0 {
                    masked.clear();
                    masked.extend_from_slice(mask);
                    masked[..n].fill(0);
                    mask = &masked;
                }
                let tokens = &states.data[row * s * h..(row + 1) * s * h];
                out.push(pool_row(tokens, mask, h, mode));
            }
            Ok(out)
        }
        shape => Err(format!(
            "model output has shape {shape:?}; expected [{}, {}, hidden] token states or [{}, hidden] embeddings",
            batch.batch, batch.seq, batch.batch
        )),
    }
}

fn pool_row(tokens: &[f32], mask: &[i64], h: usize, mode: Pooling) -> Vec<f32> {
    let real = || tokens.chunks_exact(h).zip(mask).filter(|(_, &m)| m != 0).map(|(t, _)| t);
    let count = mask.iter().filter(|&&m| m != 0).count();
    match mode {
        // The first and the last token the mask keeps (a row the mask empties pools to zeros, as in
        // sentence-transformers).
        Pooling::Cls => match mask.iter().position(|&m| m != 0) {
            Some(first) => tokens[first * h..(first + 1) * h].to_vec(),
            None => vec![0.0; h],
        },
        Pooling::LastToken => match mask.iter().rposition(|&m| m != 0) {
            Some(last) => tokens[last * h..(last + 1) * h].to_vec(),
            None => vec![0.0; h],
        },
        Pooling::Max => {
            let mut acc = vec![f32::NEG_INFINITY; h];
            for t in real() {
                acc.iter_mut().zip(t).for_each(|(a, &x)| *a = a.max(x));
            }
            if count == 0 {
                acc.fill(0.0);
            }
            acc
        }
        Pooling::WeightedMean => {
            // sentence-transformers weighs the real token at position j (from the first real token) by j + 1.
            let mut acc = vec![0f32; h];
            let mut total = 0f32;
            for (j, t) in tokens.chunks_exact(h).zip(mask).filter(|(_, &m)| m != 0).map(|(t, _)| t).enumerate() {
                let w = (j + 1) as f32;
                acc.iter_mut().zip(t).for_each(|(a, &x)| *a += x * w);
                total += w;
            }
            acc.iter_mut().for_each(|a| *a /= total.max(1e-9));
            acc
        }
        Pooling::Mean | Pooling::MeanSqrtLen => {
            let mut acc = vec![0f32; h];
            for t in real() {
                acc.iter_mut().zip(t).for_each(|(a, &x)| *a += x);
            }
            // sentence-transformers clamps the token count at 1e-9.
            let div = match mode {
                Pooling::Mean => (count as f32).max(1e-9),
                _ => (count as f32).sqrt().max(1e-9),
            };
            acc.iter_mut().for_each(|a| *a /= div);
            acc
        }
    }
}

/// Keeps the first `dims` values of `v` (Matryoshka truncation) and L2-normalises the rest when `normalize`.
pub fn truncate_dims(v: &mut Vec<f32>, dims: usize, normalize: bool) {
    v.truncate(dims);
    if normalize {
        l2_normalize(v);
    }
}

/// L2-normalises `v` in place (as torch.nn.functional.normalize, with eps 1e-12).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> (Tensor, TokenBatch) {
        // Two rows, seq 3, hidden 2; row 1 has one padding token whose state must be ignored.
        let b = TokenBatch::from_rows(&[vec![1, 2, 3], vec![1, 2]], 0, None);
        let t = Tensor::new(vec![2, 3, 2], vec![1., 2., 3., 4., 5., 6., 1., 1., 3., 3., 100., -100.]).unwrap();
        (t, b)
    }

    #[test]
    fn pools_ignoring_padding() {
        let (t, b) = batch();
        assert_eq!(pool(&t, &b, Pooling::Mean).unwrap(), vec![vec![3., 4.], vec![2., 2.]]);
        assert_eq!(pool(&t, &b, Pooling::Cls).unwrap()[1], vec![1., 1.]);
        assert_eq!(pool(&t, &b, Pooling::Max).unwrap()[1], vec![3., 3.]);
        assert_eq!(pool(&t, &b, Pooling::LastToken).unwrap()[1], vec![3., 3.]);
        // Row 0: (1·[1,2] + 2·[3,4] + 3·[5,6]) / 6.
        let w = pool(&t, &b, Pooling::WeightedMean).unwrap();
        assert!((w[0][0] - 22.0 / 6.0).abs() < 1e-6 && (w[0][1] - 28.0 / 6.0).abs() < 1e-6, "{w:?}");
        let s = pool(&t, &b, Pooling::MeanSqrtLen).unwrap();
        assert!((s[1][0] - 4.0 / 2f32.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn leaves_out_prompt_tokens() {
        let (t, b) = batch();
        // Row 0 without its first token; row 1 without its first token, so only token 2 remains (padding stays out).
        let skip = [1, 1];
        assert_eq!(pool_excluding(&t, &b, Pooling::Mean, &skip).unwrap(), vec![vec![4., 5.], vec![3., 3.]]);
        assert_eq!(pool_excluding(&t, &b, Pooling::Cls, &skip).unwrap(), vec![vec![3., 4.], vec![3., 3.]]);
        assert_eq!(pool_excluding(&t, &b, Pooling::LastToken, &skip).unwrap()[0], vec![5., 6.]);
        // A prompt longer than the row leaves nothing: zeros, never a padding state.
        assert_eq!(pool_excluding(&t, &b, Pooling::Mean, &[0, 3]).unwrap()[1], vec![0., 0.]);
        assert_eq!(pool_excluding(&t, &b, Pooling::Cls, &[0, 3]).unwrap()[1], vec![0., 0.]);
        assert_eq!(pool_excluding(&t, &b, Pooling::Mean, &[]).unwrap(), pool(&t, &b, Pooling::Mean).unwrap());
    }

    #[test]
    fn rejects_unexpected_shapes_and_passes_pooled_outputs() {
        let (_, b) = batch();
        let pooled = Tensor::new(vec![2, 2], vec![1., 2., 3., 4.]).unwrap();
        assert_eq!(pool(&pooled, &b, Pooling::Mean).unwrap(), vec![vec![1., 2.], vec![3., 4.]]);
        let wrong = Tensor::new(vec![3, 2], vec![0.; 6]).unwrap();
        assert!(pool(&wrong, &b, Pooling::Mean).unwrap_err().contains("[3, 2]"));
    }

    #[test]
    fn truncates_and_renormalises() {
        let mut v = vec![3., 4., 12.];
        truncate_dims(&mut v, 2, true);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut v = vec![3., 4., 12.];
        truncate_dims(&mut v, 2, false);
        assert_eq!(v, vec![3., 4.]);
    }

    #[test]
    fn normalises() {
        let mut v = vec![3., 4.];
        l2_normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0., 0.];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0., 0.]);
    }
}
