//! The ONNX Runtime engine (crate `ort`, loaded dynamically).
//!
//! Units: `ort:cpu`, `ort:cuda`, `ort:tensorrt`, `ort:rocm`, `ort:openvino`, `ort:directml`, `ort:coreml[...]`.
//! Every execution provider is registered with `error_on_failure()`: a unit that cannot run says so and why, it
//! never silently becomes CPU. After a session is created, the engine records what really runs it: the node
//! placement per execution provider (ONNX Runtime's graph assignment), so a unit that only half runs on its device
//! is visible.
//!
//! * [`runtime`]: finding the ONNX Runtime library and the one process-wide environment;
//! * [`onnx_info`]: a minimal ONNX protobuf reader (IR version, opsets, operator counts, weight precision);
//! * [`python`]: asking `python3` where a Python package is, the last resort of the library lookup.
//!
//! # Architecture invariants
//!
//! * **A unit never silently becomes CPU:** every execution provider is registered with `error_on_failure()`, so a
//!   provider that cannot load is a load error naming it, and the chain moves on.
//! * **ONNX Runtime is loaded at run time** from the `onnxruntime` wheel (`ort`'s `load-dynamic`, without default
//!   features), never downloaded or copied at build time.
//! * **What ran is recorded, not assumed:** the node placement per provider and the compiled-model cache outcome
//!   (`SessionReport::graph_cache`) are values in the session report, not only notes.
//! * **The only process it starts is `python3`**, asked where a package is ([`python`]), when nothing else found it.
//!
//! `crates/bulkhead-testkit/tests/invariants.rs` checks the first, second and last by reading the workspace's
//! `Cargo.toml` and this crate's sources.
#![deny(missing_docs)]

pub mod onnx_info;
mod placement;
pub mod python;
mod refusal;
pub mod runtime;

use std::path::{Path, PathBuf};

use bulkhead_core::{
    Availability, CoreMlUnits, DataType, Device, Engine, EngineError, EngineKind, GraphCache, GraphSession, ModelFiles,
    NamedTensor, Session, SessionReport, Tensor, TensorData, TensorSpec, TokenBatch, Unit,
};
use ort::ep::ExecutionProviderDispatch;
use ort::session::builder::SessionBuilder;
use ort::value::TensorRef;

pub use runtime::{runtime, Runtime};

/// Turns an ONNX Runtime status pointer into a `Result` (releasing the status).
pub(crate) fn status_to_result(status: ort::sys::OrtStatusPtr) -> Result<(), String> {
    if status.0.is_null() {
        return Ok(());
    }
    let api = ort::api();
    let msg = unsafe { std::ffi::CStr::from_ptr((api.GetErrorMessage)(status.0)) }.to_string_lossy().into_owned();
    unsafe { (api.ReleaseStatus)(status.0) };
    Err(msg)
}

/// Options of the ONNX Runtime engine.
#[derive(Debug, Clone, Default)]
pub struct OrtOptions {
    /// Intra-op threads (0: ONNX Runtime's default, one per physical core).
    pub intra_threads: usize,
    /// Where CoreML keeps compiled models (speeds up the second load).
    pub coreml_cache_dir: Option<PathBuf>,
}

/// The ONNX Runtime engine.
#[derive(Debug, Default)]
pub struct OrtEngine {
    options: OrtOptions,
}

impl OrtEngine {
    /// An engine with the given options.
    pub fn new(options: OrtOptions) -> OrtEngine {
        OrtEngine { options }
    }
}

/// The ONNX Runtime name of the execution provider a unit needs.
pub fn provider_name(device: Device) -> &'static str {
    match device {
        Device::Cpu => "CPUExecutionProvider",
        Device::Cuda => "CUDAExecutionProvider",
        Device::TensorRt => "TensorrtExecutionProvider",
        Device::Rocm => "ROCMExecutionProvider",
        Device::OpenVino => "OpenVINOExecutionProvider",
        Device::DirectMl => "DmlExecutionProvider",
        Device::CoreMl(_) => "CoreMLExecutionProvider",
        Device::Metal => "(none)",
    }
}

fn wheel_hint(device: Device) -> &'static str {
    match device {
        Device::Cuda | Device::TensorRt => "install the onnxruntime-gpu wheel and point ORT_DYLIB_PATH at its library",
        Device::Rocm => "install an ONNX Runtime build with ROCm and point ORT_DYLIB_PATH at it",
        Device::OpenVino => "install onnxruntime-openvino and point ORT_DYLIB_PATH at its library",
        Device::DirectMl => "install onnxruntime-directml (Windows) and point ORT_DYLIB_PATH at its library",
        Device::CoreMl(_) => "use the macOS onnxruntime wheel, which includes CoreML",
        _ => "",
    }
}

