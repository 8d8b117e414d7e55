//! `bulkhead bench`: the command line of `bulkhead_doctor::bench` (throughput and latency per unit and batch size,
//! each unit in its own worker process), as a table or `--json` (schema `bulkhead.bench/1`, docs/doctor.md); for a
//! speech-to-text model the real-time factor and decoder tokens per second, for a segmentation model images and
//! clicks per second.

use bulkhead_core::ModelTask;
use bulkhead_doctor::bench::{self, Options};
use bulkhead_doctor::render::terminal;
use bulkhead_embed::Tokenizer;

use super::common::{engines, require_text_model, MemoryArgs, ModelArgs, UsageError};

/// Arguments of `bulkhead bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    memory: MemoryArgs,
    /// Print one JSON object (schema `bulkhead.bench/1`) instead of a table.
    #[arg(long)]
    json: bool,
    /// Batch sizes to measure (inputs are the warm-up sentences, about 15 tokens each); text models only: speech and
    /// segmentation requests are never batched.
    #[arg(long, env = "BULKHEAD_BATCH_SIZES", default_value = "1,8,32", value_delimiter = ',')]
    batch_sizes: Vec<usize>,
    /// Seconds of timed predictions per unit and batch size.
    #[arg(long, env = "BULKHEAD_BENCH_SECONDS", default_value_t = 3.0)]
    seconds: f64,
    /// Timed predictions per unit and batch size, at least (even past --seconds).
    #[arg(long, env = "BULKHEAD_ITERATIONS", default_value_t = 10)]
    iterations: usize,
}

impl BenchArgs {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        if self.batch_sizes.is_empty() || self.batch_sizes.contains(&0) || self.iterations == 0 || self.seconds < 0.0 {
            return Err(UsageError(
                "--batch-sizes must be positive numbers (e.g. 1,8,32), --iterations at least 1, --seconds >= 0".into(),
            )
            .into());
        }
        let faults = bulkhead_supervisor::faults::from_env().map_err(|e| UsageError(e.to_string()))?;
        let model = self.model.open()?;
        require_text_model(&model, "bench", true)?;
        let options = Options {
            chain: self.model.chain().clone(),
            batch_sizes: self.batch_sizes.clone(),
            iterations: self.iterations,
            seconds: self.seconds,
            faults,
            worker_memory: self.memory.ceiling()?,
        };
        let report = match model.task {
            ModelTask::SpeechToText | ModelTask::Segmentation => bench::media::run(&model, &options, &engines())?,
            _ => bench::run(&model, &Tokenizer::load(&model)?, &options, &engines())?,
        };
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", bench::render(&report, terminal::use_colour()));
        }
        if !report.units.iter().any(|u| u.measured()) {
            anyhow::bail!("no unit of the chain `{}` could be measured", self.model.chain());
        }
        Ok(())
    }
}
