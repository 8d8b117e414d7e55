//! Small statistics every measuring part of bulkhead shares (the doctor, the bench, the quantizer, the benchmark
//! examples, the tests): nearest-rank percentiles, medians, means, least-squares slopes, and the agreement of two
//! sets of vectors (cosine, max abs diff). Each is defined here once, so that two tools comparing the same outputs
//! cannot disagree.

/// The `p`-quantile (0..=1) of `values` by nearest rank; 0 for no values.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (p * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

/// The median: the middle value, or the mean of the two middle values of an even count; 0 for no values.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// The smallest value; NaN when any value is NaN (a NaN is never hidden behind the others, as `f64::min` would
/// hide it); +inf for no values.
pub fn min(values: &[f64]) -> f64 {
    values.iter().fold(f64::INFINITY, |m, &x| if x.is_nan() || x < m { x } else { m })
}

/// The arithmetic mean; 0 for no values.
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// Least-squares slope of `ys` over `xs` (0 when undefined).
pub fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let (mx, my) = (mean(xs), mean(ys));
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if xs.len() < 2 || sxx == 0.0 {
        return 0.0;
    }
    xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum::<f64>() / sxx
}

/// Cosine similarity of two vectors of the same length, in f64.
///
/// Every comparison in bulkhead asks whether two computations of the same output agree (a unit against the fp32
/// reference, int8 against fp32, an answer against sentence-transformers), so the zero vector is a value like any
/// other: two zero vectors agree exactly (1), a zero vector against a non-zero one shares no direction (0). A NaN in
/// either gives NaN, which [`min`] and [`compare`] pass on rather than hide.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    if na.is_nan() || nb.is_nan() {
        return f64::NAN;
    }
    if na == 0.0 || nb == 0.0 {
        return if na == nb { 1.0 } else { 0.0 };
    }
    dot / (na * nb)
}

/// `got` against `want`, row by row: (min cosine, mean cosine, max abs diff), NaN when any value is NaN; `None`
/// when the shapes differ.
pub fn compare(got: &[Vec<f32>], want: &[Vec<f32>]) -> Option<(f64, f64, f64)> {
    if got.len() != want.len() || got.is_empty() || got.iter().zip(want).any(|(g, w)| g.len() != w.len()) {
        return None;
    }
    let cos: Vec<f64> = got.iter().zip(want).map(|(g, w)| cosine(g, w)).collect();
    let diff = got
        .iter()
        .zip(want)
        .flat_map(|(g, w)| g.iter().zip(w).map(|(x, y)| (x - y).abs() as f64))
        .fold(0.0, |m, d| if d.is_nan() || d > m { d } else { m });
    Some((min(&cos), mean(&cos), diff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics() {
        assert_eq!(percentile(&[3.0, 1.0, 2.0, 4.0], 0.5), 2.0);
        assert_eq!(percentile(&[3.0, 1.0, 2.0, 4.0], 0.95), 4.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert!((slope(&[0.0, 1.0, 2.0], &[1.0, 3.0, 5.0]) - 2.0).abs() < 1e-12);
        let (min, _, diff) = compare(&[vec![1.0, 0.0]], &[vec![1.0, 0.0]]).unwrap();
        assert_eq!((min, diff), (1.0, 0.0));
        assert!(compare(&[vec![1.0]], &[vec![1.0, 0.0]]).is_none());
        assert!((cosine(&[1.0, 0.0], &[0.0, 2.0])).abs() < 1e-12);
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-12);
        assert!((cosine(&[1.0, 0.0], &[-3.0, 0.0]) + 1.0).abs() < 1e-12);
    }

    #[test]
    fn zero_vectors_agree_with_zero_vectors_only() {
        assert_eq!(cosine(&[0.0, 0.0], &[0.0, 0.0]), 1.0);
        assert_eq!(cosine(&[0.0, 0.0], &[0.0, 1.0]), 0.0);
        assert_eq!(cosine(&[3.0, 0.0], &[0.0, 0.0]), 0.0);
        assert_eq!(cosine(&[], &[]), 1.0);
    }

    #[test]
    fn a_nan_is_never_hidden() {
        assert!(cosine(&[f32::NAN, 1.0], &[1.0, 1.0]).is_nan());
        assert!(cosine(&[0.0, 0.0], &[f32::NAN, 0.0]).is_nan());
        assert!(min(&[0.5, f64::NAN, 0.9]).is_nan());
        assert_eq!(min(&[0.5, 0.2, 0.9]), 0.2);
        assert_eq!(min(&[]), f64::INFINITY);
        let (worst, _, _) = compare(&[vec![1.0, 0.0], vec![f32::NAN, 0.0]], &[vec![1.0, 0.0], vec![1.0, 0.0]]).unwrap();
        assert!(worst.is_nan(), "a NaN row makes the worst cosine NaN, not the other rows' 1");
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[2.0, f64::INFINITY]), f64::INFINITY);
    }
}