impl Engine for OrtEngine {
    fn runtime(&self, _unit: &Unit) -> String {
        match runtime() {
            Ok(rt) => format!("onnxruntime {}", rt.version),
            Err(_) => "onnxruntime (not found)".to_string(),
        }
    }

    fn availability(&self, unit: &Unit) -> Availability {
        if unit.engine != EngineKind::Ort || unit.device == Device::Metal {
            return Availability::Unusable(format!("{unit} is not an ONNX Runtime unit"));
        }
        if matches!(unit.device, Device::CoreMl(_)) && !cfg!(target_os = "macos") {
            return Availability::Unusable("CoreML exists only on macOS".into());
        }
        if unit.device == Device::DirectMl && !cfg!(target_os = "windows") {
            return Availability::Unusable("DirectML exists only on Windows".into());
        }
        let rt = match runtime() {
            Ok(rt) => rt,
            Err(e) => return Availability::Unusable(e),
        };
        let provider = provider_name(unit.device);
        if !rt.providers.iter().any(|p| p == provider) {
            return Availability::Unusable(format!(
                "the ONNX Runtime library at {} (version {}) has no {provider} (it has {}); {}",
                rt.library.display(),
                rt.version,
                rt.providers.join(", "),
                wheel_hint(unit.device)
            ));
        }
        let platform = bulkhead_core::Platform::detect();
        match unit.device {
            Device::Cuda | Device::TensorRt if !platform.nvidia => {
                Availability::Unusable("no NVIDIA driver found (/proc/driver/nvidia)".into())
            }
            Device::Rocm if !platform.rocm => Availability::Unusable("no ROCm device found (/dev/kfd)".into()),
            _ => Availability::Usable,
        }
    }

    fn load(&self, model: &ModelFiles, unit: &Unit) -> Result<Box<dyn Session>, EngineError> {
        let c = self.commit(model, unit)?;
        let mut session = OrtSession::new(c.session, unit, c.rt, &c.path, c.info)?;
        session.report.notes.extend(c.notes);
        session.report.graph_cache = c.graph_cache;
        Ok(Box::new(session))
    }

    fn load_graph(&self, model: &ModelFiles, unit: &Unit) -> Result<Box<dyn GraphSession>, EngineError> {
        let c = self.commit(model, unit)?;
        let mut session = OrtGraphSession::new(c.session, unit, c.rt, &c.path, &c.info)?;
        session.report.notes.extend(c.notes);
        session.report.graph_cache = c.graph_cache;
        Ok(Box::new(session))
    }
}

/// A session ONNX Runtime has created, with what was learnt on the way.
struct Committed {
    session: ort::session::Session,
    rt: &'static Runtime,
    path: PathBuf,
    info: onnx_info::OnnxInfo,
    notes: Vec<String>,
    /// What the graph cache did, for a graph built from safetensors.
    graph_cache: Option<GraphCache>,
}

impl OrtEngine {
    /// Validates the model file and creates an ONNX Runtime session on `unit`.
    fn commit(&self, model: &ModelFiles, unit: &Unit) -> Result<Committed, EngineError> {
        let unusable = |reason: String| EngineError::Unusable { unit: unit.to_string(), reason };
        let rejected = |reason: String| EngineError::ModelRejected { unit: unit.to_string(), reason };
        if let Availability::Unusable(r) | Availability::NotCompiled(r) = self.availability(unit) {
            return Err(unusable(r));
        }
        let rt = runtime().map_err(unusable)?;
        let mut notes = vec![];
        let (path, graph_cache) = model_path(model, &mut notes).map_err(|e| match e {
            ModelPathError::Unsupported(reason) => EngineError::Unsupported { unit: unit.to_string(), reason },
            ModelPathError::Rejected(reason) => rejected(reason),
        })?;
        let bytes = std::fs::read(&path).map_err(|e| rejected(format!("{}: {e}", path.display())))?;
        let info = onnx_info::read(&bytes)
            .map_err(|e| rejected(format!("{}: not a valid ONNX model: {e}", path.display())))?;
        drop(bytes);

        let mut builder = self.builder(rt, unit).map_err(unusable)?;
        if unit.is_cpu() && model.onnx.is_none() {
            // Built graph on CPU: ORT's fused SkipLayerNormalization CPU kernel is slower than the Add +
            // LayerNormalization it replaces (measured in crates/bulkhead-graph/README.md); keep the other fusions.
            builder = builder
                .with_disabled_optimizers(bulkhead_graph::ORT_CPU_DISABLED_OPTIMIZERS)
                .map_err(|e| unusable(e.to_string()))?;
            notes.push(format!(
                "ORT optimizers disabled for the built graph: {}",
                bulkhead_graph::ORT_CPU_DISABLED_OPTIMIZERS
            ));
        }
        // From the file, not from memory: built graphs keep their weights as external data beside model.onnx.
        let session =
            builder.commit_from_file(&path).map_err(|e| refusal::classify(unit, &path, e.code(), e.to_string()))?;
        Ok(Committed { session, rt, path, info, notes, graph_cache })
    }
}

