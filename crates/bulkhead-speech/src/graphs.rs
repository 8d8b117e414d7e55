//! Whisper as three ONNX graphs (encoder, cross-attention keys and values, decoder step) built by
//! `bulkhead-graph` and loaded as [`GraphSession`]s of an engine's [`Engine::load_graph`]: the
//! [`WhisperSession`] of the engines without a Whisper of their own (ONNX Runtime's).

use std::path::Path;

use bulkhead_core::{
    Engine, EngineError, GraphSession, ModelFiles, NamedTensor, SessionReport, Tensor, TensorData, Unit, WhisperSession,
};
use bulkhead_graph::whisper::{self, WhisperConfig, WhisperGraphs};
use bulkhead_graph::BuildOptions;

use crate::SpeechError;

/// The three graph sessions and the decoder's inputs, kept between steps so that the cross-attention keys and
/// values are never copied and each step's present keys and values become the next step's past ones without a copy.
pub(crate) struct GraphWhisper {
    config: WhisperConfig,
    encoder: Box<dyn GraphSession>,
    cross_kv: Box<dyn GraphSession>,
    decoder: Box<dyn GraphSession>,
    /// `input_ids`, then `past_key.{l}`, `past_value.{l}` per layer, then `cross_key.{l}`, `cross_value.{l}`.
    inputs: Vec<NamedTensor>,
}

impl GraphWhisper {
    /// Builds (or finds in `cache_dir`) the graphs of `model` and loads them on `unit` of `engine`.
    pub fn load(
        model: &ModelFiles,
        config: &WhisperConfig,
        engine: &dyn Engine,
        unit: &Unit,
        cache_dir: &Path,
    ) -> Result<(GraphWhisper, WhisperGraphs), SpeechError> {
        let graphs = whisper::build_whisper_cached(model, &BuildOptions::default(), cache_dir)?;
        let load = |path: &Path| -> Result<Box<dyn GraphSession>, SpeechError> {
            Ok(engine.load_graph(&ModelFiles::open(path)?, unit)?)
        };
        let session = GraphWhisper {
            config: config.clone(),
            encoder: load(&graphs.encoder.path)?,
            cross_kv: load(&graphs.cross_kv.path)?,
            decoder: load(&graphs.decoder.path)?,
            inputs: vec![],
        };
        Ok((session, graphs))
    }

    fn error(&self, reason: String) -> EngineError {
        EngineError::Inference { unit: self.decoder.report().unit.to_string(), reason }
    }

    fn missing(&self, name: &str) -> EngineError {
        self.error(format!("the graph has no output `{name}`; rebuild it (clear bulkhead's graph cache)"))
    }
}

impl WhisperSession for GraphWhisper {
    fn report(&self) -> &SessionReport {
        self.decoder.report()
    }

    fn encoder_report(&self) -> &SessionReport {
        self.encoder.report()
    }

    fn encode(&mut self, features: &Tensor) -> Result<Tensor, EngineError> {
        let mut shape = vec![1];
        shape.extend_from_slice(&features.shape);
        let input = NamedTensor::new("input_features", shape, TensorData::F32(features.data.clone()))
            .map_err(|e| self.error(e))?;
        let out = self.encoder.run(&[input])?;
        let (shape, data) = take_f32(out, "last_hidden_state").map_err(|e| self.error(e))?;
        Tensor::new(shape[1..].to_vec(), data).map_err(|e| self.error(e))
    }

    fn start(&mut self, encoded: &Tensor) -> Result<(), EngineError> {
        let mut shape = vec![1];
        shape.extend_from_slice(&encoded.shape);
        let hidden = NamedTensor::new("encoder_hidden_states", shape, TensorData::F32(encoded.data.clone()))
            .map_err(|e| self.error(e))?;
        let cross = self.cross_kv.run(&[hidden])?;
        let (heads, d) = (self.config.decoder_heads, self.config.decoder_head_dim());
        let mut inputs =
            vec![NamedTensor { name: "input_ids".into(), shape: vec![1, 0], data: TensorData::I64(vec![]) }];
        for l in 0..self.config.decoder_layers {
            for kind in ["key", "value"] {
                inputs.push(NamedTensor {
                    name: format!("past_{kind}.{l}"),
                    shape: vec![1, heads, 0, d],
                    data: TensorData::F32(vec![]),
                });
            }
        }
        for l in 0..self.config.decoder_layers {
            for kind in ["key", "value"] {
                let name = format!("cross_{kind}.{l}");
                let t = cross.iter().find(|t| t.name == name).ok_or_else(|| self.missing(&name))?;
                inputs.push(t.clone());
            }
        }
        self.inputs = inputs;
        Ok(())
    }

    fn step(&mut self, ids: &[i64]) -> Result<Vec<f32>, EngineError> {
        if self.inputs.is_empty() {
            return Err(self.error("a decoding step before the decoding started".into()));
        }
        self.inputs[0] =
            NamedTensor { name: "input_ids".into(), shape: vec![1, ids.len()], data: TensorData::I64(ids.to_vec()) };
        let mut out = self.decoder.run(&self.inputs)?;
        for l in 0..self.config.decoder_layers {
            for (k, kind) in ["key", "value"].into_iter().enumerate() {
                let name = format!("present_{kind}.{l}");
                let i = out.iter().position(|t| t.name == name).ok_or_else(|| self.missing(&name))?;
                let present = std::mem::replace(&mut out[i].data, TensorData::F32(vec![]));
                let slot = &mut self.inputs[1 + 2 * l + k];
                slot.shape = out[i].shape.clone();
                slot.data = present;
            }
        }
        let (_, logits) = take_f32(out, "logits").map_err(|e| self.error(e))?;
        Ok(logits)
    }
}

/// The float output `name`: its shape and values.
fn take_f32(out: Vec<NamedTensor>, name: &str) -> Result<(Vec<usize>, Vec<f32>), String> {
    let t = out
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| format!("the graph has no output `{name}`; rebuild it (clear bulkhead's graph cache)"))?;
    match t.data {
        TensorData::F32(v) => Ok((t.shape, v)),
        _ => Err(format!("output `{name}` is not float32")),
    }
}
