//! The candle engine: safetensors models in pure Rust, on candle-transformers' implementations of BERT
//! (all-MiniLM, bge, e5, gte-small), XLM-RoBERTa (bge-m3, multilingual-e5), ModernBERT, NomicBERT and Qwen3
//! (see `models`), and Whisper speech models (see `whisper`: our own layers on candle-nn, loaded by
//! [`Engine::load_whisper`] for `bulkhead-speech`'s decoding). An architecture candle cannot run exactly is refused
//! with the reason, so the chain moves on.
//!
//! Units: `candle:cpu`; `candle:cuda` and `candle:metal` behind the cargo features `cuda` and `metal` (the binary's
//! `candle-cuda` / `candle-metal`). Without the feature those units are `NotCompiled`, a different state from
//! `Unusable` (compiled in, but no device here).
//!
//! # Architecture invariants
//!
//! * **It builds with every cargo feature off** (it has no default feature, so every ordinary build is that build;
//!   checked by `crates/bulkhead-testkit/tests/invariants.rs`).
//! * **It computes what the model computes, or refuses:** an architecture, a configuration or a tokenizer it cannot
//!   run exactly is an `EngineError::Unsupported` or a load error with the reason, so the chain moves on instead of
//!   computing something else. Weights of any float type are widened to f32 when loaded; the session report keeps
//!   the stored precision (`bf16` weights say `bf16`).
#![deny(missing_docs)]

mod models;
mod whisper;

use std::path::Path;

use bulkhead_core::{
    Availability, Device as UnitDevice, Engine, EngineError, EngineKind, ModelFiles, Precision, Session, SessionReport,
    Tensor, TokenBatch, Unit, WhisperSession,
};
use candle_core::{DType, Device, Tensor as CTensor};
use candle_nn::VarBuilder;

pub use models::SUPPORTED_ARCHITECTURES;
pub use whisper::WHISPER_ARCHITECTURES;

/// The candle engine.
#[derive(Debug, Default)]
pub struct CandleEngine;

fn device(unit: &Unit) -> Result<Device, Availability> {
    match unit.device {
        UnitDevice::Cpu => Ok(Device::Cpu),
        #[cfg(feature = "cuda")]
        UnitDevice::Cuda => Device::new_cuda(0).map_err(|e| Availability::Unusable(format!("no CUDA device: {e}"))),
        #[cfg(not(feature = "cuda"))]
        UnitDevice::Cuda => Err(Availability::NotCompiled("rebuild with `--features candle-cuda`".into())),
        #[cfg(feature = "metal")]
        UnitDevice::Metal => Device::new_metal(0).map_err(|e| Availability::Unusable(format!("no Metal device: {e}"))),
        #[cfg(not(feature = "metal"))]
        UnitDevice::Metal => Err(Availability::NotCompiled("rebuild with `--features candle-metal`".into())),
        _ => Err(Availability::Unusable(format!("{unit} is not a candle unit"))),
    }
}

impl Engine for CandleEngine {
    fn runtime(&self, _unit: &Unit) -> String {
        "candle 0.11".to_string()
    }

    fn availability(&self, unit: &Unit) -> Availability {
        if unit.engine != EngineKind::Candle {
            return Availability::Unusable(format!("{unit} is not a candle unit"));
        }
        match device(unit) {
            Ok(_) => Availability::Usable,
            Err(a) => a,
        }
    }

