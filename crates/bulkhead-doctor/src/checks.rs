//! Static checks, before any unit runs: the model's files (exist, readable, sizes), what the ONNX protobuf and the
//! safetensors header say (IR version, opsets, operator types, weight precision), and the machine (memory, the
//! ONNX Runtime library).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use bulkhead_core::{ModelFiles, Precision};

use crate::report::{Branch, FileCheck, Finding, Machine, ModelReport, OnnxSummary, SafetensorsSummary, Severity};

fn check_file(role: &str, path: &Path) -> FileCheck {
    let mut check =
        FileCheck { role: role.into(), path: path.display().to_string(), bytes: 0, readable: false, error: None };
    match std::fs::File::open(path) {
        Ok(mut f) => {
            check.bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
            let mut head = vec![0u8; check.bytes.min(16) as usize];
            match f.read_exact(&mut head) {
                Ok(()) => check.readable = true,
                Err(e) => check.error = Some(e.to_string()),
            }
        }
        Err(e) => check.error = Some(e.to_string()),
    }
    check
}

/// Reads a safetensors header: tensor count, parameters per dtype.
pub fn safetensors_summary(path: &Path) -> SafetensorsSummary {
    let mut s = SafetensorsSummary {
        tensors: 0,
        parameters: 0,
        dtypes: BTreeMap::new(),
        precision: Precision::Unknown,
        error: None,
    };
    let header = || -> Result<serde_json::Value, String> {
        let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let mut len = [0u8; 8];
        f.read_exact(&mut len).map_err(|e| format!("cannot read the header length: {e}"))?;
        let len = u64::from_le_bytes(len);
        if len > 100 << 20 {
            return Err(format!("header length {len} is absurd: not a safetensors file"));
        }
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf).map_err(|e| format!("truncated header: {e}"))?;
        serde_json::from_slice(&buf).map_err(|e| format!("the header is not JSON: {e}"))
    };
    match header() {
        Ok(serde_json::Value::Object(map)) => {
            for (_, t) in map.iter().filter(|(k, _)| k.as_str() != "__metadata__") {
                let dtype = t.get("dtype").and_then(|d| d.as_str()).unwrap_or("?").to_string();
                let n: u64 = t
                    .get("shape")
                    .and_then(|s| s.as_array())
                    .map(|dims| dims.iter().map(|d| d.as_u64().unwrap_or(0)).product())
                    .unwrap_or(0);
                s.tensors += 1;
                s.parameters += n;
                *s.dtypes.entry(dtype).or_default() += n;
            }
            s.precision = Precision::of_weights(s.dtypes.iter().map(|(d, n)| (Precision::of_safetensors_dtype(d), *n)));
        }
        Ok(_) => s.error = Some("the header is not a JSON object".into()),
        Err(e) => s.error = Some(e),
    }
    s
}

/// A summary with nothing read, and why.
fn unread_onnx(error: Option<String>) -> OnnxSummary {
    OnnxSummary {
        ir_version: 0,
        opsets: vec![],
        producer: String::new(),
        nodes: 0,
        op_types: BTreeMap::new(),
        precision: Precision::Unknown,
        error,
    }
}

#[cfg(feature = "ort")]
fn onnx_summary(path: &Path) -> OnnxSummary {
    use crate::report::Opset;
    let mut s = unread_onnx(None);
    match std::fs::read(path).map_err(|e| e.to_string()).and_then(|b| bulkhead_ort::onnx_info::read(&b)) {
        Ok(info) => {
            s.ir_version = info.ir_version;
            s.opsets = info.opsets.iter().map(|(d, v)| Opset { domain: d.clone(), version: *v }).collect();
            s.producer = info.producer.clone();
            s.nodes = info.op_types.values().sum();
            s.precision = info.precision();
            s.op_types = info.op_types;
        }
        Err(e) => s.error = Some(e),
    }
    s
}

#[cfg(not(feature = "ort"))]
fn onnx_summary(path: &Path) -> OnnxSummary {
    unread_onnx(Some(format!("{}: this build has no ONNX reader (feature `ort` off)", path.display())))
}

