//! The crash history on disk: `history.json` in the state directory, loaded into the policy's
//! [`CrashBook`] at start-up and written back whenever the policy asks (`Effect::SaveHistory`); and the weights
//! digest that keys it.
//!
//! A unit that keeps crashing a model is put in quarantine; the quarantine and the crashes that led to it are
//! written here, so a restarted bulkhead does not walk into the same crash again. A different runtime version (an
//! upgraded ONNX Runtime) or different weights give a unit a fresh record. The records themselves and the bucket
//! that counts crashes are plain data in the policy (`supervisor::policy::record`); this module is their edge to
//! the file system (a corrupt file is set aside, a failed write logged, neither fatal).

use std::io::{Read, Seek, SeekFrom};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::supervisor::policy::record::{fmt_utc, CrashBook, CrashEntry, HistoryKey, NewCrash, UnitRecord};

/// The file name inside the state directory.
pub const HISTORY_FILE: &str = "history.json";

/// Seconds since the Unix epoch (the Unix clock the actor hands the policy with every event).
pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The crash history of every model and unit: the policy's [`CrashBook`], backed by `history.json` (or in memory
/// only). It reads as its book ([`Deref`]).
#[derive(Debug, Default)]
pub struct History {
    path: Option<PathBuf>,
    book: CrashBook,
}

#[derive(Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    records: Vec<UnitRecord>,
}

impl Deref for History {
    type Target = CrashBook;
    fn deref(&self) -> &CrashBook {
        &self.book
    }
}

impl DerefMut for History {
    fn deref_mut(&mut self) -> &mut CrashBook {
        &mut self.book
    }
}

impl History {
    /// A history that is not persisted.
    pub fn in_memory() -> History {
        History::default()
    }

    /// Loads `dir/history.json` (a missing file is an empty history; a corrupt one is logged and set aside as
    /// `history.json.corrupt`, never fatal).
    pub fn load(dir: &Path) -> History {
        let path = dir.join(HISTORY_FILE);
        let book = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<FileFormat>(&bytes) {
                Ok(f) => CrashBook::from_records(f.records),
                Err(e) => {
                    tracing::warn!(
                        "crash history {} is unreadable ({e}); starting a fresh one (old file kept as .corrupt)",
                        path.display()
                    );
                    let _ = std::fs::rename(&path, path.with_extension("json.corrupt"));
                    CrashBook::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CrashBook::default(),
            Err(e) => {
                tracing::warn!("cannot read the crash history {}: {e}; starting a fresh one", path.display());
                CrashBook::default()
            }
        };
        History { path: Some(path), book }
    }

    /// Deletes `dir/history.json`. Returns whether there was one.
    pub fn clear(dir: &Path) -> std::io::Result<bool> {
        match std::fs::remove_file(dir.join(HISTORY_FILE)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The path of the file (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The file and the book apart: the policy core owns the book, the actor writes it to the file.
    pub fn into_parts(self) -> (Option<PathBuf>, CrashBook) {
        (self.path, self.book)
    }

    /// Writes the file (atomically: temp file + rename). Failures are logged, never fatal.
    pub fn save(&self) {
        if let Some(path) = &self.path {
            save_book(path, &self.book);
        }
    }
}

/// Writes `book` to `path` (atomically: temp file + rename). Failures are logged, never fatal.
pub fn save_book(path: &Path, book: &CrashBook) {
    let body = FileFormat { version: 1, records: book.records().cloned().collect() };
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(&body).unwrap_or_default())?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::warn!(
            "cannot write the crash history {}: {e} (quarantines will not survive a restart)",
            path.display()
        );
    }
}

/// A cheap, stable digest of a model's weights: SHA-256 over the file size and its first and last MiB (hashing a
/// multi-GiB file at every start would be slow; a changed file changes its size or its ends in practice).
pub fn model_digest(weights: &Path) -> String {
    let mut h = Sha256::new();
    h.update(weights.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default().as_bytes());
    let mut sample = |f: &mut std::fs::File, len: u64| -> std::io::Result<()> {
        const CHUNK: u64 = 1 << 20;
        h.update(len.to_le_bytes());
        let mut buf = vec![0u8; CHUNK.min(len) as usize];
        f.read_exact(&mut buf)?;
        h.update(&buf);
        if len > CHUNK {
            f.seek(SeekFrom::Start(len - CHUNK.min(len - CHUNK)))?;
            let mut tail = vec![0u8; CHUNK.min(len - CHUNK) as usize];
            f.read_exact(&mut tail)?;
            h.update(&tail);
        }
        Ok(())
    };
    let ok = std::fs::File::open(weights).and_then(|mut f| {
        let len = f.metadata()?.len();
        sample(&mut f, len)
    });
    if ok.is_err() {
        // Unreadable weights fail at load with a clear error; the digest then only needs to be stable.
        return format!("path:{}", weights.display());
    }
    h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn history_persists_and_survives_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::load(dir.path());
        let key = |runtime: &str| HistoryKey { digest: "d1".into(), unit: "ort:cpu".into(), runtime: runtime.into() };
        let crash = NewCrash { exit: "signal SIGSEGV", cause: "crash", counted: true };
        let now = unix_now();
        assert_eq!(h.record_crash(&key("onnxruntime 1.31.1"), "m", crash, now), 0);
        let outside = NewCrash { exit: "signal SIGKILL", cause: "external", counted: false };
        assert_eq!(h.record_crash(&key("onnxruntime 1.31.1"), "m", outside, now), 1);
        assert_eq!(h.get(&key("onnxruntime 1.31.1")).unwrap().bucket(now, Duration::from_secs(300)), 1.0);
        h.entry(&key("onnxruntime 1.31.1"), "m").quarantined_until = Some(now + 60.0);
        h.save();
        let back = History::load(dir.path());
        let rec = back.get(&key("onnxruntime 1.31.1")).unwrap();
        assert_eq!(rec.total_crashes, 2);
        assert_eq!(rec.crashes[1].cause, "external");
        assert!(rec.is_quarantined(unix_now()));
        assert!(back.get(&key("onnxruntime 1.32.0")).is_none(), "another runtime is another record");
        std::fs::write(dir.path().join(HISTORY_FILE), b"{not json").unwrap();
        assert_eq!(History::load(dir.path()).records().count(), 0);
        assert!(dir.path().join("history.json.corrupt").exists());
        assert!(History::clear(dir.path()).is_ok());
    }

    #[test]
    fn digest_is_stable_and_content_sensitive() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("model.onnx");
        std::fs::write(&a, vec![1u8; 3 << 20]).unwrap();
        let d1 = model_digest(&a);
        assert_eq!(d1, model_digest(&a));
        let mut bytes = vec![1u8; 3 << 20];
        *bytes.last_mut().unwrap() = 2;
        std::fs::write(&a, bytes).unwrap();
        assert_ne!(d1, model_digest(&a));
        assert!(model_digest(&dir.path().join("missing")).starts_with("path:"));
    }
}