    fn load(&self, model: &ModelFiles, unit: &Unit) -> Result<Box<dyn Session>, EngineError> {
        let u = unit.to_string();
        let rejected = |reason: String| EngineError::ModelRejected { unit: u.clone(), reason };
        let unsupported = |reason: String| EngineError::Unsupported { unit: u.clone(), reason };
        let device = device(unit).map_err(|a| match a {
            Availability::NotCompiled(reason) => EngineError::NotCompiled { unit: u.clone(), reason },
            Availability::Unusable(reason) => EngineError::Unusable { unit: u.clone(), reason },
            Availability::Usable => EngineError::Unusable { unit: u.clone(), reason: "no device".into() },
        })?;
        if model.task.is_cross_encoder() || model.task.is_sparse() {
            // Run without its head, a cross-encoder (or a SPLADE model) would answer token states that mean nothing.
            return Err(unsupported(format!(
                "{}: {} (`{}`): the candle engine runs no classification or SPLADE heads; an ort: unit runs it",
                model.source.display(),
                model.task.noun(),
                model.architecture.as_deref().unwrap_or("?")
            )));
        }
        if model.safetensors_shards.is_empty() {
            return Err(rejected(format!(
                "{}: the candle engine needs model.safetensors (this model has only ONNX; use an ort: unit)",
                model.source.display()
            )));
        }
        let config_path = model.config.as_ref().ok_or_else(|| {
            rejected(format!("{}: no config.json beside the weights; candle needs it", model.source.display()))
        })?;
        let text =
            std::fs::read_to_string(config_path).map_err(|e| rejected(format!("{}: {e}", config_path.display())))?;
        let config: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| rejected(format!("{}: not valid JSON: {e}", config_path.display())))?;
        let family = models::family(&config).map_err(|e| unsupported(format!("{}: {e}", config_path.display())))?;
        let mut names = vec![];
        let mut dtype = None;
        for shard in &model.safetensors_shards {
            let (d, n) = weights_header(shard).map_err(&rejected)?;
            dtype = dtype.or(Some(d));
            names.extend(n);
        }
        let (dtype, precision) = dtype.expect("at least one shard");
        check_tokenizer(model, &config, &names).map_err(&rejected)?;
        let weights = &model.safetensors_shards;
        // SAFETY: the files are memory-mapped read-only; bulkhead does not modify model files while serving them.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(weights, DType::F32, &device) }
            .map_err(|e| rejected(format!("{}: {}", weights[0].display(), models::first_line(&e))))?;
        let origin = model.safetensors_index.as_ref().unwrap_or(&weights[0]);
        let (net, hidden_size) = models::Model::load(family, &config, vb, &names).map_err(|e| match e {
            models::LoadError::Config(e) => rejected(format!("{} ({family}): {e}", config_path.display())),
            models::LoadError::Weights(e) => rejected(format!("{} ({family}): {e}", origin.display())),
        })?;
        let report = SessionReport {
            unit: *unit,
            runtime: "candle 0.11".into(),
            model_file: origin.display().to_string(),
            precision,
            placement: vec![],
            hidden_size,
            notes: vec![format!("{family}: weights {dtype:?}, computed in F32 on {unit}")],
            graph_cache: None,
        };
        Ok(Box::new(CandleSession { net, device, report }))
    }

    fn load_whisper(&self, model: &ModelFiles, unit: &Unit) -> Option<Result<Box<dyn WhisperSession>, EngineError>> {
        Some(load_whisper(model, unit))
    }
}

