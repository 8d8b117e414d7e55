//! Why ONNX Runtime refused to create a session, as a typed [`EngineError`]: the one place that knows this engine's
//! error codes and, where it has no code of its own, its wording, so that nobody downstream reads messages.

use std::path::Path;

use bulkhead_core::{EngineError, Unit};

use crate::provider_name;

/// A session creation failure is the unit's fault when the execution provider failed to register or initialise,
/// and the model's fault otherwise: an operator without a kernel (ONNX Runtime's `NOT_IMPLEMENTED`), a format newer
/// than this ONNX Runtime (it has no code of its own for that, so its wording is read here, the one place that
/// knows this engine's messages), or invalid files.
pub(crate) fn classify(unit: &Unit, path: &Path, code: ort::ErrorCode, msg: String) -> EngineError {
    let provider_failed = code == ort::ErrorCode::ExecutionProviderFailure
        || (!unit.is_cpu()
            && (msg.contains(provider_name(unit.device)) || msg.to_ascii_lowercase().contains("execution provider")));
    let u = unit.to_string();
    if provider_failed {
        return EngineError::Unusable { unit: u, reason: msg };
    }
    let reason = format!("{}: {msg}", path.display());
    if code == ort::ErrorCode::NotImplemented || mentions_missing_kernel(&msg) {
        EngineError::Unsupported { unit: u, reason }
    } else if mentions_format_version(&msg) {
        EngineError::FormatTooNew { unit: u, reason }
    } else {
        EngineError::ModelRejected { unit: u, reason }
    }
}

/// ONNX Runtime's refusals of an IR version or opset it does not know ("Unsupported model IR version: 12, max
/// supported IR version: 11", "Opset 30 is under development and support for this is limited", "ONNX Runtime only
/// *guarantees* support for models stamped with official released onnx opset versions").
fn mentions_format_version(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("ir version") || m.contains("ir_version") || m.contains("opset") || m.contains("model version")
}

/// ONNX Runtime's refusal of an operator no opset it knows defines ("No Op registered for NoSuchOp with
/// domain_version of 17", code `INVALID_GRAPH`), or of one it has no kernel for without its `NOT_IMPLEMENTED` code.
fn mentions_missing_kernel(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("no op registered") || m.contains("could not find an implementation") || m.contains("not implemented")
}