/// The ONNX file to run: the folder's own `.onnx` when it has one; for a safetensors-only folder, the graph built in
/// Rust by `bulkhead-graph` (cached on disk under [`bulkhead_core::install::cache_dir`]).
fn model_path(model: &ModelFiles, notes: &mut Vec<String>) -> Result<(PathBuf, Option<GraphCache>), ModelPathError> {
    match (&model.onnx, &model.safetensors) {
        (Some(p), _) => Ok((p.clone(), None)),
        (None, Some(_)) => {
            let cache = bulkhead_core::install::cache_dir().join("graphs");
            let built =
                bulkhead_graph::build_cached(model, &bulkhead_graph::BuildOptions::default(), &cache).map_err(|e| {
                    match e {
                        bulkhead_graph::GraphError::UnsupportedArchitecture { .. }
                        | bulkhead_graph::GraphError::Unsupported { .. } => ModelPathError::Unsupported(e.to_string()),
                        other => ModelPathError::Rejected(other.to_string()),
                    }
                })?;
            notes.push(format!(
                "graph built from safetensors by bulkhead-graph {} ({}, {:.0} ms): {}",
                bulkhead_graph::BUILDER_VERSION,
                if built.cache_hit { "cache hit" } else { "cold build" },
                built.build_ms,
                built.path.display()
            ));
            Ok((built.path, Some(if built.cache_hit { GraphCache::Hit } else { GraphCache::Built })))
        }
        (None, None) => Err(ModelPathError::Rejected(format!("{}: no model file", model.source.display()))),
    }
}

/// Why there is no ONNX file to run: the graph builder does not express the model, or the files are unusable.
enum ModelPathError {
    Unsupported(String),
    Rejected(String),
}

impl OrtEngine {
    fn builder(&self, rt: &Runtime, unit: &Unit) -> Result<SessionBuilder, String> {
        let s = |e: ort::Error<SessionBuilder>| e.to_string();
        let mut b = ort::session::Session::builder(&rt.env)
            .map_err(|e| e.to_string())?
            .with_config_entry(placement::RECORD_KEY, "1")
            .map_err(s)?;
        if self.options.intra_threads > 0 {
            b = b.with_intra_threads(self.options.intra_threads).map_err(s)?;
        }
        // ORT's idle intra-op threads spin for a while after each run: lower latency for back-to-back runs, but CPU
        // taken from other processes on few cores. `BULKHEAD_ORT_SPINNING=0|1` overrides ORT's default (on); on this
        // project's 2-core machine `serve` measured slightly better throughput and ~0.8 ms worse c=1 latency off.
        if let Some(spin) = std::env::var("BULKHEAD_ORT_SPINNING").ok().and_then(|v| match v.as_str() {
            "0" | "false" | "no" => Some(false),
            "1" | "true" | "yes" => Some(true),
            _ => None,
        }) {
            b = b.with_intra_op_spinning(spin).map_err(s)?;
        }
        if let Some(ep) = self.execution_provider(unit) {
            b = b.with_execution_providers([ep.error_on_failure()]).map_err(s)?;
        }
        Ok(b)
    }

