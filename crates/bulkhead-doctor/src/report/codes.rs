//! The report's codes: the enums its JSON spells as fixed strings (the diagnosis tree's branch codes, severities,
//! verdicts, load-failure kinds, availability, cache, crash phase). Each serializes to the string docs/doctor.md
//! documents; the protocol's and the worker client's own types convert into them at the edge.

use serde::{Deserialize, Serialize};

/// A branch of the diagnosis tree; docs/doctor.md defines each code and what it measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Branch {
    /// `1a`: the file's format version (ONNX IR version, opsets) against what the runtime knows.
    #[serde(rename = "1a")]
    FormatVersion,
    /// `1b`: the unit cannot run the model, or not all of it (nodes fallen back to the CPU).
    #[serde(rename = "1b")]
    UnitCannotRun,
    /// `1c`: broken or unreadable files, any other load error.
    #[serde(rename = "1c")]
    BrokenFiles,
    /// `2a`: a slow first load (cold against cached compiled-model cache).
    #[serde(rename = "2a")]
    SlowFirstLoad,
    /// `2b`: new input lengths recompile (dynamic shapes).
    #[serde(rename = "2b")]
    DynamicShapes,
    /// `2c`: live requests do not run on the unit asked for (or not as the warm-up did).
    #[serde(rename = "2c")]
    OtherUnitRan,
    /// `3a`: resident memory grows per prediction.
    #[serde(rename = "3a")]
    MemoryGrowth,
    /// `3b`: the model does not fit the memory available at load.
    #[serde(rename = "3b")]
    MemoryAtLoad,
    /// `4a`: the outputs disagree with the most exact unit.
    #[serde(rename = "4a")]
    Accuracy,
    /// `4b`: quantized weights, or no reference to compare with.
    #[serde(rename = "4b")]
    Quantized,
    /// `5a`: an operator or the architecture is not implemented by the engine.
    #[serde(rename = "5a")]
    Unsupported,
    /// `5b`: outputs of another shape, or half-precision (fp16, bf16) weights.
    #[serde(rename = "5b")]
    OutputShape,
    /// `crash`: the worker died or hung.
    #[serde(rename = "crash")]
    Crash,
    /// `predict`: a prediction failed while the worker lived, or no worker could be started.
    #[serde(rename = "predict")]
    Predict,
}

impl Branch {
    /// The code docs/doctor.md defines (`1a`..`5b`, `crash`, `predict`).
    pub fn code(self) -> &'static str {
        match self {
            Branch::FormatVersion => "1a",
            Branch::UnitCannotRun => "1b",
            Branch::BrokenFiles => "1c",
            Branch::SlowFirstLoad => "2a",
            Branch::DynamicShapes => "2b",
            Branch::OtherUnitRan => "2c",
            Branch::MemoryGrowth => "3a",
            Branch::MemoryAtLoad => "3b",
            Branch::Accuracy => "4a",
            Branch::Quantized => "4b",
            Branch::Unsupported => "5a",
            Branch::OutputShape => "5b",
            Branch::Crash => "crash",
            Branch::Predict => "predict",
        }
    }
}

impl std::fmt::Display for Branch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// What was measured; nothing to do.
    Info,
    /// Worth acting on; the unit still serves.
    Warning,
    /// The unit cannot serve as it is.
    Problem,
}

impl Severity {
    /// `info`, `warning` or `problem`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Problem => "problem",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict of one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    Slow,
    Inaccurate,
    Leaks,
    Crashes,
    Unusable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Slow => "slow",
            Verdict::Inaccurate => "inaccurate",
            Verdict::Leaks => "leaks",
            Verdict::Crashes => "crashes",
            Verdict::Unusable => "unusable",
        }
    }
}

/// Whether a unit can run here at all, before any load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    Usable,
    /// The unit's engine or device support is not in this build.
    NotCompiled,
    /// The unit cannot run on this machine.
    Unusable,
}

impl Availability {
    /// `usable`, `not compiled` or `unusable`, for sentences.
    pub fn in_words(self) -> &'static str {
        match self {
            Availability::Usable => "usable",
            Availability::NotCompiled => "not compiled",
            Availability::Unusable => "unusable",
        }
    }
}

/// The compiled-model cache a unit uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompiledCache {
    /// ONNX graphs built from safetensors by bulkhead-graph, cached on disk.
    #[serde(rename = "bulkhead-graph")]
    BulkheadGraph,
    /// None: the session is created from the model file each time.
    #[serde(rename = "none")]
    None,
}

impl CompiledCache {
    /// `bulkhead-graph` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            CompiledCache::BulkheadGraph => "bulkhead-graph",
            CompiledCache::None => "none",
        }
    }
}

