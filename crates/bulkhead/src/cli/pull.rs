//! `bulkhead pull ORG/NAME[@REVISION]`: downloads a model from the Hugging Face hub into the shared cache ahead of
//! time (a container image bakes its model in with it, then serves with `HF_HUB_OFFLINE=1`). Prints the snapshot
//! folder on stdout.

use bulkhead_core::ModelFiles;
use bulkhead_hub::error::human_bytes;
use bulkhead_hub::ModelRef;
use serde_json::json;

use super::common::{ChainArgs, UsageError};
use super::hub::{fetch, Weights};

/// Arguments of `bulkhead pull`.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// The model: ORG/NAME, optionally @REVISION (a branch, tag or commit; default main).
    #[arg(value_name = "ORG/NAME[@REVISION]")]
    model: String,
    // The units the model will run on: they decide which weight files are fetched (safetensors, ONNX).
    #[command(flatten)]
    chain: ChainArgs,
    /// Print one JSON object (model, revision, commit, path, files, downloaded_bytes) instead of the path.
    #[arg(long)]
    json: bool,
}

impl PullArgs {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        let model = ModelRef::parse(&self.model).map_err(|e| UsageError(e.to_string()))?;
        let snapshot = fetch(&model, Weights::Chain(&self.chain.compute_units))?;
        // Opening it as bulkhead will proves the files make a model (a tokenizer, weights) before an image ships.
        let files = ModelFiles::open(&snapshot.dir)?;
        if self.json {
            let obj = json!({
                "model": model.repo,
                "revision": model.revision,
                "commit": snapshot.commit,
                "path": snapshot.dir,
                "files": snapshot.files,
                "downloaded_bytes": snapshot.downloaded,
                "formats": files.formats(),
            });
            println!("{obj}");
        } else {
            println!("{}", snapshot.dir.display());
        }
        let source = if snapshot.downloaded > 0 {
            format!("{} downloaded", human_bytes(snapshot.downloaded))
        } else {
            "already cached".to_string()
        };
        eprintln!(
            "{} at {}: {} file(s) the units {} need, {source}",
            model.display(),
            &snapshot.commit[..10],
            snapshot.files.len(),
            self.chain.compute_units
        );
        Ok(())
    }
}