    fn execution_provider(&self, unit: &Unit) -> Option<ExecutionProviderDispatch> {
        use ort::ep;
        Some(match unit.device {
            Device::Cpu | Device::Metal => return None,
            Device::Cuda => ep::CUDA::default().build(),
            Device::TensorRt => ep::TensorRT::default().build(),
            Device::Rocm => ep::ROCm::default().build(),
            Device::OpenVino => ep::OpenVINO::default().build(),
            Device::DirectMl => ep::DirectML::default().build(),
            Device::CoreMl(cu) => {
                let units = match cu {
                    CoreMlUnits::All => ep::coreml::ComputeUnits::All,
                    CoreMlUnits::CpuAndGpu => ep::coreml::ComputeUnits::CPUAndGPU,
                    CoreMlUnits::CpuAndNe => ep::coreml::ComputeUnits::CPUAndNeuralEngine,
                    CoreMlUnits::CpuOnly => ep::coreml::ComputeUnits::CPUOnly,
                };
                let mut coreml = ep::CoreML::default()
                    .with_compute_units(units)
                    .with_model_format(ep::coreml::ModelFormat::MLProgram);
                if let Some(dir) = &self.options.coreml_cache_dir {
                    coreml = coreml.with_model_cache_dir(dir.display());
                }
                coreml.build()
            }
        })
    }
}

/// What really runs a created session: unit, runtime, file, weight precision and ORT's node placement (a note says
/// why when the placement cannot be read).
fn session_report(
    session: &ort::session::Session,
    unit: &Unit,
    rt: &Runtime,
    path: &Path,
    info: &onnx_info::OnnxInfo,
    hidden_size: usize,
    mut notes: Vec<String>,
) -> SessionReport {
    let placement = placement::read(session).unwrap_or_else(|e| {
        notes.push(format!("node placement unavailable: {e}"));
        vec![]
    });
    SessionReport {
        unit: *unit,
        runtime: format!("onnxruntime {}", rt.version),
        model_file: path.display().to_string(),
        precision: info.precision(),
        placement,
        hidden_size,
        notes,
        graph_cache: None,
    }
}

/// Which inputs the graph takes, in order, and their element type.
#[derive(Debug, Clone, Copy, PartialEq)]
enum InputKind {
    Ids,
    Mask,
    TypeIds,
}

/// A model loaded on one ONNX Runtime unit.
pub struct OrtSession {
    session: ort::session::Session,
    inputs: Vec<(InputKind, bool)>,
    output: usize,
    report: SessionReport,
    /// What the protobuf said (opsets, operator types), for diagnostics.
    pub info: onnx_info::OnnxInfo,
}

impl OrtSession {
    fn new(
        session: ort::session::Session,
        unit: &Unit,
        rt: &Runtime,
        path: &Path,
        info: onnx_info::OnnxInfo,
    ) -> Result<OrtSession, EngineError> {
        let unsupported = |reason: String| EngineError::Unsupported { unit: unit.to_string(), reason };
        let mut inputs = vec![];
        for outlet in session.inputs() {
            let kind = match outlet.name() {
                "input_ids" => InputKind::Ids,
                "attention_mask" => InputKind::Mask,
                "token_type_ids" => InputKind::TypeIds,
                other => {
                    return Err(unsupported(format!(
                        "{}: input `{other}` is not one of input_ids, attention_mask, token_type_ids, so this is \
                         not an embedding model; serve the .onnx file without a tokenizer beside it to call it \
                         with tensors (KServe v2 infer)",
                        path.display()
                    )))
                }
            };
            let is_i32 = outlet.dtype().tensor_type() == Some(ort::value::TensorElementType::Int32);
            inputs.push((kind, is_i32));
        }
        if !inputs.iter().any(|(k, _)| *k == InputKind::Ids) {
            return Err(unsupported(format!("{}: the graph has no input_ids input", path.display())));
        }
        let outputs = session.outputs();
        let rank = |i: usize| outputs[i].dtype().tensor_shape().map(|s| s.len());
        let is_float = |i: usize| outputs[i].dtype().tensor_type() == Some(ort::value::TensorElementType::Float32);
        // A cross-encoder's graph answers `logits` [batch, labels].
        let preferred = ["last_hidden_state", "token_embeddings", "sentence_embedding", "logits"];
        let output = preferred
            .iter()
            .find_map(|name| outputs.iter().position(|o| o.name() == *name))
            .or_else(|| (0..outputs.len()).find(|&i| is_float(i) && rank(i) == Some(3)))
            .or_else(|| (0..outputs.len()).find(|&i| is_float(i) && rank(i) == Some(2)))
            .ok_or_else(|| {
                unsupported(format!("{}: no float output of rank 3 (token states) or 2 (embeddings)", path.display()))
            })?;
        let hidden_size =
            outputs[output].dtype().tensor_shape().and_then(|s| s.last().copied()).filter(|&d| d > 0).unwrap_or(0)
                as usize;
        let notes = vec![format!("output `{}`", outputs[output].name())];
        let report = session_report(&session, unit, rt, path, &info, hidden_size, notes);
        Ok(OrtSession { session, inputs, output, report, info })
    }
}

