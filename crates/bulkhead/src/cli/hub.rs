//! `--model` as every subcommand takes it: a path that exists is a path; otherwise `ORG/NAME[@REVISION]` is a
//! Hugging Face hub repository, found in (or downloaded into) the cache `huggingface_hub` shares.
//!
//! Which weights are downloaded depends on the engines that will run them ([`Weights`]): `candle:` units run
//! safetensors; `ort:` units run the repository's ONNX graph, or the graph `bulkhead-graph` builds from safetensors
//! when it knows the architecture (then the ONNX file is not fetched at all). A chain's fallback units get their
//! weights too, so that a fallback never needs the network.

use std::path::{Path, PathBuf};

use bulkhead_core::{Chain, EngineKind};
use bulkhead_hub::{Formats, Hub, HubConfig, ModelRef, Snapshot, WeightsContext};
use serde_json::Value;

use super::download_progress::Reporter;

/// What will consume the model's weights.
#[derive(Debug, Clone, Copy)]
pub enum Weights<'a> {
    /// The units of a chain.
    Chain(&'a Chain),
    /// The ONNX graph builder (`bulkhead export`): safetensors.
    GraphBuilder,
}

impl Weights<'_> {
    /// The formats to fetch from a repository with what `ctx` describes.
    pub fn formats(&self, ctx: &WeightsContext<'_>) -> Formats {
        let chain = match self {
            Weights::GraphBuilder => return Formats { safetensors: true, onnx: false },
            Weights::Chain(c) => c,
        };
        let has = |k: EngineKind| chain.units().iter().any(|u| u.engine == k);
        let (ort, candle) = (has(EngineKind::Ort), has(EngineKind::Candle));
        let builder_knows = ctx.config.is_some_and(graph_builder_knows);
        Formats { safetensors: candle || (ort && builder_knows), onnx: ort && (!builder_knows || !ctx.has_safetensors) }
    }
}

/// Whether `bulkhead-graph` builds an ONNX graph for this `config.json`.
fn graph_builder_knows(config: &Value) -> bool {
    match config.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str) {
        Some(a) => bulkhead_graph::supported_architectures().contains(&a),
        None => config.get("model_type").and_then(Value::as_str) == Some("bert"),
    }
}

/// Where `--model TEXT` is.
pub enum Located {
    /// A file or folder on disk (or a path that does not exist: opening it says so).
    Path(PathBuf),
    /// A hub repository's snapshot.
    Hub(Snapshot),
}

/// Resolves `--model TEXT`: a path that exists, else a hub id (downloaded unless cached or offline), else a path
/// (whose opening reports it missing).
pub fn locate(text: &str, weights: Weights<'_>) -> anyhow::Result<Located> {
    let path = Path::new(text);
    if path.exists() || looks_like_path(text) {
        return Ok(Located::Path(path.to_path_buf()));
    }
    let model = match ModelRef::parse(text) {
        Ok(m) => m,
        Err(e) => anyhow::bail!("{text}: no such file or folder, and {}", e.kind),
    };
    Ok(Located::Hub(fetch(&model, weights)?))
}

/// The snapshot of `model` with the weights `weights` needs, drawing progress on stderr.
pub fn fetch(model: &ModelRef, weights: Weights<'_>) -> anyhow::Result<Snapshot> {
    let hub = Hub::new(HubConfig::from_env());
    let reporter = Reporter::new(hub.config().cache_dir.clone());
    let choose = |ctx: &WeightsContext<'_>| weights.formats(ctx);
    let snapshot = hub.snapshot(model, &choose, &reporter)?;
    tracing::debug!("{}: snapshot {} ({} files)", model.display(), snapshot.dir.display(), snapshot.files.len());
    Ok(snapshot)
}

/// Paths that are never hub ids: absolute or explicitly relative, home-relative, or an `.onnx` file.
fn looks_like_path(text: &str) -> bool {
    text.starts_with(['/', '.', '~']) || text.ends_with(".onnx") || text.contains('\\')
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_core::Platform;
    use serde_json::json;

    fn formats(chain: &str, has_st: bool, has_onnx: bool, config: Value) -> Formats {
        let chain = Chain::parse(chain, &Platform::detect()).unwrap();
        let ctx = WeightsContext { has_safetensors: has_st, has_onnx, config: Some(&config) };
        Weights::Chain(&chain).formats(&ctx)
    }

    #[test]
    fn one_weight_format_serves_the_whole_chain_when_it_can() {
        let bert = json!({"architectures": ["BertModel"], "model_type": "bert"});
        // An architecture the graph builder does not know.
        let other = json!({"architectures": ["DebertaV2Model"], "model_type": "deberta-v2"});
        let st = Formats { safetensors: true, onnx: false };
        let onnx = Formats { safetensors: false, onnx: true };
        let both = Formats { safetensors: true, onnx: true };
        assert_eq!(formats("ort:cpu,candle:cpu", true, true, bert.clone()), st);
        assert_eq!(formats("ort:cpu", true, true, bert.clone()), st);
        // Without safetensors in the repository, ort takes its ONNX graph (asking for safetensors there is moot).
        assert!(formats("ort:cpu", false, true, bert.clone()).onnx);
        assert_eq!(formats("ort:cpu", true, true, other.clone()), onnx);
        assert_eq!(formats("ort:cpu,candle:cpu", true, true, other), both);
        assert_eq!(formats("candle:cpu", true, true, bert), st);
        assert!(
            Weights::GraphBuilder
                .formats(&WeightsContext { has_safetensors: true, has_onnx: true, config: None })
                .safetensors
        );
    }

    #[test]
    fn paths_are_never_ids() {
        for p in ["/m/x", "./m/x", "../x/y", "~/x/y", "x/model.onnx"] {
            assert!(looks_like_path(p), "{p}");
        }
        assert!(!looks_like_path("BAAI/bge-small-en-v1.5"));
    }
}
