//! Fault injection (`BULKHEAD_FAULTS`): real signals, real exits, real hangs and real allocations, inside worker
//! processes, so that every recovery path can be exercised with the genuine article.
//!
//! The format is fixed by the interface: a JSON array of rules
//! `{"unit", "kind", "after", "generations", "ms", "mb", "match"}`. Parsing is strict (unknown fields and kinds,
//! missing amounts and unknown units are errors), and active rules are logged at `warn` level.

use std::str::FromStr;

use bulkhead_core::Unit;
use serde::{Deserialize, Serialize};

/// The environment variable holding the rules.
pub const FAULTS_ENV: &str = "BULKHEAD_FAULTS";

/// Exit code of the `exit` fault.
pub const FAULT_EXIT_CODE: i32 = 70;

/// What a rule does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// A real SIGSEGV.
    Segv,
    /// `abort()` (SIGABRT).
    Abort,
    /// `exit(70)`.
    Exit,
    /// Never answers.
    Hang,
    /// Sleeps `ms` per prediction.
    Slow,
    /// Keeps `mb` MiB of written memory per prediction.
    Leak,
    /// Load returns an error.
    LoadFail,
    /// SIGSEGV while loading.
    LoadCrash,
}

/// One rule of `BULKHEAD_FAULTS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// The unit the rule applies to (exact unit string).
    pub unit: String,
    /// What happens.
    pub kind: FaultKind,
    /// Predictions this worker serves before the rule fires.
    #[serde(default)]
    pub after: u64,
    /// Worker lifetimes of that unit the rule applies to (0 = first); `None` = all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generations: Option<Vec<u32>>,
    /// Milliseconds for `slow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
    /// MiB for `leak`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mb: Option<u64>,
    /// Fires only on a prediction where one input text contains this string.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<String>,
}

