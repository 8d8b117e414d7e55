//! Crash records: what the policy knows about each (model digest, unit, runtime version), as plain data.
//!
//! Crash counting follows Chrome's GPU process: a leaky bucket that holds `quarantine_crashes` (3) and forgives
//! one crash per `forgive_every` (5 minutes). Every unplanned death is recorded, but only those that are the unit's
//! fault fill the bucket ([`CrashEntry::counted`]): a kill from outside, an OOM kill or a crash a poison request
//! caused is history, not evidence against the unit.
//!
//! Nothing here reads a clock or a file: times are passed in, and [`crate::history::History`] loads and writes
//! a [`CrashBook`] at the edge (`history.json`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Crashes kept per record (older ones no longer matter to the bucket).
const MAX_CRASHES_KEPT: usize = 64;

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
    /// Model digest (see [`model_digest`](crate::history::model_digest)).
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
    /// Model digest (see [`model_digest`](crate::history::model_digest)).
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

/// Every crash record of a supervisor, by key: the policy's side of the crash history (no file behind it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CrashBook {
    records: BTreeMap<HistoryKey, UnitRecord>,
}

impl CrashBook {
    /// A book holding `records` (a later record of the same key replaces an earlier one).
    pub fn from_records(records: impl IntoIterator<Item = UnitRecord>) -> CrashBook {
        CrashBook { records: records.into_iter().map(|r| (HistoryKey::of(&r), r)).collect() }
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
    fn records_are_kept_per_key_and_capped() {
        let key = HistoryKey { digest: "d".into(), unit: "ort:cpu".into(), runtime: "onnxruntime 1.31.1".into() };
        let mut book = CrashBook::default();
        for i in 0..(MAX_CRASHES_KEPT as u64 + 5) {
            let seq = book.record_crash(
                &key,
                "m",
                NewCrash { exit: "signal SIGSEGV", cause: "crash", counted: true },
                i as f64,
            );
            assert_eq!(seq, i);
        }
        let rec = book.get(&key).unwrap();
        assert_eq!((rec.crashes.len(), rec.total_crashes), (MAX_CRASHES_KEPT, MAX_CRASHES_KEPT as u64 + 5));
        assert_eq!(CrashBook::from_records(book.records().cloned()), book);
    }
}
