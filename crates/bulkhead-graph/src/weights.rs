//! Reading tensors from memory-mapped safetensors files (one file or the shards of `model.safetensors.index.json`):
//! name resolution (with or without the checkpoint's prefix: `bert.`, `roberta.`, `model.`...), shape and dtype
//! checks, and where each tensor's bytes lie in its file (for ONNX external data).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, TensorInfo};
use safetensors::SafeTensors;

use crate::GraphError;

/// One mapped file.
struct Shard {
    path: PathBuf,
    mmap: Mmap,
    /// Byte offset of the data section in the file (8 + header length).
    data_start: usize,
}

/// The mapped safetensors files of a model with their parsed headers.
pub(crate) struct Weights {
    shards: Vec<Shard>,
    /// Every tensor: its shard and header entry.
    tensors: HashMap<String, (usize, TensorInfo)>,
    /// Prefix of the model's tensor names (`""`, `"bert."`, `"model."`...).
    prefix: String,
    /// What to name in "missing tensor" errors: the single file or the shard index.
    origin: PathBuf,
}

/// One tensor of the file.
pub(crate) struct TensorSlice<'a> {
    /// Its name in the file.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// The raw little-endian bytes, borrowed from the mapping.
    pub bytes: &'a [u8],
    /// Which shard holds it.
    pub shard: usize,
    /// Offset of `bytes` from the start of its file.
    pub file_offset: u64,
}

impl Weights {
    /// Maps and validates the files; a corrupt file is an error naming it. `anchors` are prefix-less names of a
    /// tensor every checkpoint of the architecture has (the first one found fixes the prefix); `index` is
    /// `model.safetensors.index.json` of a sharded checkpoint.
    pub fn open(paths: &[PathBuf], index: Option<&Path>, anchors: &[&str]) -> Result<Weights, GraphError> {
        let origin = index.map(Path::to_path_buf).or_else(|| paths.first().cloned()).unwrap_or_default();
        let mut shards = vec![];
        let mut tensors = HashMap::new();
        for path in paths {
            let bad = |reason: String| GraphError::Weights { path: path.to_path_buf(), reason };
            let file = File::open(path).map_err(|e| GraphError::Io { path: path.to_path_buf(), source: e })?;
            // SAFETY: the mapping is read-only; a file truncated underneath us would be a bug in the user's setup
            // that no reader can defend against (safetensors and candle map the same way).
            let mmap =
                unsafe { Mmap::map(&file) }.map_err(|e| GraphError::Io { path: path.to_path_buf(), source: e })?;
            let (n, metadata) = SafeTensors::read_metadata(&mmap)
                .map_err(|e| bad(format!("not a valid safetensors file ({e}); re-download it")))?;
            let i = shards.len();
            for (name, info) in metadata.tensors() {
                tensors.insert(name, (i, info.clone()));
            }
            shards.push(Shard { path: path.to_path_buf(), mmap, data_start: 8 + n });
        }
        // The first anchor that exists fixes the prefix; the shortest prefix wins when several tensors end alike.
        let prefix = anchors
            .iter()
            .find_map(|a| tensors.keys().filter_map(|k| k.strip_suffix(a)).min_by_key(|p| p.len()).map(str::to_string))
            .ok_or_else(|| GraphError::Weights {
                path: origin.clone(),
                reason: format!(
                    "no `{}` tensor (with or without a prefix such as `model.`): not a checkpoint of this \
                     architecture",
                    anchors.first().copied().unwrap_or_default()
                ),
            })?;
        Ok(Weights { shards, tensors, prefix, origin })
    }

    /// The name of the prefix-less `name` in the file.
    pub fn full_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Whether the prefix-less `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(&format!("{}{name}", self.prefix))
    }

    /// Whether the checkpoint has the tensor called exactly `name` (no prefix added).
    pub fn contains_exact(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Looks a tensor up by its prefix-less name (`encoder.layer.0.attention.self.query.weight`), accepting the old
    /// `gamma`/`beta` spellings of LayerNorm parameters, and checks its shape.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<TensorSlice<'_>, GraphError> {
        let mut candidates = vec![format!("{}{name}", self.prefix)];
        if let Some(base) = name.strip_suffix("LayerNorm.weight") {
            candidates.push(format!("{}{base}LayerNorm.gamma", self.prefix));
        } else if let Some(base) = name.strip_suffix("LayerNorm.bias") {
            candidates.push(format!("{}{base}LayerNorm.beta", self.prefix));
        }
        self.lookup(&candidates, shape)
    }

    /// Looks a tensor up by its full name in the file, ignoring the prefix (the heads of `*ForSequenceClassification`
    /// checkpoints sit beside the prefixed encoder: `classifier.weight` next to `bert.encoder...`), and checks its
    /// shape.
    pub fn get_exact(&self, name: &str, shape: &[usize]) -> Result<TensorSlice<'_>, GraphError> {
        self.lookup(&[name.to_string()], shape)
    }

    fn lookup(&self, candidates: &[String], shape: &[usize]) -> Result<TensorSlice<'_>, GraphError> {
        let (full, (shard, info)) = candidates
            .iter()
            .find_map(|c| self.tensors.get(c).map(|i| (c.clone(), i)))
            .ok_or_else(|| GraphError::Weights {
                path: self.origin.clone(),
                reason: format!("tensor `{}` is missing", candidates[0]),
            })?;
        let s = &self.shards[*shard];
        let bad = |reason: String| GraphError::Weights { path: s.path.clone(), reason };
        if info.shape != shape {
            return Err(bad(format!("tensor `{full}` has shape {:?}, config.json implies {shape:?}", info.shape)));
        }
        if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(bad(format!(
                "tensor `{full}` has dtype {:?}; only F32, F16 and BF16 are supported",
                info.dtype
            )));
        }
        let (start, end) = info.data_offsets;
        let from = s.data_start + start;
        let to = s.data_start + end;
        let bytes = s.mmap.get(from..to).ok_or_else(|| bad(format!("tensor `{full}` lies outside the file")))?;
        Ok(TensorSlice {
            name: full,
            dtype: info.dtype,
            shape: info.shape.clone(),
            bytes,
            shard: *shard,
            file_offset: from as u64,
        })
    }
}

impl TensorSlice<'_> {
    /// The tensor as little-endian f32 bytes: `None` when it already is f32 (use `bytes`), else converted.
    pub fn converted_f32(&self) -> Option<Vec<u8>> {
        let conv = |f: fn(u16) -> f32| {
            let mut out = Vec::with_capacity(self.bytes.len() * 2);
            for c in self.bytes.chunks_exact(2) {
                out.extend_from_slice(&f(u16::from_le_bytes([c[0], c[1]])).to_le_bytes());
            }
            out
        };
        match self.dtype {
            Dtype::F16 => Some(conv(f16_to_f32)),
            Dtype::BF16 => Some(conv(|b| f32::from_bits(u32::from(b) << 16))),
            _ => None,
        }
    }
}

/// IEEE half to single precision (exact).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalise.
            let mut e: i32 = -14;
            let mut m = m;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (((e + 127) as u32) << 23) | ((m & 0x3ff) << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::f16_to_f32;

    #[test]
    fn converts_half_precision() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
    }
}
