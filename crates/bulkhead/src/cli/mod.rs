//! Command-line interface: the options shared by subcommands and one module per subcommand, each with
//! `run(self) -> anyhow::Result<()>`.

mod bench;
mod common;
mod doctor;
mod download_progress;
mod embed;
mod export;
mod hub;
mod images;
mod pull;
mod quantize;
mod rerank;
mod segment;
mod serve;
mod serve_models;
mod sparse;
mod transcribe;
mod units;

use clap::{Parser, Subcommand};

pub use common::{exit_code, print_error};

/// Safe, fast and explainable local ML inference on unreliable compute units.
#[derive(Debug, Parser)]
#[command(name = "bulkhead", version, about, propagate_version = true)]
pub struct Cli {
    /// More detail in logs and errors (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true, env = "BULKHEAD_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands. Parsed once per process, so the size of the largest variant (`serve`'s options) costs nothing.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Serve models over HTTP (OpenAI, TEI and KServe v2 APIs) from supervised worker processes.
    Serve(serve::ServeArgs),
    /// Embed texts and print the vectors (and, with --json, which unit computed them and how long each stage took).
    Embed(embed::EmbedArgs),
    /// Rank documents against a query with a reranker (a cross-encoder) and print them best first.
    Rerank(rerank::RerankArgs),
    /// Classify texts (or pairs of texts) with a sequence classifier and print every label's probability.
    Classify(rerank::ClassifyArgs),
    /// Segment an image with a SAM2 model from points and/or a box; prints the masks' scores (and, with --json,
    /// the masks as COCO RLE and the unit that computed them).
    Segment(segment::SegmentArgs),
    /// List every compute unit this build knows, whether it is usable here, and why not.
    Units(units::UnitsArgs),
    /// Write the ONNX graph bulkhead builds from a safetensors model folder.
    Export(export::ExportArgs),
    /// Diagnose a model on every unit of the chain: load, placement, latency, shapes, memory, accuracy, crashes.
    Doctor(doctor::DoctorArgs),
    /// Throughput and latency per unit and batch size.
    Bench(bench::BenchArgs),
    /// Write an int8 model folder with a measured accuracy floor (which layers stay fp32 is chosen by measurement).
    Quantize(quantize::QuantizeArgs),
    /// Transcribe (or translate) audio files with a speech-to-text model (Whisper), in supervised workers.
    Transcribe(transcribe::TranscribeArgs),
    /// Download a model from the Hugging Face hub into the shared cache ahead of time; prints its folder.
    Pull(pull::PullArgs),
    /// Internal: one supervised worker process (started by `bulkhead serve`, `doctor` and `bench`).
    #[command(hide = true)]
    Worker {
        /// `--unit UNIT --generation N --model-json JSON [--parent-pid PID] [--threads N]`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

impl Command {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Serve(a) => a.run(),
            Command::Embed(a) => a.run(),
            Command::Rerank(a) => a.run(),
            Command::Classify(a) => a.run(),
            Command::Segment(a) => a.run(),
            Command::Units(a) => a.run(),
            Command::Export(a) => a.run(),
            Command::Doctor(a) => a.run(),
            Command::Bench(a) => a.run(),
            Command::Pull(a) => a.run(),
            Command::Transcribe(a) => a.run(),
            Command::Quantize(a) => a.run(),
            Command::Worker { args } => {
                std::process::exit(bulkhead_supervisor::worker_main(common::engines_with_threads, &args))
            }
        }
    }
}

static LOG_JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether logs are JSON lines (then user-facing progress goes through `tracing` too).
pub fn log_json() -> bool {
    LOG_JSON.load(std::sync::atomic::Ordering::Relaxed)
}

/// Sets up `tracing` on stderr: warnings by default (skipped units are warnings; `serve` logs at info), more with
/// -v; `BULKHEAD_LOG` overrides (an `EnvFilter` directive).
pub fn init_logging(verbose: u8, json: bool, server: bool) {
    LOG_JSON.store(json, std::sync::atomic::Ordering::Relaxed);
    let default = match verbose {
        0 if server => "info,ort=error",
        0 => "warn,ort=error",
        1 => "info,bulkhead=debug,ort=warn",
        _ => "debug,ort=info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BULKHEAD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    if json {
        builder.json().init();
    } else {
        builder.without_time().init();
    }
}