/// Loads a Whisper checkpoint (see `whisper`) on `unit`.
fn load_whisper(model: &ModelFiles, unit: &Unit) -> Result<Box<dyn WhisperSession>, EngineError> {
    let u = unit.to_string();
    let rejected = |reason: String| EngineError::ModelRejected { unit: u.clone(), reason };
    let device = device(unit).map_err(|a| match a {
        Availability::NotCompiled(reason) => EngineError::NotCompiled { unit: u.clone(), reason },
        Availability::Unusable(reason) => EngineError::Unusable { unit: u.clone(), reason },
        Availability::Usable => EngineError::Unusable { unit: u.clone(), reason: "no device".into() },
    })?;
    let config_path = model.config.as_ref().ok_or_else(|| {
        rejected(format!("{}: no config.json beside the weights; candle needs it", model.source.display()))
    })?;
    let text = std::fs::read_to_string(config_path).map_err(|e| rejected(format!("{}: {e}", config_path.display())))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| rejected(format!("{}: not valid JSON: {e}", config_path.display())))?;
    if !whisper::is_whisper(&json) {
        return Err(EngineError::Unsupported {
            unit: u.clone(),
            reason: format!(
                "{}: not a Whisper checkpoint; candle runs speech models of the architectures {}",
                config_path.display(),
                WHISPER_ARCHITECTURES.join(", ")
            ),
        });
    }
    let config = whisper::Config::from_json(&json).map_err(|e| rejected(format!("{}: {e}", config_path.display())))?;
    if model.safetensors_shards.is_empty() {
        return Err(rejected(format!(
            "{}: the candle engine needs model.safetensors (this model has only ONNX; use an ort: unit)",
            model.source.display()
        )));
    }
    let mut names = vec![];
    let mut dtype = None;
    for shard in &model.safetensors_shards {
        let (d, n) = weights_header(shard).map_err(&rejected)?;
        dtype = dtype.or(Some(d));
        names.extend(n);
    }
    let (dtype, precision) = dtype.expect("at least one shard");
    check_tokenizer(model, &json, &names).map_err(&rejected)?;
    let weights = &model.safetensors_shards;
    // SAFETY: the files are memory-mapped read-only; bulkhead does not modify model files while serving them.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(weights, DType::F32, &device) }
        .map_err(|e| rejected(format!("{}: {}", weights[0].display(), models::first_line(&e))))?;
    let origin = model.safetensors_index.as_ref().unwrap_or(&weights[0]);
    let prefixed = names.iter().any(|n| n == "model.encoder.conv1.weight");
    let report = SessionReport {
        unit: *unit,
        runtime: "candle 0.11".into(),
        model_file: origin.display().to_string(),
        precision,
        placement: vec![],
        hidden_size: 0,
        notes: vec![format!("whisper: weights {dtype:?}, computed in F32 on {unit}")],
        graph_cache: None,
    };
    let net = whisper::CandleWhisper::load(config, vb, prefixed, device, report)
        .map_err(|e| rejected(format!("{} (whisper): {}", origin.display(), models::first_line(&e))))?;
    Ok(Box::new(net))
}

/// A tokenizer with ids past the embedding table would index out of it: refuse the model, naming both.
fn check_tokenizer(model: &ModelFiles, config: &serde_json::Value, names: &[String]) -> Result<(), String> {
    let Some(tok) = &model.tokenizer else { return Ok(()) };
    let Ok(ids) = bulkhead_core::tokenizer_vocab_size(tok) else { return Ok(()) };
    let vocab = config.get("vocab_size").and_then(serde_json::Value::as_u64).unwrap_or(u64::MAX) as usize;
    let multiple =
        config.get("pad_vocab_size_multiple").and_then(serde_json::Value::as_u64).unwrap_or(1).max(1) as usize;
    let rows = vocab.div_ceil(multiple) * multiple;
    if ids > rows {
        let table = names
            .iter()
            .find(|n| {
                n.ends_with("word_embeddings.weight")
                    || n.ends_with("tok_embeddings.weight")
                    || n.ends_with("embed_tokens.weight")
            })
            .cloned()
            .unwrap_or_else(|| "the token embedding table".into());
        return Err(format!(
            "{}: the tokenizer has {ids} token ids but the embedding table `{table}` has {rows} rows; the tokenizer \
             does not belong to these weights",
            tok.display()
        ));
    }
    Ok(())
}

