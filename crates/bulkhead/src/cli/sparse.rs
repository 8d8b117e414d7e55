//! `bulkhead embed --sparse`: sparse embeddings of a SPLADE model, in-process on the first working unit of the
//! chain, printed as `{index, value}` lists (indices ascending), as `POST /embed_sparse` answers them.

use std::io::Write;
use std::time::Instant;

use bulkhead_core::{Chain, ModelFiles, ModelTask};
use bulkhead_embed::{load_scorer_chain, Tokenizer, Truncation};
use serde_json::json;

use super::common::{engines, UsageError};

/// Embeds `texts` with the sparse model `model` and prints one JSON list per text (or, with `json`, one object:
/// model, unit, vocabulary size, the sparse embeddings, timing).
pub fn embed(model: &ModelFiles, chain: &Chain, texts: &[String], json: bool) -> anyhow::Result<()> {
    let ModelTask::SparseEmbedding(spec) = &model.task else {
        return Err(UsageError(format!(
            "{} is {}, not a sparse embedding model (SPLADE: a *ForMaskedLM folder with sentence-transformers' \
             SpladePooling); it serves {}: drop --sparse",
            model.name,
            model.task.noun(),
            model.task.routes()
        ))
        .into());
    };
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(UsageError(format!("text {i} is empty; every text must hold something")).into());
    }
    let t_start = Instant::now();
    let tokenizer = Tokenizer::load(model)?;
    let mut loaded = load_scorer_chain(&engines(), model, &tokenizer, chain)?;
    let load_ms = t_start.elapsed().as_secs_f64() * 1e3;
    let t0 = Instant::now();
    let singles: Vec<(&str, Option<&str>)> = texts.iter().map(|t| (t.as_str(), None)).collect();
    let encoded = tokenizer.encode_pairs(&singles, Truncation::Right)?;
    let tokenize_ms = t0.elapsed().as_secs_f64() * 1e3;
    let (pooled, timing) = loaded.scorer.score(&encoded.rows)?;
    let t1 = Instant::now();
    let vectors: Vec<_> = pooled.iter().map(|v| spec.sparsify(v)).collect();
    let post_ms = timing.post_ms + t1.elapsed().as_secs_f64() * 1e3;
    let unit = loaded.scorer.unit();
    let mut out = std::io::stdout().lock();
    if json {
        let obj = json!({
            "model": model.name,
            "unit": unit,
            "vocab_size": spec.vocab,
            "max_active_dims": spec.max_active_dims,
            "sparse_embeddings": vectors,
            "timing_ms": {"load": load_ms, "tokenize": tokenize_ms, "infer": timing.infer_ms, "post": post_ms},
            "skipped": loaded.skipped,
        });
        serde_json::to_writer(&mut out, &obj)?;
        writeln!(out)?;
    } else {
        for v in &vectors {
            serde_json::to_writer(&mut out, v)?;
            writeln!(out)?;
        }
        let active: Vec<usize> = vectors.iter().map(Vec::len).collect();
        eprintln!(
            "{} text(s) -> sparse over {} entries (active {active:?}) on {unit}: tokenize {tokenize_ms:.2} ms, infer \
             {:.2} ms, post {post_ms:.2} ms (load {load_ms:.0} ms)",
            vectors.len(),
            spec.vocab,
            timing.infer_ms
        );
    }
    Ok(())
}
