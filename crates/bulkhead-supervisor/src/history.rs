//! Crash history and quarantines, persisted per (model digest, unit, runtime version).
//!
//! A unit that keeps crashing a model is put in quarantine; the quarantine and the crashes that led to it are
//! written to `history.json` in the state directory, so a restarted bulkhead does not walk into the same crash
//! again. A different runtime version (an upgraded ONNX Runtime) or different weights give a unit a fresh record.
//!
//! Crash counting follows Chrome's GPU process: a leaky bucket that holds `quarantine_crashes` (3) and forgives
//! one crash per `forgive_every` (5 minutes). Every unplanned death is recorded, but only those that are the unit's
//! fault fill the bucket ([`CrashEntry::counted`]): a kill from outside, an OOM kill or a crash a poison request
//! caused is history, not evidence against the unit.
//!
//! Nothing here reads the clock: times are passed in, so the policy that uses this record is tested without waiting.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The file name inside the state directory.
pub const HISTORY_FILE: &str = "history.json";

/// Crashes kept per record (older ones no longer matter to the bucket).
const MAX_CRASHES_KEPT: usize = 64;

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// A Unix time as `YYYY-MM-DD HH:MM:SS UTC` (days to civil date after Howard Hinnant's `civil_from_days`).
pub fn fmt_utc(unix: f64) -> String {
    let secs = unix.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// One unplanned worker death.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrashEntry {
    /// Unix time, seconds.
    pub at: f64,
    /// `signal SIGSEGV`, `exit code 70`, `signal SIGKILL (killed by the supervisor: watchdog ...)`.
    pub exit: String,
    /// Why it died (`crash`, `hang`, `external`, `oom`...).
    #[serde(default)]
    pub cause: String,
    /// Whether it fills the crash bucket (the unit's fault).
    #[serde(default = "yes")]
    pub counted: bool,
    /// Its number in the record (the record's `total_crashes` when it was added), to refer to it later.
    #[serde(default)]
    pub seq: u64,
}

fn yes() -> bool {
    true
}

/// Who a record belongs to: the weights (digest), the unit, and the runtime version. A different runtime or
/// different weights are a fresh record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HistoryKey {
    /// Model digest (see [`model_digest`]).
    pub digest: String,
    /// The unit, e.g. `ort:cpu`.
    pub unit: String,
    /// Runtime and version, e.g. `onnxruntime 1.31.1`.
    pub runtime: String,
}

impl HistoryKey {
    /// The key of a record.
    pub fn of(record: &UnitRecord) -> HistoryKey {
        HistoryKey { digest: record.digest.clone(), unit: record.unit.clone(), runtime: record.runtime.clone() }
    }
}

/// The history of one (model, unit, runtime).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UnitRecord {
    /// Model name when recorded (for people reading the file).
    pub model: String,
    /// Model digest (see [`model_digest`]).
    pub digest: String,
    /// The unit.
    pub unit: String,
    /// Runtime and version, e.g. `onnxruntime 1.31.1`.
    pub runtime: String,
    /// Recent crashes, oldest first.
    pub crashes: Vec<CrashEntry>,
    /// Crashes ever recorded.
    pub total_crashes: u64,
    /// Quarantined until this Unix time, if quarantined.
    pub quarantined_until: Option<f64>,
    /// How many times the unit was quarantined (drives the re-probe backoff).
    pub quarantines: u32,
}

impl UnitRecord {
    /// The leaky-bucket crash count at `now`: each crash adds one; one whole crash is forgiven per `every` elapsed
    /// since the bucket last started filling or forgave.
    pub fn bucket(&self, now: f64, every: Duration) -> f64 {
        let every = every.as_secs_f64().max(1e-3);
        let mut level = 0u64;
        let mut mark = 0.0f64;
        let decay = |level: &mut u64, mark: &mut f64, t: f64| {
            if *level > 0 {
                let n = ((t - *mark) / every).floor().max(0.0) as u64;
                let forgiven = n.min(*level);
                *level -= forgiven;
                *mark += n as f64 * every;
            }
        };
        for c in self.crashes.iter().filter(|c| c.counted) {
            decay(&mut level, &mut mark, c.at);
            if level == 0 {
                mark = c.at;
            }
            level += 1;
        }
        decay(&mut level, &mut mark, now);
        level as f64
    }

    /// Whether the record says "quarantined" at `now`.
    pub fn is_quarantined(&self, now: f64) -> bool {
        self.quarantined_until.is_some_and(|t| t > now)
    }

    /// Takes the crash number `seq` out of the bucket (it stays in the history): its cause turned out not to be the
    /// unit (a poison request).
    pub fn forgive(&mut self, seq: u64) {
        if let Some(c) = self.crashes.iter_mut().find(|c| c.seq == seq) {
            c.counted = false;
        }
    }
}