impl Session for OrtSession {
    fn report(&self) -> &SessionReport {
        &self.report
    }

    fn forward(&mut self, batch: &TokenBatch) -> Result<Tensor, EngineError> {
        let unit = self.report.unit;
        let err = |e: ort::Error| EngineError::Inference { unit: unit.to_string(), reason: e.to_string() };
        let shape = [batch.batch, batch.seq];
        let as_i32 = |v: &[i64]| v.iter().map(|&x| x as i32).collect::<Vec<i32>>();
        let mut owned_i32: Vec<Vec<i32>> = vec![];
        for (kind, is_i32) in &self.inputs {
            if *is_i32 {
                owned_i32.push(as_i32(self.source(batch, *kind)));
            }
        }
        let mut values = Vec::with_capacity(self.inputs.len());
        let mut i32_iter = owned_i32.iter();
        for (kind, is_i32) in &self.inputs {
            let v: ort::session::SessionInputValue<'_> = if *is_i32 {
                let data = i32_iter.next().expect("one buffer per int32 input");
                TensorRef::from_array_view((shape, data.as_slice())).map_err(err)?.into()
            } else {
                TensorRef::from_array_view((shape, self.source(batch, *kind))).map_err(err)?.into()
            };
            values.push(v);
        }
        let outputs = self.session.run(values.as_slice()).map_err(err)?;
        let (out_shape, data) = outputs[self.output].try_extract_tensor::<f32>().map_err(err)?;
        let dims: Vec<usize> = out_shape.iter().map(|&d| d.max(0) as usize).collect();
        Tensor::new(dims, data.to_vec()).map_err(|reason| EngineError::Inference { unit: unit.to_string(), reason })
    }
}

impl OrtSession {
    fn source<'b>(&self, batch: &'b TokenBatch, kind: InputKind) -> &'b [i64] {
        match kind {
            InputKind::Ids => &batch.input_ids,
            InputKind::Mask => &batch.attention_mask,
            InputKind::TypeIds => &batch.token_type_ids,
        }
    }
}

/// The KServe type of an ONNX Runtime element type (`None`: not supported by bulkhead's tensor API).
fn datatype_of(t: ort::value::TensorElementType) -> Option<DataType> {
    use ort::value::TensorElementType as T;
    Some(match t {
        T::Float32 => DataType::Fp32,
        T::Float64 => DataType::Fp64,
        T::Int64 => DataType::Int64,
        T::Int32 => DataType::Int32,
        T::Int8 => DataType::Int8,
        T::Uint8 => DataType::Uint8,
        T::Bool => DataType::Bool,
        _ => return None,
    })
}

fn spec_of(outlet: &ort::value::Outlet) -> TensorSpec {
    let dtype = outlet.dtype();
    TensorSpec {
        name: outlet.name().to_string(),
        datatype: dtype.tensor_type().and_then(datatype_of),
        type_name: dtype.tensor_type().map_or_else(|| "not a tensor".to_string(), |t| format!("{t:?}").to_lowercase()),
        shape: dtype
            .tensor_shape()
            .map(|s| s.iter().map(|&d| if d < 0 { -1 } else { d }).collect())
            .unwrap_or_default(),
    }
}

/// Any ONNX model (no tokenizer) loaded on one ONNX Runtime unit: named tensors in, named tensors out.
pub struct OrtGraphSession {
    session: ort::session::Session,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    report: SessionReport,
}

impl OrtGraphSession {
    fn new(
        session: ort::session::Session,
        unit: &Unit,
        rt: &Runtime,
        path: &Path,
        info: &onnx_info::OnnxInfo,
    ) -> Result<OrtGraphSession, EngineError> {
        let inputs: Vec<TensorSpec> = session.inputs().iter().map(spec_of).collect();
        let outputs: Vec<TensorSpec> = session.outputs().iter().map(spec_of).collect();
        let unsupported: Vec<String> = inputs
            .iter()
            .chain(&outputs)
            .filter(|s| s.datatype.is_none())
            .map(|s| format!("`{}` ({})", s.name, s.type_name))
            .collect();
        if !unsupported.is_empty() {
            let supported: Vec<&str> = DataType::ALL.iter().map(|d| d.kserve_name()).collect();
            return Err(EngineError::Unsupported {
                unit: unit.to_string(),
                reason: format!(
                    "{}: {} of an element type bulkhead cannot exchange as JSON tensors (supported: {})",
                    path.display(),
                    unsupported.join(", "),
                    supported.join(", ")
                ),
            });
        }
        let notes = vec![format!(
            "tensor model: inputs {}; outputs {}",
            inputs.iter().map(|s| format!("{} {:?}", s.name, s.shape)).collect::<Vec<_>>().join(", "),
            outputs.iter().map(|s| format!("{} {:?}", s.name, s.shape)).collect::<Vec<_>>().join(", ")
        )];
        let report = session_report(&session, unit, rt, path, info, 0, notes);
        Ok(OrtGraphSession { session, inputs, outputs, report })
    }
}