impl std::fmt::Display for CompiledCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The worker's classification of a load failure, as the report spells it (the protocol's `LoadFailureKind`, kept
/// apart so that the schema does not change with the protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadErrorKind {
    NotCompiled,
    Unusable,
    ModelRejected,
    FormatTooNew,
    Unsupported,
    Inference,
    Setup,
}

impl LoadErrorKind {
    /// `not_compiled`, `unusable`, `model_rejected`, `format_too_new`, `unsupported`, `inference` or `setup`.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadErrorKind::NotCompiled => "not_compiled",
            LoadErrorKind::Unusable => "unusable",
            LoadErrorKind::ModelRejected => "model_rejected",
            LoadErrorKind::FormatTooNew => "format_too_new",
            LoadErrorKind::Unsupported => "unsupported",
            LoadErrorKind::Inference => "inference",
            LoadErrorKind::Setup => "setup",
        }
    }
}

impl std::fmt::Display for LoadErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<bulkhead_supervisor::LoadFailureKind> for LoadErrorKind {
    fn from(kind: bulkhead_supervisor::LoadFailureKind) -> Self {
        use bulkhead_supervisor::LoadFailureKind as K;
        match kind {
            K::NotCompiled => LoadErrorKind::NotCompiled,
            K::Unusable => LoadErrorKind::Unusable,
            K::ModelRejected => LoadErrorKind::ModelRejected,
            K::FormatTooNew => LoadErrorKind::FormatTooNew,
            K::Unsupported => LoadErrorKind::Unsupported,
            K::Inference => LoadErrorKind::Inference,
            K::Setup => LoadErrorKind::Setup,
        }
    }
}

/// Where a worker was when it died or hung.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrashPhase {
    Loading,
    WarmingUp,
    Predicting,
}

impl CrashPhase {
    /// `loading`, `warming up` or `predicting`.
    pub fn in_words(self) -> &'static str {
        match self {
            CrashPhase::Loading => "loading",
            CrashPhase::WarmingUp => "warming up",
            CrashPhase::Predicting => "predicting",
        }
    }
}

impl From<bulkhead_supervisor::client::Step> for CrashPhase {
    fn from(step: bulkhead_supervisor::client::Step) -> Self {
        use bulkhead_supervisor::client::Step;
        match step {
            Step::Loading => CrashPhase::Loading,
            Step::WarmingUp => CrashPhase::WarmingUp,
            Step::Running => CrashPhase::Predicting,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRANCHES: [Branch; 14] = [
        Branch::FormatVersion,
        Branch::UnitCannotRun,
        Branch::BrokenFiles,
        Branch::SlowFirstLoad,
        Branch::DynamicShapes,
        Branch::OtherUnitRan,
        Branch::MemoryGrowth,
        Branch::MemoryAtLoad,
        Branch::Accuracy,
        Branch::Quantized,
        Branch::Unsupported,
        Branch::OutputShape,
        Branch::Crash,
        Branch::Predict,
    ];

    #[test]
    fn codes_serialize_as_documented() {
        for b in BRANCHES {
            assert_eq!(serde_json::to_value(b).unwrap(), b.code(), "{b:?}");
            assert_eq!(serde_json::from_value::<Branch>(b.code().into()).unwrap(), b);
        }
        assert_eq!(serde_json::to_value(Severity::Problem).unwrap(), "problem");
        assert_eq!(serde_json::to_value(LoadErrorKind::ModelRejected).unwrap(), "model_rejected");
        assert_eq!(serde_json::to_value(Availability::NotCompiled).unwrap(), "not_compiled");
        assert_eq!(serde_json::to_value(CompiledCache::BulkheadGraph).unwrap(), "bulkhead-graph");
        assert_eq!(serde_json::to_value(CrashPhase::WarmingUp).unwrap(), "warming_up");
    }

    #[test]
    fn every_branch_code_is_defined_in_the_document() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/doctor.md")).unwrap();
        let tree = doc.split("## The diagnosis tree").nth(1).expect("the tree section").split("\n## ").next().unwrap();
        for b in BRANCHES {
            assert!(
                tree.contains(&format!("| `{}` |", b.code())),
                "branch {} is not defined in docs/doctor.md",
                b.code()
            );
        }
    }

    #[test]
    fn protocol_kinds_convert_to_the_report_kinds() {
        use bulkhead_supervisor::LoadFailureKind as K;
        for k in
            [K::NotCompiled, K::Unusable, K::ModelRejected, K::FormatTooNew, K::Unsupported, K::Inference, K::Setup]
        {
            assert_eq!(LoadErrorKind::from(k).as_str(), k.as_str());
        }
    }
}
