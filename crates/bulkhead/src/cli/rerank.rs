//! `bulkhead rerank` and `bulkhead classify`: run a cross-encoder in-process on the first working unit of the chain
//! and print the scores, as the server's `/rerank` and `/predict` compute them.

use std::io::Write;
use std::time::Instant;

use bulkhead_core::{ModelFiles, ModelTask};
use bulkhead_embed::{load_scorer_chain, LoadedScorer, Tokenizer, Truncation};
use serde_json::json;

use super::common::{engines, ModelArgs, UsageError};

/// Arguments of `bulkhead rerank`.
#[derive(Debug, clap::Args)]
pub struct RerankArgs {
    // The reranker: `--model` is needed in practice, the default model being an embedding model.
    #[command(flatten)]
    model: ModelArgs,
    /// Print the logits instead of the scores.
    #[arg(long)]
    raw_scores: bool,
    /// Print one JSON object: model, unit, results (index, score, text; best first), timing_ms.
    #[arg(long)]
    json: bool,
    /// The query.
    query: String,
    /// The documents to rank against it.
    #[arg(required = true)]
    documents: Vec<String>,
}

/// Arguments of `bulkhead classify`.
#[derive(Debug, clap::Args)]
pub struct ClassifyArgs {
    // The classifier: `--model` is needed in practice, the default model being an embedding model.
    #[command(flatten)]
    model: ModelArgs,
    /// Classify each TEXT together with this second text (a pair, as natural language inference takes).
    #[arg(long, value_name = "TEXT")]
    pair: Option<String>,
    /// Print the logits instead of the probabilities.
    #[arg(long)]
    raw_scores: bool,
    /// Print one JSON object: model, unit, predictions (per text: every label and score, best first), timing_ms.
    #[arg(long)]
    json: bool,
    /// The texts to classify.
    #[arg(required = true)]
    texts: Vec<String>,
}

/// A loaded cross-encoder and what it took.
struct Loaded {
    model: ModelFiles,
    tokenizer: Tokenizer,
    chain: LoadedScorer,
    load_ms: f64,
}

fn load(args: &ModelArgs, command: &str, wanted: fn(&ModelTask) -> bool) -> anyhow::Result<Loaded> {
    let t0 = Instant::now();
    let files = args.open()?;
    if !wanted(&files.task) {
        let other = match files.task {
            ModelTask::Embedding | ModelTask::ImageText => "bulkhead embed",
            ModelTask::Rerank { .. } => "bulkhead rerank",
            ModelTask::Classify { .. } => "bulkhead classify",
            ModelTask::Segmentation => "bulkhead segment",
            ModelTask::SpeechToText => "bulkhead transcribe",
            ModelTask::SparseEmbedding(_) => "bulkhead embed --sparse",
        };
        return Err(UsageError(format!(
            "{} is {}, not what `bulkhead {command}` runs; use `{other}`, or give --model a {}",
            files.name,
            files.task.noun(),
            if command == "rerank" {
                "reranker (a *ForSequenceClassification model with one label)"
            } else {
                "classifier (a *ForSequenceClassification model with several labels)"
            }
        ))
        .into());
    }
    let tokenizer = Tokenizer::load(&files)?;
    let loaded = load_scorer_chain(&engines(), &files, &tokenizer, args.chain())?;
    Ok(Loaded { model: files, tokenizer, chain: loaded, load_ms: t0.elapsed().as_secs_f64() * 1e3 })
}

/// Tokenizes and scores `pairs`: the logits of each, and the tokenize and infer milliseconds.
fn run_pairs(l: &mut Loaded, pairs: &[(&str, Option<&str>)]) -> anyhow::Result<(Vec<Vec<f32>>, f64, f64)> {
    if let Some(i) = pairs.iter().position(|(a, b)| a.trim().is_empty() || b.is_some_and(|b| b.trim().is_empty())) {
        return Err(UsageError(format!("text {i} is empty; every text must hold something")).into());
    }
    let t0 = Instant::now();
    let encoded = l.tokenizer.encode_pairs(pairs, Truncation::Right)?;
    let tokenize_ms = t0.elapsed().as_secs_f64() * 1e3;
    let (logits, timing) = l.chain.scorer.score(&encoded.rows)?;
    Ok((logits, tokenize_ms, timing.infer_ms))
}

