//! `bulkhead quantize`: writes an int8 model folder whose accuracy against float32 was measured, choosing by a
//! sensitivity search which linear layers stay in float32 (see `crates/bulkhead-quantize`); and the int8 form of a
//! model for `serve --precision int8` / `embed --precision int8`, made once by a child `bulkhead quantize` process
//! and cached.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bulkhead_core::ModelFiles;
use bulkhead_graph::Int8Form;
use bulkhead_quantize::{Manifest, QuantizeError, QuantizeOptions, MANIFEST_FILE};

use super::common::{open_model, UsageError, Weights};

/// Arguments of `bulkhead quantize`.
#[derive(Debug, clap::Args)]
pub struct QuantizeArgs {
    /// Model folder with config.json and model.safetensors, or hub id ORG/NAME[@REVISION]; default:
    /// all-MiniLM-L6-v2 installed by the set-up.
    #[arg(long, env = "BULKHEAD_MODEL", value_name = "PATH|ORG/NAME")]
    model: Option<String>,
    /// The folder to write (new or empty): model.onnx, the tokenizer and pooling files, bulkhead-quantization.json.
    #[arg(long)]
    output: PathBuf,
    /// The accuracy floor: the lowest cosine against float32 any calibration text may have.
    #[arg(long, default_value_t = bulkhead_quantize::DEFAULT_MIN_COSINE)]
    min_cosine: f64,
    /// Calibration texts, one per line (default: a built-in varied set: languages, long texts, markup, URLs, code,
    /// numbers).
    #[arg(long, value_name = "FILE")]
    calibration: Option<PathBuf>,
    /// Write the closest configuration when none meets --min-cosine (the manifest says it does not).
    #[arg(long)]
    force: bool,
    /// Also try SmoothQuant per layer group, with this migration strength (0 to 1; 0.5 is the usual one), keeping
    /// it where it measures better. Off by default: its extra multiplication costs more speed than it buys accuracy
    /// on the models measured.
    #[arg(long, value_name = "ALPHA", conflicts_with = "no_smoothquant")]
    smoothquant_alpha: Option<f32>,
    /// Do not try SmoothQuant (the default; kept for scripts that say so).
    #[arg(long)]
    no_smoothquant: bool,
    /// Do not try keeping a group's outlier input channels (those at least 3 times the median channel's maximum on
    /// the calibration texts, at most 1/32 of them) in float32 beside the int8 product.
    #[arg(long)]
    no_outliers: bool,
    /// int8 operators: `fused` (ONNX Runtime's DynamicQuantizeMatMul) or `standard` (DynamicQuantizeLinear +
    /// MatMulInteger, standard ONNX).
    #[arg(long, default_value = "fused", value_parser = parse_form)]
    operators: Int8Form,
    /// ONNX Runtime intra-op threads while measuring (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn parse_form(s: &str) -> Result<Int8Form, String> {
    match s {
        "fused" => Ok(Int8Form::Fused),
        "standard" => Ok(Int8Form::Standard),
        other => Err(format!("`{other}` is not an operator form; use `fused` or `standard`")),
    }
}

/// Bad options and bad calibration files are usage errors (exit code 2); the rest are failures (1).
fn classify(e: QuantizeError) -> anyhow::Error {
    match e {
        QuantizeError::Usage(_) | QuantizeError::Calibration { .. } => UsageError(e.to_string()).into(),
        other => other.into(),
    }
}

impl QuantizeArgs {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        let model = open_model(self.model.as_deref(), None, Weights::GraphBuilder)?;
        let opts = QuantizeOptions {
            min_cosine: self.min_cosine,
            calibration: self.calibration.clone(),
            force: self.force,
            smooth_alpha: self.smoothquant_alpha.filter(|_| !self.no_smoothquant),
            outliers: (!self.no_outliers).then(bulkhead_quantize::OutlierOptions::default),
            form: self.operators,
            threads: self.threads,
            ..QuantizeOptions::default()
        };
        opts.check().map_err(classify)?;
        eprintln!("measuring the int8 sensitivity of {} (a few minutes on 2 cores for a small model)", model.name);
        let out = bulkhead_quantize::quantize(&model, &opts, &self.output).map_err(classify)?;
        print_summary(&out.manifest, &self.output);
        Ok(())
    }
}

fn print_summary(m: &Manifest, output: &Path) {
    eprintln!("| int8 groups | smoothed | outliers in fp32 | kept in fp32 | calibration min cosine | mean cosine |");
    eprintln!("|---:|---:|---:|---|---:|---:|");
    for s in &m.record.path {
        let kept = if s.fp32_groups.is_empty() { "-".to_string() } else { s.fp32_groups.join(" ") };
        eprintln!(
            "| {} | {} | {} | {kept} | {:.5} | {:.5} |",
            s.int8_groups,
            s.smoothed_groups.len(),
            s.outlier_groups.len(),
            s.calibration.min_cosine,
            s.calibration.mean_cosine
        );
    }
    let h = &m.heldout.accuracy;
    eprintln!(
        "wrote {}: {} of {} linear weights in int8 ({:.0} %), {} group(s) kept in fp32; held-out ({} texts): min \
         cosine {:.5}, mean {:.5}, top-10 overlap {:.3}{}",
        output.display(),
        m.int8_params,
        m.linear_params,
        100.0 * m.int8_share(),
        m.record.fp32_groups.len(),
        m.heldout.count,
        h.min_cosine,
        h.mean_cosine,
        h.top10_overlap,
        if m.meets_target { String::new() } else { format!(" (below --min-cosine {}: --force)", m.min_cosine_target) }
    );
}

/// The int8 form of `model` for `--precision int8`: a folder written by `bulkhead quantize` is used as it is; a
/// safetensors folder is quantized once (default options) by a child `bulkhead quantize` process, so ONNX Runtime
/// never runs in the calling process, into `<cache>/int8/<key>`, and reused from there.
pub fn int8_model(model: &ModelFiles) -> anyhow::Result<ModelFiles> {
    let root = if model.source.is_dir() { model.source.clone() } else { PathBuf::new() };
    if model.source.is_dir() && bulkhead_core::quantized::Manifest::<()>::read(&root)?.is_some() {
        return Ok(model.clone());
    }
    if model.safetensors_shards.is_empty() {
        return Err(UsageError(format!(
            "{}: --precision int8 needs a safetensors folder the graph builder supports, or a folder written by \
             `bulkhead quantize`",
            model.source.display()
        ))
        .into());
    }
    let cache = bulkhead_core::install::cache_dir().join("int8");
    let dir = bulkhead_quantize::cache_entry(model, &QuantizeOptions::default(), &cache).map_err(classify)?;
    if !dir.join(MANIFEST_FILE).is_file() {
        std::fs::create_dir_all(&cache).with_context(|| cache.display().to_string())?;
        eprintln!("--precision int8: quantizing {} once into {} (cached)", model.name, dir.display());
        let exe = std::env::current_exe().context("cannot find the bulkhead executable")?;
        let status = std::process::Command::new(exe)
            .arg("quantize")
            .arg("--model")
            .arg(&root)
            .arg("--output")
            .arg(&dir)
            .status()
            .context("cannot start `bulkhead quantize`")?;
        // A concurrent process may have published the same entry first.
        if !status.success() && !dir.join(MANIFEST_FILE).is_file() {
            anyhow::bail!("{}: `bulkhead quantize` failed ({status}); run it by hand to see why", model.name);
        }
    }
    let mut int8 = ModelFiles::open(&dir)?;
    int8.name = model.name.clone();
    int8.prompts = model.prompts.clone();
    Ok(int8)
}
