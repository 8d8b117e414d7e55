//! The output encodings of `/v1/embeddings`: `float`, `base64`, and the quantized forms exactly as
//! sentence-transformers' `quantize_embeddings` computes them.
//!
//! * `int8` / `uint8`: per dimension, `step = (max - min) / 255` (1 where it is 0), level
//!   `clip(floor((value - min) / step), 0, 255)`, less 128 for `int8`; all in float32, as numpy does. `min` and
//!   `max` are the request's `quantization_ranges`, or else, as sentence-transformers does without `ranges`, the
//!   minimum and maximum of each dimension over the request's own vectors; that needs two vectors at least (one
//!   vector alone would give every value the same level), and the response returns the ranges it used so that
//!   later requests can send them and share the levels.
//! * `ubinary`: the bits `value > 0`, packed eight per byte with the first dimension in the highest bit, the last
//!   byte padded with zeros (numpy's `packbits`); `binary`: the same byte less 128, as an `int8`.

use base64::Engine as _;

use crate::api::openai::{Embedding, EmbeddingsResponse, EncodingFormat, QuantizationRanges};
use crate::error::ApiError;

/// The vectors of a response in `format`, with the ranges `int8` and `uint8` used.
pub fn encode(
    vectors: Vec<Vec<f32>>,
    format: EncodingFormat,
    ranges: Option<QuantizationRanges>,
) -> Result<(Vec<Embedding>, Option<QuantizationRanges>), ApiError> {
    let signed = matches!(format, EncodingFormat::Int8 | EncodingFormat::Binary);
    match format {
        EncodingFormat::Float => Ok((vectors.into_iter().map(Embedding::Float).collect(), None)),
        EncodingFormat::Base64 => Ok((vectors.iter().map(|v| Embedding::Base64(base64(v))).collect(), None)),
        EncodingFormat::Binary | EncodingFormat::Ubinary => {
            let packed = vectors.iter().map(|v| pack_bits(v));
            Ok((packed.map(|b| if signed { Embedding::Int8(shift(&b)) } else { Embedding::Uint8(b) }).collect(), None))
        }
        EncodingFormat::Int8 | EncodingFormat::Uint8 => {
            let dims = vectors.first().map_or(0, Vec::len);
            let (min, max) = match ranges {
                Some(r) => checked_ranges(r, dims)?,
                None => ranges_of(&vectors)?,
            };
            let levels = vectors.iter().map(|v| levels(v, &min, &max));
            let out = levels.map(|l| if signed { Embedding::Int8(shift(&l)) } else { Embedding::Uint8(l) }).collect();
            Ok((out, Some(QuantizationRanges(vec![min, max]))))
        }
    }
}

/// Refuses, before any work, a request whose `int8` / `uint8` levels could not be calibrated: fewer than two
/// inputs and no `quantization_ranges`.
/// The `/v1/embeddings` answer for `vectors` of `model` in `format` ([`encode`]).
pub fn response(
    model: String,
    vectors: Vec<Vec<f32>>,
    tokens: usize,
    format: EncodingFormat,
    ranges: Option<QuantizationRanges>,
) -> Result<EmbeddingsResponse, ApiError> {
    let (embeddings, ranges) = encode(vectors, format, ranges)?;
    Ok(EmbeddingsResponse::new(model, embeddings, tokens, ranges))
}

pub fn check_calibration(format: EncodingFormat, ranges: bool, inputs: usize) -> Result<(), ApiError> {
    if matches!(format, EncodingFormat::Int8 | EncodingFormat::Uint8) && !ranges && inputs < 2 {
        return Err(lone_vector());
    }
    Ok(())
}

fn lone_vector() -> ApiError {
    ApiError::Invalid(
        "int8 and uint8 need the range of each dimension: send two inputs or more, whose minimum and maximum are \
         used (as sentence-transformers does), or `quantization_ranges` [[min...], [max...]] (a previous response's \
         `quantization_ranges`, or ranges from a representative set)"
            .into(),
    )
}

/// Base64 of the little-endian f32 bytes.
fn base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The bits `value > 0`, eight per byte, the first value in the highest bit, the last byte padded with zeros.
pub fn pack_bits(v: &[f32]) -> Vec<u8> {
    v.chunks(8)
        .map(|chunk| chunk.iter().enumerate().fold(0u8, |byte, (i, &x)| byte | (u8::from(x > 0.0) << (7 - i))))
        .collect()
}

/// A byte less 128, as the signed byte numpy's `(uint8 - 128).astype(int8)` gives.
fn shift(bytes: &[u8]) -> Vec<i8> {
    bytes.iter().map(|&b| (i16::from(b) - 128) as i8).collect()
}

