//! The numeric precision of a model's weights, one enum for every place that reads or reports it: the engines'
//! session reports, the doctor's file checks, the quantization manifest and the `x-bulkhead-precision` header.
//!
//! A weights file mixes element types (int8 weights with float32 scales and norms, fp16 weights with an fp32
//! embedding table), so the precision of a file is decided from element counts by one rule,
//! [`Precision::of_weights`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// The numeric precision of a model's weights. Serialised in lowercase (`fp32`, `bf16`...), as reports, headers and
/// manifests write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit float (64-bit floats count here too: they are at least as exact).
    Fp32,
    /// IEEE 754 half precision (10-bit mantissa).
    Fp16,
    /// bfloat16 (float32's exponent, 7-bit mantissa).
    Bf16,
    /// 8-bit integers (quantized weights).
    Int8,
    /// Nothing to tell from (no weights read, or only element types of no other kind).
    Unknown,
}

impl Precision {
    /// Every precision, in the order of the enum.
    pub const ALL: [Precision; 5] =
        [Precision::Fp32, Precision::Fp16, Precision::Bf16, Precision::Int8, Precision::Unknown];

    /// The name as JSON and headers write it: `fp32`, `fp16`, `bf16`, `int8` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
            Precision::Unknown => "unknown",
        }
    }

    /// Whether outputs are expected to differ from an fp32 model's: quantized (int8) or half-precision (fp16, bf16)
    /// weights.
    pub fn is_reduced(self) -> bool {
        matches!(self, Precision::Fp16 | Precision::Bf16 | Precision::Int8)
    }

    /// The precision of one safetensors element type, by the name its header uses (`F32`, `F16`, `BF16`, `I8`...):
    /// `U8` and `I8` are int8, `F64` counts as fp32, anything else (booleans, wider integers, 8-bit floats) is
    /// [`Precision::Unknown`].
    pub fn of_safetensors_dtype(dtype: &str) -> Precision {
        match dtype {
            "F32" | "F64" => Precision::Fp32,
            "F16" => Precision::Fp16,
            "BF16" => Precision::Bf16,
            "I8" | "U8" => Precision::Int8,
            _ => Precision::Unknown,
        }
    }

    /// The precision of a set of weights from the number of elements of each precision: `int8` when at least a
    /// tenth of the elements are 8-bit integers (quantized layers keep float scales, biases and norms, and often a
    /// float embedding table), else `fp16` or `bf16` when half-precision elements are at least half of them (the
    /// more common of the two), else `fp32`; `unknown` when no element has a known precision.
    pub fn of_weights(elements: impl IntoIterator<Item = (Precision, u64)>) -> Precision {
        let mut count = [0u64; 5];
        for (p, n) in elements {
            count[p as usize] += n;
        }
        let of = |p: Precision| count[p as usize];
        let total: u64 = count.iter().sum::<u64>() - of(Precision::Unknown);
        if total == 0 {
            Precision::Unknown
        } else if of(Precision::Int8) * 10 >= total {
            Precision::Int8
        } else if (of(Precision::Fp16) + of(Precision::Bf16)) * 2 >= total {
            if of(Precision::Bf16) > of(Precision::Fp16) {
                Precision::Bf16
            } else {
                Precision::Fp16
            }
        } else {
            Precision::Fp32
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_serialised_names() {
        for p in Precision::ALL {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
            assert_eq!(serde_json::from_value::<Precision>(p.as_str().into()).unwrap(), p);
            assert_eq!(p.to_string(), p.as_str());
        }
    }

    #[test]
    fn a_file_is_what_most_of_its_weights_are() {
        use Precision::*;
        let of = |v: &[(Precision, u64)]| Precision::of_weights(v.iter().copied());
        assert_eq!(of(&[]), Unknown);
        assert_eq!(of(&[(Unknown, 5)]), Unknown);
        assert_eq!(of(&[(Fp32, 100)]), Fp32);
        // bf16 weights with a few fp32 norms: bf16, not fp16.
        assert_eq!(of(&[(Bf16, 90), (Fp32, 10)]), Bf16);
        assert_eq!(of(&[(Fp16, 90), (Fp32, 10)]), Fp16);
        assert_eq!(of(&[(Fp16, 30), (Bf16, 40), (Fp32, 30)]), Bf16);
        assert_eq!(of(&[(Fp16, 40), (Fp32, 60)]), Fp32);
        // int8 layers beside a float embedding table.
        assert_eq!(of(&[(Int8, 10), (Fp32, 90)]), Int8);
        assert_eq!(of(&[(Int8, 9), (Fp32, 91)]), Fp32);
        // Elements of unknown precision do not dilute the others.
        assert_eq!(of(&[(Bf16, 10), (Unknown, 1000)]), Bf16);
        assert!(Bf16.is_reduced() && Fp16.is_reduced() && Int8.is_reduced() && !Fp32.is_reduced());
        assert!(!Unknown.is_reduced());
    }

    #[test]
    fn safetensors_dtypes() {
        let names = ["F64", "F32", "F16", "BF16", "I8", "U8", "I64", "BOOL", "F8_E4M3"];
        let got: Vec<&str> = names.iter().map(|n| Precision::of_safetensors_dtype(n).as_str()).collect();
        assert_eq!(got, ["fp32", "fp32", "fp16", "bf16", "int8", "int8", "unknown", "unknown", "unknown"]);
    }
}
