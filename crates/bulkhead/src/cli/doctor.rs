//! `bulkhead doctor`: the command line of the `bulkhead-doctor` crate, which walks the diagnosis tree
//! (docs/doctor.md) for a model on every unit of the chain, by measuring. This module turns the options into a
//! `bulkhead_doctor::Options`, opens the models, and prints the report as tables, `--json` (schema
//! `bulkhead.doctor/1`) or `--html FILE`. A speech-to-text model is measured on a synthetic clip, a segmentation
//! model on a synthetic image (the library decides from the model's task).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bulkhead_core::ModelTask;
use bulkhead_doctor::render::{html, json, terminal};
use bulkhead_doctor::{Limits, Options, Report};
use bulkhead_embed::Tokenizer;

use super::common::{engines, open_model, require_text_model, MemoryArgs, ModelArgs, UsageError};

/// Predictions of the memory run when `--predictions` is not given.
const PREDICTIONS: usize = 300;
/// ... for a speech-to-text model: transcriptions of a few seconds of audio each.
const SPEECH_PREDICTIONS: usize = 24;

/// Arguments of `bulkhead doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    memory: MemoryArgs,
    /// Print the report as one JSON object (schema `bulkhead.doctor/1`, see docs/doctor.md) instead of tables.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML page with the tables and charts to FILE.
    #[arg(long, env = "BULKHEAD_HTML", value_name = "FILE")]
    html: Option<PathBuf>,
    /// Predictions of the memory run (resident memory after each one) [default: 300; a speech-to-text model: 24
    /// transcriptions; a segmentation model: 300 clicks].
    #[arg(long, env = "BULKHEAD_PREDICTIONS")]
    predictions: Option<usize>,
    /// Timed predictions per batch size (after a first, untimed one); for a segmentation model, new images through
    /// the image encoder.
    #[arg(long, env = "BULKHEAD_ITERATIONS", default_value_t = 20)]
    iterations: usize,
    /// Batch sizes of the latency and throughput table (text models).
    #[arg(long, env = "BULKHEAD_BATCH_SIZES", default_value = "1,8,32", value_delimiter = ',')]
    batch_sizes: Vec<usize>,
    /// Input lengths (tokens, batch 1) of the dynamic-shape sweep (text models); lengths above the model's maximum
    /// are dropped.
    #[arg(long, env = "BULKHEAD_SEQ_LENGTHS", default_value = "8,16,32,64,128,256,512", value_delimiter = ',')]
    seq_lengths: Vec<usize>,
    /// Resident-memory growth allowed before a worker should be recycled (for the recycle recommendation).
    #[arg(long, env = "BULKHEAD_MEMORY_BUDGET_MB", default_value_t = 256)]
    memory_budget_mb: u64,
    /// An fp32 model to compare outputs with when no unit of the chain runs fp32 weights (e.g. the original of a
    /// quantized model).
    #[arg(long, env = "BULKHEAD_REFERENCE", value_name = "PATH|ORG/NAME")]
    reference: Option<String>,
    /// Seconds a worker may take to load and warm up before it counts as hung.
    #[arg(long, env = "BULKHEAD_LOAD_TIMEOUT", default_value_t = 120)]
    load_timeout: u64,
    /// Seconds one prediction may take before the worker counts as hung.
    #[arg(long, env = "BULKHEAD_PREDICT_TIMEOUT", default_value_t = 30)]
    predict_timeout: u64,
    /// Render a report saved with --json (as tables, or with --html) instead of measuring.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["model", "reference", "tokenizer"])]
    from_json: Option<PathBuf>,
}

impl DoctorArgs {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        if let Some(path) = &self.from_json {
            let text = std::fs::read_to_string(path).with_context(|| format!("--from-json {}", path.display()))?;
            let report = json::parse(&text).with_context(|| format!("--from-json {}", path.display()))?;
            return self.output(&report);
        }
        let mut options = self.options()?;
        let model = self.model.open()?;
        require_text_model(&model, "doctor", true)?;
        options.predictions = self.predictions.unwrap_or(match model.task {
            ModelTask::SpeechToText => SPEECH_PREDICTIONS,
            _ => PREDICTIONS,
        });
        let reference =
            self.reference.as_deref().map(|p| open_model(Some(p), None, self.model.weights())).transpose()?;
        let tokenizer = Tokenizer::load(&model).map_err(|e| e.to_string());
        let report = bulkhead_doctor::diagnose(&model, tokenizer, reference.as_ref(), &options, &engines())?;
        self.output(&report)?;
        if report.recommendation.compute_units.is_empty() {
            anyhow::bail!("no unit of the chain `{}` can run this model (see the report)", report.settings.chain);
        }
        Ok(())
    }

    /// The measurement options; bad numbers are usage errors.
    fn options(&self) -> anyhow::Result<Options> {
        if self.predictions.is_some_and(|p| p < 2) || self.iterations == 0 {
            return Err(UsageError("--predictions must be at least 2 and --iterations at least 1".into()).into());
        }
        if self.batch_sizes.is_empty() || self.batch_sizes.contains(&0) {
            return Err(UsageError("--batch-sizes must be positive numbers, e.g. 1,8,32".into()).into());
        }
        let faults = bulkhead_supervisor::faults::from_env().map_err(|e| UsageError(e.to_string()))?;
        Ok(Options {
            chain: self.model.chain().clone(),
            batch_sizes: self.batch_sizes.clone(),
            iterations: self.iterations,
            predictions: self.predictions.unwrap_or(PREDICTIONS),
            seq_lengths: self.seq_lengths.clone(),
            memory_budget_mb: self.memory_budget_mb,
            limits: Limits {
                load: Duration::from_secs(self.load_timeout),
                predict: Duration::from_secs(self.predict_timeout),
            },
            faults,
            worker_memory: self.memory.ceiling()?,
        })
    }

    fn output(&self, report: &Report) -> anyhow::Result<()> {
        if let Some(path) = &self.html {
            std::fs::write(path, html::render(report)).with_context(|| format!("--html {}", path.display()))?;
        }
        if self.json {
            println!("{}", json::render(report));
        } else {
            print!("{}", terminal::render(report, terminal::use_colour()));
        }
        if let Some(path) = &self.html {
            eprintln!("wrote {}", path.display());
        }
        Ok(())
    }
}