/// The model section: files, formats, precision, and the static findings.
pub fn model_report(model: &ModelFiles, has_tokenizer: Result<(), String>) -> ModelReport {
    let (files, mut findings) = file_checks(model, has_tokenizer);
    let onnx = model.onnx.as_deref().map(onnx_summary);
    let safetensors = model.safetensors.as_deref().map(safetensors_summary);
    findings.extend(format_findings(onnx.as_ref(), safetensors.as_ref()));
    let quantized =
        onnx.iter().map(|o| o.precision).chain(safetensors.iter().map(|s| s.precision)).any(Precision::is_reduced);
    let int8_accuracy = match model.source.is_dir() {
        true => match bulkhead_core::quantized::Manifest::<()>::read(&model.source) {
            Ok(manifest) => manifest.map(|m| m.int8_accuracy()),
            Err(e) => {
                findings.push(Finding::new(Branch::BrokenFiles, Severity::Problem, e.to_string()));
                None
            }
        },
        false => None,
    };
    match &int8_accuracy {
        Some(a) => findings.push(measured_int8_finding(a)),
        None => findings.extend(precision_findings(onnx.as_ref(), safetensors.as_ref())),
    }
    findings.extend(architecture_finding(model));
    let format = match (&model.onnx, &model.safetensors) {
        (Some(_), Some(_)) => "onnx+safetensors",
        (Some(_), None) => "onnx",
        _ => "safetensors",
    };
    let weights_bytes = files.iter().filter(|f| f.role == "onnx" || f.role == "safetensors").map(|f| f.bytes).max();
    ModelReport {
        name: model.name.clone(),
        source: model.source.display().to_string(),
        format: format.into(),
        architecture: model.architecture.clone(),
        model_type: model.model_type.clone(),
        pooling: serde_json::to_value(model.pooling)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        normalize: model.normalize,
        max_seq_length: model.max_seq_length,
        files,
        weights_bytes: weights_bytes.unwrap_or(0),
        onnx,
        safetensors,
        quantized,
        int8_accuracy,
        findings,
    }
}

/// An int8 folder `bulkhead quantize` wrote (4b): what it measured, instead of the warning about unmeasured weights.
fn measured_int8_finding(a: &bulkhead_core::quantized::Int8Accuracy) -> Finding {
    let severity = if a.meets_target { Severity::Info } else { Severity::Warning };
    Finding::new(
        Branch::Quantized,
        severity,
        format!(
            "int8 graph written by `bulkhead quantize` ({:.0} % of the linear weights in int8): against float32 on              {} held-out texts, min cosine {:.5}, mean {:.5}, top-10 neighbour overlap {:.3}; the floor asked for              was {}{}",
            100.0 * a.int8_share,
            a.heldout_texts,
            a.heldout_min_cosine,
            a.heldout_mean_cosine,
            a.heldout_top10_overlap,
            a.min_cosine_target,
            if a.meets_target { "" } else { ", not met (written with --force)" }
        ),
    )
}

/// Every model file: exists, readable, size (1c); and whether a tokenizer loads.
fn file_checks(model: &ModelFiles, has_tokenizer: Result<(), String>) -> (Vec<FileCheck>, Vec<Finding>) {
    let mut files = vec![];
    let mut findings = vec![];
    for (role, path) in [
        ("config", &model.config),
        ("tokenizer", &model.tokenizer),
        ("safetensors", &model.safetensors),
        ("onnx", &model.onnx),
    ] {
        if let Some(p) = path {
            let c = check_file(role, p);
            if let Some(e) = &c.error {
                findings.push(Finding::new(
                    Branch::BrokenFiles,
                    Severity::Problem,
                    format!("{role} file {} is unreadable: {e}", c.path),
                ));
            }
            files.push(c);
        }
    }
    if let Err(e) = has_tokenizer {
        findings.push(Finding::new(Branch::BrokenFiles, Severity::Problem, format!("no usable tokenizer: {e}")));
    }
    (files, findings)
}

/// What the ONNX protobuf and the safetensors header say: versions (1a), or that they do not parse (1c).
fn format_findings(onnx: Option<&OnnxSummary>, safetensors: Option<&SafetensorsSummary>) -> Vec<Finding> {
    let mut findings = vec![];
    if let Some(o) = onnx {
        match &o.error {
            Some(e) => findings.push(Finding::new(
                Branch::BrokenFiles,
                Severity::Problem,
                format!("the ONNX file is not valid: {e}"),
            )),
            None => {
                let opsets: Vec<String> = o
                    .opsets
                    .iter()
                    .map(|s| format!("{}{}", if s.domain.is_empty() { "ai.onnx" } else { &s.domain }, s.version))
                    .collect();
                findings.push(Finding::new(
                    Branch::FormatVersion,
                    Severity::Info,
                    format!(
                        "ONNX IR version {}, opsets {}, {} nodes ({} operator types), producer `{}`",
                        o.ir_version,
                        opsets.join(", "),
                        o.nodes,
                        o.op_types.len(),
                        o.producer
                    ),
                ));
            }
        }
    }
    if let Some(s) = safetensors {
        if let Some(e) = &s.error {
            findings.push(Finding::new(
                Branch::BrokenFiles,
                Severity::Problem,
                format!("the safetensors file is not valid: {e}"),
            ));
        }
    }
    findings
}

