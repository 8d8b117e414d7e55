//! `bulkhead export`: writes the ONNX graph that bulkhead builds from a safetensors folder, so users can inspect it
//! (Netron) or run it elsewhere. The file is self-contained (weights embedded).

use std::path::PathBuf;

use bulkhead_graph::{BuildOptions, ShapeMode};

use super::common::{open_model, UsageError, Weights};

/// Arguments of `bulkhead export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Model folder with config.json and model.safetensors, or hub id ORG/NAME[@REVISION]; default:
    /// all-MiniLM-L6-v2 installed by the set-up.
    #[arg(long, env = "BULKHEAD_MODEL", value_name = "PATH|ORG/NAME")]
    model: Option<String>,
    /// Where to write the .onnx file.
    #[arg(long)]
    output: PathBuf,
    /// Fixed input shape BATCHxSEQ (e.g. 1x128) for units that need static shapes; default: dynamic.
    #[arg(long, value_name = "BATCHxSEQ")]
    static_shape: Option<String>,
}

impl ExportArgs {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        let shape = match &self.static_shape {
            None => ShapeMode::Dynamic,
            Some(s) => {
                let parsed = s.split_once('x').and_then(|(b, q)| Some((b.parse().ok()?, q.parse().ok()?)));
                match parsed {
                    Some((batch, seq)) if batch > 0 && seq > 0 => ShapeMode::Static { batch, seq },
                    _ => return Err(UsageError(format!("--static-shape {s:?}: expected BATCHxSEQ, e.g. 1x128")).into()),
                }
            }
        };
        let model = open_model(self.model.as_deref(), None, Weights::GraphBuilder)?;
        bulkhead_graph::export(&model, &BuildOptions { shape, ..BuildOptions::default() }, &self.output)?;
        let size = std::fs::metadata(&self.output).map(|m| m.len()).unwrap_or(0);
        eprintln!("wrote {} ({:.1} MiB, {:?})", self.output.display(), size as f64 / (1 << 20) as f64, shape);
        Ok(())
    }
}
