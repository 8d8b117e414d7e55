//! A minimal reader of the ONNX protobuf: IR version, opsets, operator types and initializer element types.
//!
//! ONNX Runtime does not report a model's weight precision, and the int8 models users run (weight-only
//! quantization, with `Cast`/`Mul` dequantisation) are invisible in the operator list. Reading the initializers'
//! element types answers it, and the same pass validates the file before ONNX Runtime sees it.

use std::collections::BTreeMap;

use bulkhead_core::Precision;

/// What the protobuf says about a model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OnnxInfo {
    /// `ir_version`.
    pub ir_version: u64,
    /// `(domain, version)` of each imported opset (`""` is the default ONNX domain).
    pub opsets: Vec<(String, u64)>,
    /// Node count per operator type (main graph only).
    pub op_types: BTreeMap<String, usize>,
    /// Number of initializer elements per ONNX element type (1 float, 3 int8, 10 float16, 16 bfloat16...).
    pub initializer_elements: BTreeMap<u64, u64>,
    /// `producer_name`.
    pub producer: String,
}

impl OnnxInfo {
    /// Weight precision of the initializers, by [`Precision::of_weights`]: int8 when at least a tenth of the
    /// elements are 8-bit integers, fp16 or bf16 when half-precision floats dominate, fp32 otherwise.
    pub fn precision(&self) -> Precision {
        Precision::of_weights(self.initializer_elements.iter().map(|(&t, &n)| (element_precision(t), n)))
    }
}

/// The precision of an ONNX `TensorProto.DataType` (1 float, 11 double, 10 float16, 16 bfloat16, 2 uint8, 3 int8;
/// the others, such as int64 shape constants, say nothing about the weights).
fn element_precision(data_type: u64) -> Precision {
    match data_type {
        1 | 11 => Precision::Fp32,
        10 => Precision::Fp16,
        16 => Precision::Bf16,
        2 | 3 => Precision::Int8,
        _ => Precision::Unknown,
    }
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or_else(|| format!("truncated at byte {}", self.pos))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("malformed varint at byte {}", self.pos))
    }

    fn next(&mut self) -> Option<Result<(u64, Field<'a>), String>> {
        if self.pos >= self.buf.len() {
            return None;
        }
        Some(self.field())
    }

    fn field(&mut self) -> Result<(u64, Field<'a>), String> {
        let key = self.varint()?;
        let (number, wire) = (key >> 3, key & 7);
        if number == 0 {
            return Err(format!("invalid field number 0 at byte {}", self.pos));
        }
        let take = |r: &mut Self, n: usize| -> Result<&'a [u8], String> {
            let end = r.pos.checked_add(n).filter(|&e| e <= r.buf.len()).ok_or_else(|| {
                format!(
                    "truncated: a field at byte {} needs {n} bytes, the file has {} left",
                    r.pos,
                    r.buf.len() - r.pos
                )
            })?;
            let s = &r.buf[r.pos..end];
            r.pos = end;
            Ok(s)
        };
        let value = match wire {
            0 => Field::Varint(self.varint()?),
            1 => {
                take(self, 8)?;
                Field::Other
            }
            2 => {
                let n = self.varint()? as usize;
                Field::Bytes(take(self, n)?)
            }
            5 => {
                take(self, 4)?;
                Field::Other
            }
            w => return Err(format!("unsupported wire type {w} at byte {}", self.pos)),
        };
        Ok((number, value))
    }
}

fn fields(buf: &[u8]) -> Reader<'_> {
    Reader { buf, pos: 0 }
}