/// A death to record: its exit summary, its cause and whether it counts against the unit.
#[derive(Debug, Clone, Copy)]
pub struct NewCrash<'a> {
    /// `signal SIGSEGV`, `exit code 70`...
    pub exit: &'a str,
    /// `crash`, `hang`, `external`, `oom`...
    pub cause: &'a str,
    /// Whether it fills the bucket.
    pub counted: bool,
}

/// The crash history of every model and unit, backed by `history.json` (or in memory only).
#[derive(Debug, Default)]
pub struct History {
    path: Option<PathBuf>,
    records: BTreeMap<HistoryKey, UnitRecord>,
}

#[derive(Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    records: Vec<UnitRecord>,
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
        let mut h = History { path: Some(path.clone()), records: BTreeMap::new() };
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<FileFormat>(&bytes) {
                Ok(f) => {
                    for r in f.records {
                        h.records.insert(HistoryKey::of(&r), r);
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        "crash history {} is unreadable ({e}); starting a fresh one (old file kept as .corrupt)",
                        path.display()
                    );
                    let _ = std::fs::rename(&path, path.with_extension("json.corrupt"));
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot read the crash history {}: {e}; starting a fresh one", path.display()),
        }
        h
    }

    /// Deletes `dir/history.json`. Returns whether there was one.
    pub fn clear(dir: &Path) -> std::io::Result<bool> {
        match std::fs::remove_file(dir.join(HISTORY_FILE)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every record.
    pub fn records(&self) -> impl Iterator<Item = &UnitRecord> {
        self.records.values()
    }

    /// The record of `key`, if any.
    pub fn get(&self, key: &HistoryKey) -> Option<&UnitRecord> {
        self.records.get(key)
    }

    /// The record of `key`, to change it, if any.
    pub fn get_mut(&mut self, key: &HistoryKey) -> Option<&mut UnitRecord> {
        self.records.get_mut(key)
    }

    /// The record of `key`, created (for `model`) when missing.
    pub fn entry(&mut self, key: &HistoryKey, model: &str) -> &mut UnitRecord {
        self.records.entry(key.clone()).or_insert_with(|| UnitRecord {
            model: model.to_string(),
            digest: key.digest.clone(),
            unit: key.unit.clone(),
            runtime: key.runtime.clone(),
            ..UnitRecord::default()
        })
    }

    /// Records an unplanned death at Unix time `at`; returns its number in the record (see [`UnitRecord::forgive`]).
    /// Only a `counted` death fills the bucket.
    pub fn record_crash(&mut self, key: &HistoryKey, model: &str, death: NewCrash<'_>, at: f64) -> u64 {
        let rec = self.entry(key, model);
        let seq = rec.total_crashes;
        rec.crashes.push(CrashEntry {
            at,
            exit: death.exit.to_string(),
            cause: death.cause.to_string(),
            counted: death.counted,
            seq,
        });
        rec.total_crashes += 1;
        let excess = rec.crashes.len().saturating_sub(MAX_CRASHES_KEPT);
        rec.crashes.drain(..excess);
        seq
    }

    /// The path of the file (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Writes the file (atomically: temp file + rename). Failures are logged, never fatal.
    pub fn save(&self) {
        let Some(path) = &self.path else { return };
        let body = FileFormat { version: 1, records: self.records.values().cloned().collect() };
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
    use super::*;

    #[test]
    fn bucket_forgives_one_crash_per_period() {
        let every = Duration::from_secs(300);
        let mut r = UnitRecord::default();
        for (seq, at) in [0.0, 10.0, 20.0].into_iter().enumerate() {
            r.crashes.push(entry(at, seq as u64));
        }
        assert_eq!(r.bucket(20.0, every), 3.0);
        assert_eq!(r.bucket(301.0, every), 2.0);
        assert_eq!(r.bucket(2000.0, every), 0.0);
        // Three crashes spread over 15 minutes never fill the bucket.
        let mut slow = UnitRecord::default();
        for (seq, at) in [0.0, 450.0, 900.0].into_iter().enumerate() {
            slow.crashes.push(entry(at, seq as u64));
        }
        assert!(slow.bucket(900.0, every) < 2.0);
        // A forgiven crash stays in the history but leaves the bucket.
        r.forgive(1);
        assert_eq!(r.bucket(20.0, every), 2.0);
        assert_eq!(r.crashes.len(), 3);
    }

    fn entry(at: f64, seq: u64) -> CrashEntry {
        CrashEntry { at, exit: "signal SIGSEGV".into(), cause: "crash".into(), counted: true, seq }
    }

    #[test]
    fn unix_times_are_formatted_as_utc() {
        assert_eq!(fmt_utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_utc(951_782_400.0), "2000-02-29 00:00:00 UTC");
        assert_eq!(fmt_utc(1_800_000_000.0), "2027-01-15 08:00:00 UTC");
    }

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
