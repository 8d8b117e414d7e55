//! Typed errors. Each names what is wrong and, where there is one, what to do about it.

use std::path::PathBuf;

/// A compute unit or chain string that does not parse.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    /// The string is neither a known unit nor an alias.
    #[error("unknown compute unit `{input}`; valid units: {valid}; aliases: ALL, CPU_AND_GPU, CPU_AND_NE, CPU_ONLY")]
    Unknown {
        /// What the user wrote.
        input: String,
        /// Comma-separated list of the valid unit strings.
        valid: String,
    },
    /// The chain is empty.
    #[error("empty compute-unit chain; give at least one unit, e.g. `ort:cpu` or `ALL`")]
    Empty,
}

/// A model path that cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    /// The path does not exist or cannot be read.
    #[error("{path}: {reason}")]
    Unreadable {
        /// The offending path.
        path: PathBuf,
        /// Why (the OS error).
        reason: String,
    },
    /// A file exists but its content is invalid.
    #[error("{path}: {reason}")]
    Invalid {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The folder lacks a file the model needs.
    #[error("{path}: {reason}")]
    Missing {
        /// The folder (or file) that was inspected.
        path: PathBuf,
        /// What is missing and how to provide it.
        reason: String,
    },
}

/// Why an engine could not load or run a model on a unit.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// This build does not contain the unit's engine or device support.
    #[error("{unit} is not compiled into this build: {reason}")]
    NotCompiled {
        /// The unit.
        unit: String,
        /// What to rebuild with.
        reason: String,
    },
    /// The unit exists in this build but cannot run on this machine.
    #[error("{unit} is unusable here: {reason}")]
    Unusable {
        /// The unit.
        unit: String,
        /// Why (missing library, no device...).
        reason: String,
    },
    /// The engine refused the model's files: they do not parse, a file is missing, or the graph is invalid.
    #[error("{unit} cannot load the model: {reason}")]
    ModelRejected {
        /// The unit.
        unit: String,
        /// The engine's reason, naming the file.
        reason: String,
    },
    /// The model's format (ONNX IR version, an opset) is newer than the engine knows.
    #[error("{unit} cannot load the model (its format is newer than this engine): {reason}")]
    FormatTooNew {
        /// The unit.
        unit: String,
        /// The engine's reason, naming the file.
        reason: String,
    },
    /// The files are valid but the engine does not implement what the model needs: an operator, an architecture,
    /// a head, or a kind of model.
    #[error("{unit} does not support the model: {reason}")]
    Unsupported {
        /// The unit.
        unit: String,
        /// What is missing, naming the file.
        reason: String,
    },
    /// A forward pass failed.
    #[error("{unit} failed during inference: {reason}")]
    Inference {
        /// The unit.
        unit: String,
        /// The engine's reason.
        reason: String,
    },
}

impl EngineError {
    /// A short machine-friendly kind: `not_compiled`, `unusable`, `model_rejected`, `format_too_new`,
    /// `unsupported` or `inference`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotCompiled { .. } => "not_compiled",
            Self::Unusable { .. } => "unusable",
            Self::ModelRejected { .. } => "model_rejected",
            Self::FormatTooNew { .. } => "format_too_new",
            Self::Unsupported { .. } => "unsupported",
            Self::Inference { .. } => "inference",
        }
    }
}