/// Parses the parts of an ONNX `ModelProto` bulkhead reports. Errors describe where the file is broken.
pub fn read(bytes: &[u8]) -> Result<OnnxInfo, String> {
    let mut info = OnnxInfo::default();
    let mut graph = None;
    let mut r = fields(bytes);
    while let Some(f) = r.next() {
        match f? {
            (1, Field::Varint(v)) => info.ir_version = v,
            (2, Field::Bytes(b)) => info.producer = String::from_utf8_lossy(b).into_owned(),
            (7, Field::Bytes(b)) => graph = Some(b),
            (8, Field::Bytes(b)) => {
                let (mut domain, mut version) = (String::new(), 0);
                let mut o = fields(b);
                while let Some(f) = o.next() {
                    match f? {
                        (1, Field::Bytes(d)) => domain = String::from_utf8_lossy(d).into_owned(),
                        (2, Field::Varint(v)) => version = v,
                        _ => {}
                    }
                }
                info.opsets.push((domain, version));
            }
            _ => {}
        }
    }
    let graph = graph.ok_or("not an ONNX model: it has no graph")?;
    if info.ir_version == 0 {
        return Err("not an ONNX model: ir_version is missing".into());
    }
    let mut g = fields(graph);
    while let Some(f) = g.next() {
        match f? {
            (1, Field::Bytes(node)) => {
                let mut n = fields(node);
                while let Some(f) = n.next() {
                    if let (4, Field::Bytes(op)) = f? {
                        *info.op_types.entry(String::from_utf8_lossy(op).into_owned()).or_default() += 1;
                    }
                }
            }
            (5, Field::Bytes(tensor)) => {
                let (mut dtype, mut elements) = (0u64, 1u64);
                let mut t = fields(tensor);
                while let Some(f) = t.next() {
                    match f? {
                        (1, Field::Varint(d)) => elements = elements.saturating_mul(d),
                        (1, Field::Bytes(packed)) => {
                            let mut p = fields(packed);
                            while p.pos < packed.len() {
                                elements = elements.saturating_mul(p.varint()?);
                            }
                        }
                        (2, Field::Varint(d)) => dtype = d,
                        _ => {}
                    }
                }
                *info.initializer_elements.entry(dtype).or_default() += elements;
            }
            _ => {}
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn bytes_field(n: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(n << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }
    fn varint_field(n: u64, v: u64, out: &mut Vec<u8>) {
        varint(n << 3, out);
        varint(v, out);
    }

    fn model(dtype: u64, dims: &[u64]) -> Vec<u8> {
        let mut tensor = vec![];
        for &d in dims {
            varint_field(1, d, &mut tensor);
        }
        varint_field(2, dtype, &mut tensor);
        let mut node = vec![];
        bytes_field(4, b"MatMul", &mut node);
        let mut graph = vec![];
        bytes_field(1, &node, &mut graph);
        bytes_field(5, &tensor, &mut graph);
        let mut opset = vec![];
        varint_field(2, 17, &mut opset);
        let mut m = vec![];
        varint_field(1, 8, &mut m);
        bytes_field(7, &graph, &mut m);
        bytes_field(8, &opset, &mut m);
        m
    }

    #[test]
    fn reads_a_hand_made_model() {
        let info = read(&model(3, &[384, 384])).unwrap();
        assert_eq!(info.ir_version, 8);
        assert_eq!(info.opsets, vec![(String::new(), 17)]);
        assert_eq!(info.op_types.get("MatMul"), Some(&1));
        assert_eq!(info.initializer_elements.get(&3), Some(&(384 * 384)));
        assert_eq!(info.precision(), Precision::Int8);
        assert_eq!(read(&model(1, &[4])).unwrap().precision(), Precision::Fp32);
        assert_eq!(read(&model(10, &[4])).unwrap().precision(), Precision::Fp16);
        assert_eq!(read(&model(16, &[4])).unwrap().precision(), Precision::Bf16);
        // Only shape constants (int64): nothing to tell the weights' precision from.
        assert_eq!(read(&model(7, &[4])).unwrap().precision(), Precision::Unknown);
    }

    #[test]
    fn rejects_truncated_and_random_bytes() {
        let m = model(1, &[4]);
        assert!(read(&m[..m.len() - 3]).unwrap_err().contains("truncated"));
        let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        assert!(read(&noise).is_err());
        assert!(read(b"").unwrap_err().contains("no graph"));
    }
}