impl GraphSession for OrtGraphSession {
    fn report(&self) -> &SessionReport {
        &self.report
    }

    fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    fn run(&mut self, inputs: &[NamedTensor]) -> Result<Vec<NamedTensor>, EngineError> {
        let unit = self.report.unit;
        let fail = |reason: String| EngineError::Inference { unit: unit.to_string(), reason };
        let err = |e: ort::Error| fail(e.to_string());
        for spec in &self.inputs {
            let t = inputs
                .iter()
                .find(|t| t.name == spec.name)
                .ok_or_else(|| fail(format!("missing input `{}`", spec.name)))?;
            spec.check(t).map_err(fail)?;
        }
        if let Some(extra) = inputs.iter().find(|t| !self.inputs.iter().any(|s| s.name == t.name)) {
            let names: Vec<&str> = self.inputs.iter().map(|s| s.name.as_str()).collect();
            return Err(fail(format!("the model has no input `{}` (its inputs: {})", extra.name, names.join(", "))));
        }
        let mut values: Vec<(&str, ort::session::SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
        for t in inputs {
            let shape = t.shape.clone();
            let v: ort::session::SessionInputValue<'_> = match &t.data {
                TensorData::F32(d) => TensorRef::from_array_view((shape, d.as_slice())).map_err(err)?.into(),
                TensorData::F64(d) => TensorRef::from_array_view((shape, d.as_slice())).map_err(err)?.into(),
                TensorData::I64(d) => TensorRef::from_array_view((shape, d.as_slice())).map_err(err)?.into(),
                TensorData::I32(d) => TensorRef::from_array_view((shape, d.as_slice())).map_err(err)?.into(),
                TensorData::I8(d) => TensorRef::from_array_view((shape, d.as_slice())).map_err(err)?.into(),
                TensorData::U8(d) => TensorRef::from_array_view((shape, d.as_slice())).map_err(err)?.into(),
                TensorData::Bool(d) => TensorRef::from_array_view((shape, d.as_slice())).map_err(err)?.into(),
            };
            values.push((t.name.as_str(), v));
        }
        let outputs = self.session.run(values).map_err(err)?;
        let mut out = Vec::with_capacity(self.outputs.len());
        for spec in &self.outputs {
            let value = outputs.get(&spec.name).ok_or_else(|| fail(format!("no output `{}`", spec.name)))?;
            let dtype = value.dtype().tensor_type().and_then(datatype_of);
            fn grab<T: ort::value::PrimitiveTensorElementType + Clone>(
                v: &ort::value::DynValue,
            ) -> Result<(Vec<usize>, Vec<T>), ort::Error> {
                let (shape, data) = v.try_extract_tensor::<T>()?;
                Ok((shape.iter().map(|&d| d.max(0) as usize).collect(), data.to_vec()))
            }
            let (shape, data) = match dtype {
                Some(DataType::Fp32) => grab::<f32>(value).map(|(s, d)| (s, TensorData::F32(d))),
                Some(DataType::Fp64) => grab::<f64>(value).map(|(s, d)| (s, TensorData::F64(d))),
                Some(DataType::Int64) => grab::<i64>(value).map(|(s, d)| (s, TensorData::I64(d))),
                Some(DataType::Int32) => grab::<i32>(value).map(|(s, d)| (s, TensorData::I32(d))),
                Some(DataType::Int8) => grab::<i8>(value).map(|(s, d)| (s, TensorData::I8(d))),
                Some(DataType::Uint8) => grab::<u8>(value).map(|(s, d)| (s, TensorData::U8(d))),
                Some(DataType::Bool) => grab::<bool>(value).map(|(s, d)| (s, TensorData::Bool(d))),
                None => return Err(fail(format!("output `{}` is not a tensor of a supported type", spec.name))),
            }
            .map_err(err)?;
            out.push(NamedTensor::new(spec.name.clone(), shape, data).map_err(fail)?);
        }
        Ok(out)
    }
}