/// The level of each value between `min` and `max` of its dimension: 0 to 255.
pub fn levels(v: &[f32], min: &[f32], max: &[f32]) -> Vec<u8> {
    v.iter()
        .zip(min.iter().zip(max))
        .map(|(&x, (&lo, &hi))| {
            let step = (hi - lo) / 255.0;
            let step = if step == 0.0 { 1.0 } else { step };
            // `as u8` saturates, and NaN (a non-finite range) becomes 0: the clip to 0..=255 numpy does.
            ((x - lo) / step).floor().clamp(0.0, 255.0) as u8
        })
        .collect()
}

/// The minimum and maximum of each dimension over `vectors` (sentence-transformers' calibration without ranges).
fn ranges_of(vectors: &[Vec<f32>]) -> Result<(Vec<f32>, Vec<f32>), ApiError> {
    if vectors.len() < 2 {
        return Err(lone_vector());
    }
    let dims = vectors[0].len();
    let mut min = vec![f32::INFINITY; dims];
    let mut max = vec![f32::NEG_INFINITY; dims];
    for v in vectors {
        for (i, &x) in v.iter().enumerate() {
            min[i] = min[i].min(x);
            max[i] = max[i].max(x);
        }
    }
    Ok((min, max))
}

fn checked_ranges(r: QuantizationRanges, dims: usize) -> Result<(Vec<f32>, Vec<f32>), ApiError> {
    let [min, max]: [Vec<f32>; 2] = r.0.try_into().map_err(|rows: Vec<Vec<f32>>| {
        ApiError::Invalid(format!(
            "`quantization_ranges` must be two arrays, [[min...], [max...]]; it has {} rows",
            rows.len()
        ))
    })?;
    if min.len() != dims || max.len() != dims {
        return Err(ApiError::Invalid(format!(
            "`quantization_ranges` has {} minima and {} maxima; the vectors have {dims} dimensions (after \
             `dimensions`)",
            min.len(),
            max.len()
        )));
    }
    if let Some(i) = (0..dims).find(|&i| !(min[i].is_finite() && max[i].is_finite() && min[i] <= max[i])) {
        return Err(ApiError::Invalid(format!(
            "`quantization_ranges` dimension {i}: minimum {} and maximum {} must be finite, the minimum not above \
             the maximum",
            min[i], max[i]
        )));
    }
    Ok((min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_packed_as_numpy_packbits_packs_them() {
        // np.packbits([1,0,0,0,0,0,0,1, 1,1]) == [129, 192]
        let v = [0.5, -1.0, 0.0, -0.1, -2.0, -3.0, -0.5, 0.01, 1.0, 3.0];
        assert_eq!(pack_bits(&v), [129, 192]);
        assert_eq!(shift(&[129, 192, 0, 255]), [1, 64, -128, 127]);
    }

    #[test]
    fn levels_follow_sentence_transformers() {
        // A flat dimension (step 0) takes step 1; values outside the range clip. The maximum itself lands on 254
        // where 1 / (1 / 255) rounds below 255 in float32, as it does in numpy (the expected values are numpy's).
        let l = levels(&[0.0, 0.5, 1.0, 2.0, -1.0], &[0.0, 0.0, 0.0, 0.0, 0.0], &[1.0, 1.0, 1.0, 1.0, 0.0]);
        assert_eq!(l, [0, 127, 254, 255, 0]);
        let (out, ranges) = encode(vec![vec![0.0, 1.0], vec![1.0, -1.0]], EncodingFormat::Int8, None).unwrap();
        assert_eq!(ranges, Some(QuantizationRanges(vec![vec![0.0, -1.0], vec![1.0, 1.0]])));
        assert_eq!(out, [Embedding::Int8(vec![-128, 126]), Embedding::Int8(vec![126, -128])]);
    }

    #[test]
    fn bad_ranges_and_a_lone_vector_are_refused() {
        let msg = |r: Result<_, ApiError>| r.err().unwrap().to_string();
        assert!(msg(encode(vec![vec![1.0]], EncodingFormat::Uint8, None)).contains("two inputs or more"));
        let r = Some(QuantizationRanges(vec![vec![0.0]]));
        assert!(msg(encode(vec![vec![1.0]], EncodingFormat::Uint8, r)).contains("two arrays"));
        let r = Some(QuantizationRanges(vec![vec![0.0, 0.0], vec![1.0, 1.0]]));
        assert!(msg(encode(vec![vec![1.0]], EncodingFormat::Uint8, r)).contains("1 dimensions"));
        let r = Some(QuantizationRanges(vec![vec![2.0], vec![1.0]]));
        assert!(msg(encode(vec![vec![1.0]], EncodingFormat::Uint8, r)).contains("dimension 0"));
        let r = Some(QuantizationRanges(vec![vec![0.0], vec![2.0]]));
        assert_eq!(encode(vec![vec![1.0]], EncodingFormat::Uint8, r).unwrap().0, [Embedding::Uint8(vec![127])]);
    }
}
