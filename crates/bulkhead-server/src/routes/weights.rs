//! What the Ollama listing routes say about a model's weights files: their size, a digest, when they were written
//! and, for safetensors, the parameter count from the header. Read on the blocking pool; a file that cannot be
//! read gives what could be read (the listing never fails because of it).

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use bulkhead_core::ModelFiles;
use sha2::{Digest, Sha256};

/// Facts about the weights a model is served from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WeightsFacts {
    /// `safetensors` or `onnx`.
    pub format: &'static str,
    /// Bytes of the weights files.
    pub size: u64,
    /// SHA-256 (hex) of each file's size and first and last MiB: changes when the weights do, costs 2 MiB a file.
    pub digest: String,
    /// The newest modification time of the files (RFC 3339, UTC).
    pub modified_at: String,
    /// Parameters (elements of every tensor) for safetensors weights.
    pub parameters: Option<u64>,
}

/// The weights files: the safetensors shards or file when there are any (the weights as published), else the ONNX
/// graph.
fn weights_files(files: &ModelFiles) -> (&'static str, Vec<PathBuf>) {
    if !files.safetensors_shards.is_empty() {
        return ("safetensors", files.safetensors_shards.clone());
    }
    if let Some(s) = &files.safetensors {
        return ("safetensors", vec![s.clone()]);
    }
    ("onnx", files.onnx.iter().cloned().collect())
}

/// Reads the facts of `files` (blocking: call it on the blocking pool).
pub fn facts(files: &ModelFiles) -> WeightsFacts {
    let (format, paths) = weights_files(files);
    let mut hasher = Sha256::new();
    let mut size = 0;
    let mut newest = UNIX_EPOCH;
    let mut parameters = Some(0u64);
    for path in &paths {
        let Ok(mut f) = std::fs::File::open(path) else { continue };
        let meta = f.metadata().ok();
        let len = meta.as_ref().map_or(0, |m| m.len());
        size += len;
        newest = newest.max(meta.and_then(|m| m.modified().ok()).unwrap_or(UNIX_EPOCH));
        hasher.update(len.to_le_bytes());
        hash_ends(&mut f, len, &mut hasher);
        parameters = match (parameters, format) {
            (Some(n), "safetensors") => safetensors_parameters(&mut f).map(|p| n + p),
            _ => None,
        };
    }
    let digest = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let parameters = parameters.filter(|&n| n > 0);
    WeightsFacts { format, size, digest, modified_at: rfc3339(newest), parameters }
}

fn hash_ends(f: &mut std::fs::File, len: u64, hasher: &mut Sha256) {
    const MIB: u64 = 1 << 20;
    let mut buf = vec![0u8; MIB as usize];
    for start in [0, len.saturating_sub(MIB)] {
        if f.seek(SeekFrom::Start(start)).is_err() {
            return;
        }
        let n = f.read(&mut buf).unwrap_or(0);
        hasher.update(&buf[..n]);
    }
}

/// The element count of every tensor of a safetensors file, from its header (an 8-byte length, then JSON).
fn safetensors_parameters(f: &mut std::fs::File) -> Option<u64> {
    f.seek(SeekFrom::Start(0)).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let len = u64::from_le_bytes(len);
    // A header past 100 MB is no header this reader trusts.
    if len > 100 << 20 {
        return None;
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).ok()?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header).ok()?;
    let count = header
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .filter_map(|(_, t)| t.get("shape")?.as_array().map(|s| s.iter().filter_map(|d| d.as_u64()).product::<u64>()))
        .sum();
    Some(count)
}

/// A parameter count as Ollama writes it: `22.7M`, `1.5B`, `600K`.
pub fn human_count(n: u64) -> String {
    let (value, unit) = match n {
        n if n >= 1_000_000_000 => (n as f64 / 1e9, "B"),
        n if n >= 1_000_000 => (n as f64 / 1e6, "M"),
        n if n >= 1_000 => (n as f64 / 1e3, "K"),
        n => return n.to_string(),
    };
    if value.fract() == 0.0 {
        format!("{value:.0}{unit}")
    } else {
        format!("{value:.1}{unit}")
    }
}

/// `t` as RFC 3339 in UTC, to the second (`2026-12-07T19:30:54Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_796_671_854)), "2026-12-07T19:30:54Z");
    }

    #[test]
    fn counts_are_written_as_ollama_writes_them() {
        assert_eq!(human_count(22_713_216), "22.7M");
        assert_eq!(human_count(1_000_000_000), "1B");
        assert_eq!(human_count(600_000), "600K");
        assert_eq!(human_count(12), "12");
    }

    #[test]
    fn safetensors_headers_give_the_parameter_count() {
        let dir = tempfile::tempdir().unwrap();
        let header = br#"{"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, "b": {"dtype": "F32", "shape": [4], "data_offsets": [24, 40]}, "__metadata__": {"format": "pt"}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend(vec![0u8; 40]);
        let path = dir.path().join("model.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        let mut f = std::fs::File::open(&path).unwrap();
        assert_eq!(safetensors_parameters(&mut f), Some(10));
        std::fs::write(&path, b"not a safetensors file").unwrap();
        assert_eq!(safetensors_parameters(&mut std::fs::File::open(&path).unwrap()), None);
    }
}