/// An invalid `BULKHEAD_FAULTS`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FaultsError {
    /// Not a JSON array of valid rules.
    #[error("invalid {FAULTS_ENV}: {0}; expected a JSON array like [{{\"unit\": \"ort:cpu\", \"kind\": \"segv\", \"after\": 50, \"generations\": [0]}}] with kind one of segv, abort, exit, hang, slow, leak, load_fail, load_crash")]
    Json(String),
    /// A rule is inconsistent.
    #[error("invalid {FAULTS_ENV} rule {index}: {reason}")]
    Rule {
        /// 0-based position in the array.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Parses and validates a `BULKHEAD_FAULTS` value. An empty or blank string means no rules.
pub fn parse(text: &str) -> Result<Vec<FaultRule>, FaultsError> {
    if text.trim().is_empty() {
        return Ok(vec![]);
    }
    let rules: Vec<FaultRule> = serde_json::from_str(text).map_err(|e| FaultsError::Json(e.to_string()))?;
    for (index, r) in rules.iter().enumerate() {
        let bad = |reason: String| FaultsError::Rule { index, reason };
        Unit::from_str(&r.unit).map_err(|e| bad(e.to_string()))?;
        match r.kind {
            FaultKind::Slow if r.ms.is_none() => return Err(bad("kind `slow` needs `ms`".into())),
            FaultKind::Leak if r.mb.is_none() => return Err(bad("kind `leak` needs `mb`".into())),
            _ => {}
        }
        if r.ms.is_some() && r.kind != FaultKind::Slow {
            return Err(bad(format!("`ms` only applies to kind `slow`, not `{:?}`", r.kind).to_lowercase()));
        }
        if r.mb.is_some() && r.kind != FaultKind::Leak {
            return Err(bad(format!("`mb` only applies to kind `leak`, not `{:?}`", r.kind).to_lowercase()));
        }
        if r.matches.is_some() && matches!(r.kind, FaultKind::LoadFail | FaultKind::LoadCrash) {
            return Err(bad("`match` does not apply to load faults".into()));
        }
    }
    Ok(rules)
}

/// Reads and validates [`FAULTS_ENV`] (absent = no rules).
pub fn from_env() -> Result<Vec<FaultRule>, FaultsError> {
    match std::env::var(FAULTS_ENV) {
        Ok(v) => parse(&v),
        Err(std::env::VarError::NotPresent) => Ok(vec![]),
        Err(e) => Err(FaultsError::Json(e.to_string())),
    }
}

/// Serialises rules back to the `BULKHEAD_FAULTS` format (to hand them to a worker).
pub fn to_env_value(rules: &[FaultRule]) -> String {
    serde_json::to_string(rules).unwrap_or_else(|_| "[]".into())
}

/// Logs every rule loudly.
pub fn log_active(rules: &[FaultRule], whom: &str) {
    for r in rules {
        tracing::warn!(target: "bulkhead::faults", "FAULT INJECTION ACTIVE in {whom}: {}", serde_json::to_string(r).unwrap_or_default());
    }
}

/// The rules that apply to one worker lifetime.
#[derive(Debug, Default)]
pub struct WorkerFaults {
    rules: Vec<FaultRule>,
    leaked: Vec<&'static mut [u8]>,
}

impl WorkerFaults {
    /// Keeps the rules for `unit` and `generation`.
    pub fn for_worker(rules: &[FaultRule], unit: &Unit, generation: u32) -> WorkerFaults {
        let unit = unit.to_string();
        let rules = rules
            .iter()
            .filter(|r| r.unit == unit && r.generations.as_ref().is_none_or(|g| g.contains(&generation)))
            .cloned()
            .collect();
        WorkerFaults { rules, leaked: vec![] }
    }

    /// The rules kept.
    pub fn rules(&self) -> &[FaultRule] {
        &self.rules
    }

    /// Applies load-time faults: `Err` for `load_fail`; `load_crash` does not return.
    pub fn at_load(&self) -> Result<(), String> {
        for r in &self.rules {
            match r.kind {
                FaultKind::LoadCrash => {
                    tracing::warn!("fault injection: load_crash, raising SIGSEGV");
                    segv()
                }
                FaultKind::LoadFail => return Err("fault injection: load_fail".into()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Applies per-prediction faults before the `served`-th prediction (0-based count of predictions already
    /// answered by this worker). Crashing kinds do not return.
    pub fn before_predict(&mut self, served: u64, texts: &[String]) {
        for i in 0..self.rules.len() {
            let r = &self.rules[i];
            if served < r.after {
                continue;
            }
            if let Some(m) = &r.matches {
                if !texts.iter().any(|t| t.contains(m.as_str())) {
                    continue;
                }
            }
            match r.kind {
                FaultKind::Segv => {
                    tracing::warn!("fault injection: segv after {served} predictions");
                    segv()
                }
                FaultKind::Abort => {
                    tracing::warn!("fault injection: abort after {served} predictions");
                    std::process::abort()
                }
                FaultKind::Exit => {
                    tracing::warn!("fault injection: exit({FAULT_EXIT_CODE}) after {served} predictions");
                    std::process::exit(FAULT_EXIT_CODE)
                }
                FaultKind::Hang => {
                    tracing::warn!("fault injection: hang after {served} predictions");
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(3600));
                    }
                }
                FaultKind::Slow => std::thread::sleep(std::time::Duration::from_millis(r.ms.unwrap_or(0))),
                FaultKind::Leak => {
                    let bytes = (r.mb.unwrap_or(0) as usize) << 20;
                    let block = vec![0u8; bytes].leak();
                    // Write every page so the memory is really resident.
                    for page in block.chunks_mut(4096) {
                        // SAFETY: `page` is a valid, exclusive, non-empty slice.
                        unsafe { std::ptr::write_volatile(page.as_mut_ptr(), 1) };
                    }
                    self.leaked.push(block);
                }
                FaultKind::LoadFail | FaultKind::LoadCrash => {}
            }
        }
    }
}

/// Raises a real SIGSEGV with the default disposition (no handler can swallow it).
fn segv() -> ! {
    // SAFETY: resetting a signal disposition and raising a signal are async-signal-safe libc calls.
    unsafe {
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
        libc::raise(libc::SIGSEGV);
    }
    // Unreachable in practice; make sure the process still dies by the same signal.
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_interface_example() {
        let rules = parse(r#"[{"unit": "ort:cpu", "kind": "segv", "after": 50, "generations": [0]}]"#).unwrap();
        assert_eq!(rules[0].kind, FaultKind::Segv);
        assert_eq!(rules[0].after, 50);
        assert_eq!(rules[0].generations, Some(vec![0]));
        let rules =
            parse(r#"[{"unit":"candle:cpu","kind":"segv","match":"POISON"},{"unit":"ort:cpu","kind":"leak","mb":8}]"#)
                .unwrap();
        assert_eq!(rules[0].matches.as_deref(), Some("POISON"));
        assert_eq!(parse(&to_env_value(&rules)).unwrap(), rules);
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn invalid_rules_are_clear_errors() {
        for (text, needle) in [
            ("{", "invalid BULKHEAD_FAULTS"),
            (r#"[{"unit":"ort:cpu","kind":"explode"}]"#, "unknown variant"),
            (r#"[{"unit":"ort:cpu","kind":"segv","afterr":1}]"#, "unknown field"),
            (r#"[{"unit":"ort:cpu","kind":"slow"}]"#, "needs `ms`"),
            (r#"[{"unit":"ort:cpu","kind":"leak"}]"#, "needs `mb`"),
            (r#"[{"unit":"ort:gpu","kind":"segv"}]"#, "unknown compute unit"),
            (r#"[{"unit":"ort:cpu","kind":"segv","ms":3}]"#, "only applies"),
            (r#"{"unit":"ort:cpu","kind":"segv"}"#, "expected a JSON array"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn rules_select_unit_and_generation() {
        let rules = parse(
            r#"[{"unit":"ort:cpu","kind":"segv","generations":[0]},{"unit":"candle:cpu","kind":"abort"},
                {"unit":"ort:cpu","kind":"slow","ms":1}]"#,
        )
        .unwrap();
        assert_eq!(WorkerFaults::for_worker(&rules, &Unit::ORT_CPU, 0).rules().len(), 2);
        assert_eq!(WorkerFaults::for_worker(&rules, &Unit::ORT_CPU, 1).rules().len(), 1);
        assert_eq!(WorkerFaults::for_worker(&rules, &Unit::CANDLE_CPU, 5).rules().len(), 1);
    }

    #[test]
    fn slow_and_leak_really_act() {
        let rules =
            parse(r#"[{"unit":"ort:cpu","kind":"slow","ms":30},{"unit":"ort:cpu","kind":"leak","mb":2,"after":1}]"#)
                .unwrap();
        let mut f = WorkerFaults::for_worker(&rules, &Unit::ORT_CPU, 0);
        let t = std::time::Instant::now();
        f.before_predict(0, &[]);
        assert!(t.elapsed().as_millis() >= 30);
        assert!(f.leaked.is_empty());
        f.before_predict(1, &[]);
        assert_eq!(f.leaked.iter().map(|b| b.len()).sum::<usize>(), 2 << 20);
        assert!(f.leaked[0].chunks(4096).all(|p| p[0] == 1));
    }
}
