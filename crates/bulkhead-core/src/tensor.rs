//! The data that crosses the engine boundary: a padded token batch in, a float tensor out (embedding models); named
//! tensors of any supported element type in and out (any other ONNX model, served through KServe v2 infer).

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
    /// Builds a batch from per-row ids (`Vec<i64>`s or [`Row`](crate::Row)s), padding each row with `pad_id` to the
    /// longest row (or `pad_to` when larger).
    pub fn from_rows<R: AsRef<[i64]>>(rows: &[R], pad_id: i64, pad_to: Option<usize>) -> TokenBatch {
        let longest = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
        let seq = pad_to.map_or(longest, |p| p.max(longest));
        let mut batch = TokenBatch {
            batch: rows.len(),
            seq,
            input_ids: Vec::with_capacity(rows.len() * seq),
            attention_mask: Vec::with_capacity(rows.len() * seq),
            token_type_ids: vec![0; rows.len() * seq],
        };
        for row in rows {
            let row = row.as_ref();
            batch.input_ids.extend_from_slice(row);
            batch.input_ids.extend(std::iter::repeat_n(pad_id, seq - row.len()));
            batch.attention_mask.extend(std::iter::repeat_n(1, row.len()));
            batch.attention_mask.extend(std::iter::repeat_n(0, seq - row.len()));
        }
        batch
    }

    /// Builds a batch from rows with their token type ids ([`Row::Pair`](crate::Row::Pair); a row without type ids
    /// gets zeros), padding both to the longest row (type id 0 on padding).
    pub fn from_typed_rows(rows: &[crate::Row], pad_id: i64) -> TokenBatch {
        let seq = rows.iter().map(crate::Row::len).max().unwrap_or(0);
        let mut batch = TokenBatch {
            batch: rows.len(),
            seq,
            input_ids: Vec::with_capacity(rows.len() * seq),
            attention_mask: Vec::with_capacity(rows.len() * seq),
            token_type_ids: Vec::with_capacity(rows.len() * seq),
        };
        for row in rows {
            let (ids, types) = (row.ids(), row.type_ids());
            let pad = seq - ids.len();
            batch.input_ids.extend_from_slice(ids);
            batch.input_ids.extend(std::iter::repeat_n(pad_id, pad));
            batch.attention_mask.extend(std::iter::repeat_n(1, ids.len()));
            batch.attention_mask.extend(std::iter::repeat_n(0, pad));
            batch.token_type_ids.extend(types.iter().copied().chain(std::iter::repeat(0)).take(ids.len()));
            batch.token_type_ids.extend(std::iter::repeat_n(0, pad));
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

/// Element types a named tensor can hold (the KServe v2 datatypes bulkhead supports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataType {
    /// 32-bit float (`FP32`).
    Fp32,
    /// 64-bit float (`FP64`).
    Fp64,
    /// 64-bit signed integer (`INT64`).
    Int64,
    /// 32-bit signed integer (`INT32`).
    Int32,
    /// 8-bit signed integer (`INT8`).
    Int8,
    /// 8-bit unsigned integer (`UINT8`).
    Uint8,
    /// Boolean (`BOOL`).
    Bool,
}

impl DataType {
    /// Every supported type.
    pub const ALL: [DataType; 7] = [
        DataType::Fp32,
        DataType::Fp64,
        DataType::Int64,
        DataType::Int32,
        DataType::Int8,
        DataType::Uint8,
        DataType::Bool,
    ];

    /// The KServe v2 / Open Inference Protocol name (`FP32`, `INT64`...).
    pub fn kserve_name(self) -> &'static str {
        match self {
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Int64 => "INT64",
            DataType::Int32 => "INT32",
            DataType::Int8 => "INT8",
            DataType::Uint8 => "UINT8",
            DataType::Bool => "BOOL",
        }
    }

    /// Parses a KServe v2 datatype name.
    pub fn from_kserve(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.kserve_name() == name)
    }
}

/// The elements of a named tensor, row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TensorData {
    /// `FP32`.
    F32(Vec<f32>),
    /// `FP64`.
    F64(Vec<f64>),
    /// `INT64`.
    I64(Vec<i64>),
    /// `INT32`.
    I32(Vec<i32>),
    /// `INT8`.
    I8(Vec<i8>),
    /// `UINT8`.
    U8(Vec<u8>),
    /// `BOOL`.
    Bool(Vec<bool>),
}

