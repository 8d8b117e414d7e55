//! Measuring a graph against the float32 one: embeddings through bulkhead's own pipeline (tokenizer, ONNX Runtime
//! CPU session, the model's pooling and normalisation), cosine per text, top-k nearest-neighbour agreement, and
//! the calibration probe (largest activation per input channel of each linear layer).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bulkhead_core::stats::{cosine, mean, min};
use bulkhead_core::{Engine, ModelFiles, TokenBatch, Unit};
use bulkhead_embed::{Embedder, Tokenizer};
use bulkhead_graph::{BuildOptions, Variant};
use bulkhead_ort::{OrtEngine, OrtOptions};

use crate::QuantizeError;

pub use bulkhead_core::quantized::Accuracy;

/// The `k` nearest other texts of text `i` by cosine.
fn neighbours(set: &[Vec<f32>], i: usize, k: usize) -> Vec<usize> {
    let mut scored: Vec<(f64, usize)> =
        (0..set.len()).filter(|&j| j != i).map(|j| (cosine(&set[i], &set[j]), j)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(k).map(|(_, j)| j).collect()
}

/// Compares `got` with the float32 `want`, text by text.
pub fn compare(got: &[Vec<f32>], want: &[Vec<f32>]) -> Accuracy {
    let cos: Vec<f64> = got.iter().zip(want).map(|(g, w)| cosine(g, w)).collect();
    let k = 10.min(want.len().saturating_sub(1));
    let overlap = if k == 0 {
        1.0
    } else {
        let shared = |i: usize| {
            let a = neighbours(want, i, k);
            neighbours(got, i, k).iter().filter(|j| a.contains(j)).count()
        };
        (0..want.len()).map(shared).sum::<usize>() as f64 / (k * want.len()) as f64
    };
    Accuracy { min_cosine: min(&cos), mean_cosine: mean(&cos), top10_overlap: overlap }
}

/// Builds graph variants of one model and embeds token rows with them on ONNX Runtime CPU.
pub struct Evaluator {
    model: ModelFiles,
    opts: BuildOptions,
    engine: OrtEngine,
    unit: Unit,
    cache: tempfile::TempDir,
    /// Rows per forward pass (activations are quantized per tensor, i.e. over the whole batch).
    pub batch: usize,
    tokenizer: Tokenizer,
}

impl Evaluator {
    /// Opens the model (a folder the graph builder supports) with a scratch cache for trial graphs.
    pub fn new(model: &ModelFiles, batch: usize, threads: usize) -> Result<Evaluator, QuantizeError> {
        if model.safetensors_shards.is_empty() {
            return Err(QuantizeError::Model(format!(
                "{}: no safetensors weights; `bulkhead quantize` builds int8 graphs from a Hugging Face folder \
                 (config.json + model.safetensors) that the graph builder supports",
                model.source.display()
            )));
        }
        let mut model = model.clone();
        // Trial graphs are given as files; the float graph too (built by the same builder).
        model.onnx = None;
        let tokenizer = Tokenizer::load(&model).map_err(|e| QuantizeError::Model(e.to_string()))?;
        let cache = tempfile::Builder::new()
            .prefix("bulkhead-quantize-")
            .tempdir()
            .map_err(|e| QuantizeError::Io { path: std::env::temp_dir(), source: e })?;
        Ok(Evaluator {
            model,
            opts: BuildOptions::default(),
            engine: OrtEngine::new(OrtOptions { intra_threads: threads, coreml_cache_dir: None }),
            unit: "ort:cpu".parse().map_err(|e| QuantizeError::Model(format!("{e}")))?,
            cache,
            batch: batch.max(1),
            tokenizer,
        })
    }

    /// The model.
    pub fn model(&self) -> &ModelFiles {
        &self.model
    }

    /// Token rows of `texts` (truncated at the model's length, as served).
    pub fn tokenize(&self, texts: &[String]) -> Result<Vec<Vec<i64>>, QuantizeError> {
        self.tokenizer.encode(texts).map_err(|e| QuantizeError::Model(e.to_string()))
    }

    /// Writes the graph `variant` into the scratch cache (weights hard-linked, int8 weights embedded).
    pub fn graph(&self, variant: Variant<'_>) -> Result<PathBuf, QuantizeError> {
        Ok(bulkhead_graph::build_cached_variant(&self.model, &self.opts, variant, self.cache.path())?.path)
    }

    /// Loads `graph` as the model's embedding session.
    pub fn embedder(&self, graph: &Path) -> Result<Embedder, QuantizeError> {
        let mut m = self.model.clone();
        m.onnx = Some(graph.to_path_buf());
        let session = self.engine.load(&m, &self.unit).map_err(|e| QuantizeError::Runtime(e.to_string()))?;
        Ok(Embedder::new(&m, session))
    }

    /// Embeddings of `rows` by the graph `variant`, `batch` rows at a time (see [`embed_rows`]).
    pub fn embed(&self, variant: Variant<'_>, rows: &[Vec<i64>]) -> Result<Vec<Vec<f32>>, QuantizeError> {
        let mut e = self.embedder(&self.graph(variant)?)?;
        embed_rows(&mut e, rows, self.batch)
    }

    /// The largest magnitude per input channel of every linear layer's input over `rows`, keyed by the first layer
    /// reading it (see [`bulkhead_graph::quant::probe_name`]).
    pub fn activation_absmax(&self, rows: &[Vec<i64>]) -> Result<BTreeMap<String, Vec<f32>>, QuantizeError> {
        let path = self.graph(Variant::Probe)?;
        let rt = bulkhead_ort::runtime().map_err(QuantizeError::Runtime)?;
        let err = |e: ort::Error| QuantizeError::Runtime(format!("calibration probe: {e}"));
        let mut session = ort::session::Session::builder(&rt.env)
            .map_err(err)?
            .commit_from_file(&path)
            .map_err(|e| QuantizeError::Runtime(format!("calibration probe: {e}")))?;
        let inputs: Vec<String> = session.inputs().iter().map(|i| i.name().to_string()).collect();
        let mut out: BTreeMap<String, Vec<f32>> = BTreeMap::new();
        for chunk in rows.chunks(self.batch) {
            let b = TokenBatch::from_rows(chunk, self.model.pad_token_id, None);
            let shape = [b.batch, b.seq];
            let mut values: Vec<(String, ort::session::SessionInputValue<'_>)> = vec![];
            for name in &inputs {
                let data = match name.as_str() {
                    "input_ids" => &b.input_ids,
                    "attention_mask" => &b.attention_mask,
                    _ => &b.token_type_ids,
                };
                let v = ort::value::TensorRef::from_array_view((shape, data.as_slice())).map_err(err)?;
                values.push((name.clone(), v.into()));
            }
            let results = session.run(values).map_err(err)?;
            for (name, value) in results.iter() {
                let Some(layer) = name.strip_prefix("absmax:") else { continue };
                let (_, data) = value.try_extract_tensor::<f32>().map_err(err)?;
                let acc = out.entry(layer.to_string()).or_insert_with(|| vec![0.0; data.len()]);
                acc.iter_mut().zip(data).for_each(|(a, v)| *a = a.max(*v));
            }
        }
        Ok(out)
    }
}

/// Embeds `rows` with `e`, `batch` rows per forward pass, in the given order of rows.
///
/// Rows are batched by length (as a server's batches of similar requests are), which keeps padding, and the time
/// of the search, low; the order of the result is the order of `rows`.
pub fn embed_rows(e: &mut Embedder, rows: &[Vec<i64>], batch: usize) -> Result<Vec<Vec<f32>>, QuantizeError> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| (rows[i].len(), i));
    let mut out = vec![vec![]; rows.len()];
    for idx in order.chunks(batch.max(1)) {
        let chunk: Vec<Vec<i64>> = idx.iter().map(|&i| rows[i].clone()).collect();
        let (v, _) = e.embed_tokens(&chunk).map_err(|e| QuantizeError::Runtime(e.to_string()))?;
        for (&i, v) in idx.iter().zip(v) {
            out[i] = v;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_counts_cosines_and_neighbours() {
        let want: Vec<Vec<f32>> = (0..12).map(|i| vec![1.0, i as f32, (i * i) as f32 * 0.1]).collect();
        let same = compare(&want, &want);
        assert_eq!((same.min_cosine.min(1.0) > 0.999_999, same.mean_cosine > 0.999_999), (true, true));
        assert_eq!(same.top10_overlap, 1.0);
        let mut got = want.clone();
        got[3] = vec![-1.0, 0.0, 0.0];
        let a = compare(&got, &want);
        assert!(a.min_cosine < 0.0 && a.mean_cosine < 1.0 && a.top10_overlap < 1.0, "{a:?}");
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }
}