/// Quantized (4b) or half-precision (5b) weights.
fn precision_findings(onnx: Option<&OnnxSummary>, safetensors: Option<&SafetensorsSummary>) -> Vec<Finding> {
    let mut findings = vec![];
    for (what, p) in
        onnx.iter().map(|o| ("ONNX", o.precision)).chain(safetensors.iter().map(|s| ("safetensors", s.precision)))
    {
        if p.is_reduced() {
            findings.push(Finding::new(
                if p == Precision::Int8 { Branch::Quantized } else { Branch::OutputShape },
                Severity::Warning,
                format!(
                    "the {what} weights are {p} (quantized or reduced precision): expect outputs to differ from fp32"
                ),
            ));
        }
    }
    findings
}

/// An architecture bulkhead neither builds nor runs from safetensors (5a).
fn architecture_finding(model: &ModelFiles) -> Option<Finding> {
    let candle_ok = model.architecture.as_deref().is_some_and(|a| bulkhead_graph::supported_architectures().contains(&a))
            || model.model_type.as_deref() == Some("bert")
            // An image-text model's towers are built by bulkhead-graph too (the doctor measures both).
            || model.task.takes_images()
            // So are the graphs of Whisper, Qwen3-ASR and SAM2.
            || matches!(model.task, bulkhead_core::ModelTask::SpeechToText | bulkhead_core::ModelTask::Segmentation);
    (model.safetensors.is_some() && !candle_ok).then(|| {
        Finding::new(
            Branch::Unsupported,
            Severity::Warning,
            format!(
                "architecture {:?} (model_type {:?}) is not one bulkhead builds or runs from safetensors ({})",
                model.architecture,
                model.model_type,
                bulkhead_graph::supported_architectures().join(", ")
            ),
        )
    })
}

/// `MemTotal` and `MemAvailable` of /proc/meminfo, in bytes.
fn meminfo() -> (Option<u64>, Option<u64>) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

/// The machine the doctor runs on.
pub fn machine() -> Machine {
    let (total, available) = meminfo();
    #[cfg(feature = "ort")]
    let onnxruntime = Some(match bulkhead_ort::runtime() {
        Ok(rt) => format!("onnxruntime {} ({})", rt.version, rt.library.display()),
        Err(e) => format!("not loaded: {e}"),
    });
    #[cfg(not(feature = "ort"))]
    let onnxruntime = None;
    Machine {
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_total_bytes: total,
        memory_available_bytes: available,
        onnxruntime,
    }
}

/// Bytes of the weights that `unit` loads: the ONNX file for ONNX Runtime units (the safetensors a graph is built
/// from when there is none), the safetensors for candle.
pub fn unit_weights_bytes(model: &ModelFiles, unit: &bulkhead_core::Unit) -> u64 {
    let size = |p: &Option<std::path::PathBuf>| p.as_ref().and_then(|p| std::fs::metadata(p).ok()).map(|m| m.len());
    // Every shard of a sharded checkpoint.
    let safetensors = || -> Option<u64> {
        let sizes: Vec<u64> =
            model.safetensors_shards.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).collect();
        (!sizes.is_empty()).then(|| sizes.iter().sum())
    };
    match unit.engine {
        bulkhead_core::EngineKind::Ort => size(&model.onnx).or_else(safetensors),
        bulkhead_core::EngineKind::Candle => safetensors(),
    }
    .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arch(name: &str) -> std::path::PathBuf {
        bulkhead_testkit::fixture("arch").join(name)
    }

    #[test]
    fn bf16_weights_are_bf16_and_flagged_as_reduced_precision() {
        let dir = arch("qwen3-bf16");
        let s = safetensors_summary(&dir.join("model.safetensors"));
        assert_eq!((s.precision, s.error.as_deref()), (Precision::Bf16, None));
        assert_eq!(s.dtypes.keys().map(String::as_str).collect::<Vec<_>>(), ["BF16"]);
        assert_eq!(serde_json::to_value(&s).unwrap()["precision"], "bf16");

        let report = model_report(&ModelFiles::open(&dir).unwrap(), Ok(()));
        assert!(report.quantized, "bf16 weights are reduced precision");
        let finding = report.findings.iter().find(|f| f.branch == Branch::OutputShape).expect("a 5b finding");
        assert_eq!(finding.severity, Severity::Warning);
        assert!(finding.message.contains("safetensors weights are bf16"), "{}", finding.message);
    }

    #[test]
    fn fp32_weights_are_fp32_and_not_flagged() {
        let dir = arch("xlm-roberta");
        let report = model_report(&ModelFiles::open(&dir).unwrap(), Ok(()));
        let s = report.safetensors.as_ref().expect("the safetensors summary");
        assert_eq!(s.precision, Precision::Fp32, "{:?}", s.dtypes);
        assert!(!report.quantized);
        assert!(!report.findings.iter().any(|f| f.branch == Branch::OutputShape || f.branch == Branch::Quantized));
    }
}