fn best_first(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

impl RerankArgs {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        let mut l = load(&self.model, "rerank", |t| matches!(t, ModelTask::Rerank { .. }))?;
        let pairs: Vec<(&str, Option<&str>)> =
            self.documents.iter().map(|d| (self.query.as_str(), Some(d.as_str()))).collect();
        let (logits, tokenize_ms, infer_ms) = run_pairs(&mut l, &pairs)?;
        let scores: Vec<f32> =
            logits.iter().map(|x| if self.raw_scores { x[0] } else { l.model.task.scores(x)[0] }).collect();
        let order = best_first(&scores);
        let unit = l.chain.scorer.unit();
        let mut out = std::io::stdout().lock();
        if self.json {
            let results: Vec<_> =
                order.iter().map(|&i| json!({"index": i, "score": scores[i], "text": self.documents[i]})).collect();
            let obj = json!({
                "model": l.model.name, "unit": unit, "results": results,
                "timing_ms": {"load": l.load_ms, "tokenize": tokenize_ms, "infer": infer_ms},
                "skipped": l.chain.skipped,
            });
            serde_json::to_writer(&mut out, &obj)?;
            writeln!(out)?;
        } else {
            for &i in &order {
                writeln!(out, "{:>10.6}  [{i}] {}", scores[i], self.documents[i])?;
            }
            eprintln!(
                "{} document(s) ranked on {unit}: infer {infer_ms:.2} ms (load {:.0} ms)",
                scores.len(),
                l.load_ms
            );
        }
        Ok(())
    }
}

impl ClassifyArgs {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        let mut l = load(&self.model, "classify", |t| matches!(t, ModelTask::Classify { .. }))?;
        let ModelTask::Classify { labels } = l.model.task.clone() else { unreachable!("checked by load") };
        let pairs: Vec<(&str, Option<&str>)> = self.texts.iter().map(|t| (t.as_str(), self.pair.as_deref())).collect();
        let (logits, tokenize_ms, infer_ms) = run_pairs(&mut l, &pairs)?;
        let unit = l.chain.scorer.unit();
        let predictions: Vec<Vec<(String, f32)>> = logits
            .iter()
            .map(|x| {
                let s = if self.raw_scores { x.clone() } else { l.model.task.scores(x) };
                best_first(&s).into_iter().map(|i| (labels[i].clone(), s[i])).collect()
            })
            .collect();
        let mut out = std::io::stdout().lock();
        if self.json {
            let predictions: Vec<Vec<_>> = predictions
                .iter()
                .map(|p| p.iter().map(|(label, score)| json!({"label": label, "score": score})).collect())
                .collect();
            let obj = json!({
                "model": l.model.name, "unit": unit, "predictions": predictions,
                "timing_ms": {"load": l.load_ms, "tokenize": tokenize_ms, "infer": infer_ms},
                "skipped": l.chain.skipped,
            });
            serde_json::to_writer(&mut out, &obj)?;
            writeln!(out)?;
        } else {
            for (text, p) in self.texts.iter().zip(&predictions) {
                let labels: Vec<String> = p.iter().map(|(l, s)| format!("{l} {s:.6}")).collect();
                writeln!(out, "{}\t{text}", labels.join(", "))?;
            }
            eprintln!(
                "{} text(s) classified on {unit}: infer {infer_ms:.2} ms (load {:.0} ms)",
                self.texts.len(),
                l.load_ms
            );
        }
        Ok(())
    }
}