impl TensorData {
    /// The element type.
    pub fn datatype(&self) -> DataType {
        match self {
            TensorData::F32(_) => DataType::Fp32,
            TensorData::F64(_) => DataType::Fp64,
            TensorData::I64(_) => DataType::Int64,
            TensorData::I32(_) => DataType::Int32,
            TensorData::I8(_) => DataType::Int8,
            TensorData::U8(_) => DataType::Uint8,
            TensorData::Bool(_) => DataType::Bool,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::I8(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::Bool(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` zeros (false) of type `dtype`.
    pub fn zeros(dtype: DataType, n: usize) -> TensorData {
        match dtype {
            DataType::Fp32 => TensorData::F32(vec![0.0; n]),
            DataType::Fp64 => TensorData::F64(vec![0.0; n]),
            DataType::Int64 => TensorData::I64(vec![0; n]),
            DataType::Int32 => TensorData::I32(vec![0; n]),
            DataType::Int8 => TensorData::I8(vec![0; n]),
            DataType::Uint8 => TensorData::U8(vec![0; n]),
            DataType::Bool => TensorData::Bool(vec![false; n]),
        }
    }
}

/// A named tensor of any supported element type: what a non-embedding model takes and returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedTensor {
    /// The graph input or output name.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Elements, `shape.iter().product()` of them.
    pub data: TensorData,
}

impl NamedTensor {
    /// Creates a named tensor, checking that the data fits the shape.
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: TensorData) -> Result<NamedTensor, String> {
        let name = name.into();
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(format!("tensor `{name}` of shape {shape:?} needs {n} elements, got {}", data.len()));
        }
        Ok(NamedTensor { name, shape, data })
    }

    /// Rows (the first dimension; 1 for a scalar) and elements per row, for deadline estimates.
    pub fn rows_and_width(&self) -> (usize, usize) {
        let rows = self.shape.first().copied().unwrap_or(1).max(1);
        (rows, self.data.len() / rows)
    }
}

/// A graph input or output as the model declares it: name, element type and shape (`-1` for a dynamic dimension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// The name.
    pub name: String,
    /// The element type; `None` for a type bulkhead does not support (the model can still be described).
    pub datatype: Option<DataType>,
    /// The element type as the model names it (`float`, `int64`, `float16`...).
    pub type_name: String,
    /// Dimensions, `-1` where dynamic.
    pub shape: Vec<i64>,
}

impl TensorSpec {
    /// Checks a tensor sent for this input: element type, rank and every fixed dimension.
    pub fn check(&self, t: &NamedTensor) -> Result<(), String> {
        let got = t.data.datatype();
        if self.datatype != Some(got) {
            return Err(format!(
                "input `{}` must be {} ({}), got {}",
                self.name,
                self.datatype.map_or("an unsupported type", DataType::kserve_name),
                self.type_name,
                got.kserve_name()
            ));
        }
        if self.shape.len() != t.shape.len() {
            return Err(format!(
                "input `{}` must have {} dimensions {:?} (-1: any size), got shape {:?}",
                self.name,
                self.shape.len(),
                self.shape,
                t.shape
            ));
        }
        for (i, (&want, &got)) in self.shape.iter().zip(&t.shape).enumerate() {
            if want >= 0 && want as usize != got {
                return Err(format!(
                    "input `{}` dimension {i} must be {want} (shape {:?}, -1: any size), got shape {:?}",
                    self.name, self.shape, t.shape
                ));
            }
        }
        Ok(())
    }

    /// A tensor of zeros fitting this spec, dynamic dimensions set to 1 (warm-up and health probes).
    pub fn zeros(&self) -> Option<NamedTensor> {
        let shape: Vec<usize> = self.shape.iter().map(|&d| if d > 0 { d as usize } else { 1 }).collect();
        let n = shape.iter().product();
        Some(NamedTensor { name: self.name.clone(), shape, data: TensorData::zeros(self.datatype?, n) })
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
    fn named_tensors_are_checked_against_their_spec() {
        let spec = TensorSpec {
            name: "x".into(),
            datatype: Some(DataType::Fp32),
            type_name: "float".into(),
            shape: vec![-1, 3],
        };
        let ok = NamedTensor::new("x", vec![2, 3], TensorData::F32(vec![0.0; 6])).unwrap();
        assert!(spec.check(&ok).is_ok());
        assert_eq!(ok.rows_and_width(), (2, 3));
        let wide = NamedTensor::new("x", vec![2, 4], TensorData::F32(vec![0.0; 8])).unwrap();
        assert!(spec.check(&wide).unwrap_err().contains("dimension 1 must be 3"));
        let flat = NamedTensor::new("x", vec![6], TensorData::F32(vec![0.0; 6])).unwrap();
        assert!(spec.check(&flat).unwrap_err().contains("must have 2 dimensions"));
        let ints = NamedTensor::new("x", vec![2, 3], TensorData::I64(vec![0; 6])).unwrap();
        assert!(spec.check(&ints).unwrap_err().contains("must be FP32 (float), got INT64"));
        assert!(NamedTensor::new("x", vec![2, 3], TensorData::F32(vec![0.0; 5])).unwrap_err().contains("needs 6"));
        assert_eq!(spec.zeros().unwrap().shape, vec![1, 3]);
        for d in DataType::ALL {
            assert_eq!(DataType::from_kserve(d.kserve_name()), Some(d));
        }
        assert_eq!(DataType::from_kserve("FP16"), None);
    }

    #[test]
    fn tensor_checks_its_shape() {
        assert!(Tensor::new(vec![2, 3], vec![0.0; 6]).is_ok());
        assert!(Tensor::new(vec![2, 3], vec![0.0; 5]).unwrap_err().contains("needs 6"));
    }
}