/// The stored dtype and the tensor names of a safetensors file (from its header), read before candle maps it.
fn weights_header(path: &Path) -> Result<((safetensors::Dtype, Precision), Vec<String>), String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let size = f.metadata().map_err(|e| format!("{}: {e}", path.display()))?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|_| format!("{}: not a safetensors file (shorter than 8 bytes)", path.display()))?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 || n + 8 > size {
        return Err(format!("{}: not a safetensors file (header length {n} does not fit the file)", path.display()));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| format!("{}: {e}", path.display()))?;
    let meta: safetensors::tensor::Metadata = serde_json::from_slice(&header)
        .map_err(|e| format!("{}: not a safetensors file (header: {e})", path.display()))?;
    let dtype =
        meta.tensors().values().next().map(|t| t.dtype).ok_or_else(|| format!("{}: no tensors", path.display()))?;
    let precision = match dtype {
        safetensors::Dtype::F32 | safetensors::Dtype::F64 => Precision::Fp32,
        safetensors::Dtype::F16 => Precision::Fp16,
        safetensors::Dtype::BF16 => Precision::Bf16,
        safetensors::Dtype::I8 | safetensors::Dtype::U8 => Precision::Int8,
        _ => Precision::Unknown,
    };
    Ok(((dtype, precision), meta.tensors().into_keys().collect()))
}

/// A model loaded on one candle device.
pub struct CandleSession {
    net: models::Model,
    device: Device,
    report: SessionReport,
}

impl Session for CandleSession {
    fn report(&self) -> &SessionReport {
        &self.report
    }

    fn forward(&mut self, batch: &TokenBatch) -> Result<Tensor, EngineError> {
        let err = |e: candle_core::Error| EngineError::Inference {
            unit: self.report.unit.to_string(),
            reason: models::first_line(&e),
        };
        let shape = (batch.batch, batch.seq);
        let ids = CTensor::from_slice(&batch.input_ids, shape, &self.device).map_err(err)?;
        let types = CTensor::from_slice(&batch.token_type_ids, shape, &self.device).map_err(err)?;
        let mask = CTensor::from_slice(&batch.attention_mask, shape, &self.device).map_err(err)?;
        let out = self.net.forward(&ids, &types, &mask).map_err(err)?;
        let dims = out.dims().to_vec();
        let data =
            out.flatten_all().and_then(|t| t.to_dtype(DType::F32)).and_then(|t| t.to_vec1::<f32>()).map_err(err)?;
        Tensor::new(dims, data).map_err(|reason| EngineError::Inference { unit: self.report.unit.to_string(), reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_distinguishes_not_compiled_from_usable() {
        let e = CandleEngine;
        assert_eq!(e.availability(&Unit::CANDLE_CPU), Availability::Usable);
        let cuda: Unit = "candle:cuda".parse().unwrap();
        if !cfg!(feature = "cuda") {
            assert!(matches!(e.availability(&cuda), Availability::NotCompiled(r) if r.contains("candle-cuda")));
        }
        assert!(matches!(e.availability(&Unit::ORT_CPU), Availability::Unusable(_)));
    }

    #[test]
    fn rejects_foreign_architectures_and_broken_weights() {
        let dir = std::env::temp_dir().join(format!("bulkhead-candle-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama"}"#)
            .unwrap();
        std::fs::write(dir.join("model.safetensors"), vec![7u8; 4096]).unwrap();
        let model = ModelFiles::open(&dir).unwrap();
        let err = CandleEngine.load(&model, &Unit::CANDLE_CPU).err().unwrap().to_string();
        assert!(err.contains("LlamaForCausalLM") && err.contains("not supported"), "{err}");
        let bert = r#"{"architectures":["BertModel"],"model_type":"bert","vocab_size":30522,"hidden_size":384,
            "num_hidden_layers":6,"num_attention_heads":12,"intermediate_size":1536,"hidden_act":"gelu",
            "hidden_dropout_prob":0.1,"attention_probs_dropout_prob":0.1,"initializer_range":0.02,
            "max_position_embeddings":512,"type_vocab_size":2,"layer_norm_eps":1e-12,"pad_token_id":0,
            "position_embedding_type":"absolute","use_cache":true}"#;
        std::fs::write(dir.join("config.json"), bert).unwrap();
        let model = ModelFiles::open(&dir).unwrap();
        let err = CandleEngine.load(&model, &Unit::CANDLE_CPU).err().unwrap().to_string();
        assert!(err.contains("model.safetensors") && err.contains("not a safetensors file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
