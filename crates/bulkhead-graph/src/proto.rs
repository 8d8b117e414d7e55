//! A minimal protobuf writer for the few ONNX messages the builder emits (`ModelProto`, `GraphProto`,
//! `NodeProto`, `TensorProto`, `ValueInfoProto`, `AttributeProto`).
//!
//! Messages are built as a small tree of [`Msg`] values whose byte fields may borrow from the memory-mapped
//! safetensors file, then streamed to a writer: lengths are computed on the way down, so a 90 MB embedded model is
//! never assembled in memory.

use std::io::{self, Write};

/// One field of a message.
#[derive(Debug)]
enum Field<'a> {
    /// A varint-encoded integer (wire type 0).
    Varint(u32, u64),
    /// A 32-bit little-endian value (wire type 5).
    Fixed32(u32, u32),
    /// Length-delimited bytes (wire type 2).
    Bytes(u32, Bytes<'a>),
    /// An embedded message (wire type 2).
    Msg(u32, Msg<'a>),
}

/// Bytes that are either borrowed (from the safetensors mapping) or owned.
#[derive(Debug)]
pub enum Bytes<'a> {
    /// Borrowed bytes.
    Borrowed(&'a [u8]),
    /// Owned bytes.
    Owned(Vec<u8>),
}

impl Bytes<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Borrowed(b) => b,
            Bytes::Owned(v) => v,
        }
    }
}

/// A protobuf message under construction.
#[derive(Debug, Default)]
pub struct Msg<'a> {
    fields: Vec<Field<'a>>,
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn write_varint(w: &mut impl Write, mut v: u64) -> io::Result<()> {
    let mut buf = [0u8; 10];
    let mut i = 0;
    while v >= 0x80 {
        buf[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    buf[i] = v as u8;
    w.write_all(&buf[..=i])
}

fn key(field: u32, wire: u32) -> u64 {
    (u64::from(field) << 3) | u64::from(wire)
}

impl<'a> Msg<'a> {
    /// An empty message.
    pub fn new() -> Self {
        Msg { fields: Vec::new() }
    }

    /// Adds an integer field (int32, int64, enum, bool); negative values use ten bytes as protobuf requires.
    pub fn int(mut self, field: u32, v: i64) -> Self {
        self.fields.push(Field::Varint(field, v as u64));
        self
    }

    /// Adds a float field.
    pub fn float(mut self, field: u32, v: f32) -> Self {
        self.fields.push(Field::Fixed32(field, v.to_bits()));
        self
    }

    /// Adds a string field.
    pub fn str(mut self, field: u32, s: &str) -> Self {
        self.fields.push(Field::Bytes(field, Bytes::Owned(s.as_bytes().to_vec())));
        self
    }

    /// Adds a bytes field.
    pub fn bytes(mut self, field: u32, b: Bytes<'a>) -> Self {
        self.fields.push(Field::Bytes(field, b));
        self
    }

    /// Adds a packed repeated int64 field.
    pub fn packed_ints(mut self, field: u32, vs: &[i64]) -> Self {
        let mut buf = Vec::with_capacity(vs.len() * 2);
        for &v in vs {
            // Writing into a Vec cannot fail.
            let _ = write_varint(&mut buf, v as u64);
        }
        self.fields.push(Field::Bytes(field, Bytes::Owned(buf)));
        self
    }

    /// Adds an embedded message.
    pub fn msg(mut self, field: u32, m: Msg<'a>) -> Self {
        self.fields.push(Field::Msg(field, m));
        self
    }

    /// Adds an embedded message in place.
    pub fn push_msg(&mut self, field: u32, m: Msg<'a>) {
        self.fields.push(Field::Msg(field, m));
    }

    /// The encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        self.fields
            .iter()
            .map(|f| match f {
                Field::Varint(n, v) => varint_len(key(*n, 0)) + varint_len(*v),
                Field::Fixed32(n, _) => varint_len(key(*n, 5)) + 4,
                Field::Bytes(n, b) => {
                    let l = b.as_slice().len();
                    varint_len(key(*n, 2)) + varint_len(l as u64) + l
                }
                Field::Msg(n, m) => {
                    let l = m.encoded_len();
                    varint_len(key(*n, 2)) + varint_len(l as u64) + l
                }
            })
            .sum()
    }

    /// Streams the encoded message.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        for f in &self.fields {
            match f {
                Field::Varint(n, v) => {
                    write_varint(w, key(*n, 0))?;
                    write_varint(w, *v)?;
                }
                Field::Fixed32(n, v) => {
                    write_varint(w, key(*n, 5))?;
                    w.write_all(&v.to_le_bytes())?;
                }
                Field::Bytes(n, b) => {
                    let b = b.as_slice();
                    write_varint(w, key(*n, 2))?;
                    write_varint(w, b.len() as u64)?;
                    w.write_all(b)?;
                }
                Field::Msg(n, m) => {
                    write_varint(w, key(*n, 2))?;
                    write_varint(w, m.encoded_len() as u64)?;
                    m.write_to(w)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(m: &Msg) -> Vec<u8> {
        let mut v = vec![];
        m.write_to(&mut v).unwrap();
        assert_eq!(v.len(), m.encoded_len());
        v
    }

    #[test]
    fn encodes_the_protobuf_wire_format() {
        // Examples from the protobuf encoding guide.
        assert_eq!(encode(&Msg::new().int(1, 150)), [0x08, 0x96, 0x01]);
        assert_eq!(encode(&Msg::new().str(2, "testing")), b"\x12\x07testing");
        assert_eq!(encode(&Msg::new().msg(3, Msg::new().int(1, 150))), [0x1a, 0x03, 0x08, 0x96, 0x01]);
        assert_eq!(
            encode(&Msg::new().packed_ints(4, &[3, 270, 86942])),
            [0x22, 0x06, 0x03, 0x8E, 0x02, 0x9E, 0xA7, 0x05]
        );
        assert_eq!(encode(&Msg::new().int(1, -1)).len(), 11);
        assert_eq!(encode(&Msg::new().float(2, 1.0)), [0x15, 0x00, 0x00, 0x80, 0x3f]);
    }
}
