//! `bulkhead embed`: embed texts in-process on the first working unit of the chain and print the vectors.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use bulkhead_embed::{load_chain, truncate_dims, Tokenizer, Truncation};
use serde_json::json;

use super::common::{engines, set_default_prompt, ModelArgs, PrecisionArg, UsageError};
use super::images;

/// Arguments of `bulkhead embed`.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Print one JSON object: model, unit, dimensions, embeddings, timing_ms.
    #[arg(long)]
    json: bool,
    /// Read one text per line from FILE (`-` for standard input).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Prepend this named prompt of the model (config_sentence_transformers.json) to every text; replaces the
    /// model's `default_prompt_name`.
    #[arg(long, env = "BULKHEAD_DEFAULT_PROMPT_NAME", conflicts_with = "default_prompt")]
    default_prompt_name: Option<String>,
    /// Prepend this text to every text ("" for none); replaces the model's `default_prompt_name`.
    #[arg(long, env = "BULKHEAD_DEFAULT_PROMPT")]
    default_prompt: Option<String>,
    /// Keep the first N values of each vector (Matryoshka), renormalised when the model normalises.
    #[arg(long)]
    dimensions: Option<usize>,
    /// `int8`: the model's int8 form with a measured accuracy floor (made once by `bulkhead quantize` and cached).
    #[arg(long, env = "BULKHEAD_PRECISION", value_enum, default_value_t = PrecisionArg::Fp32)]
    precision: PrecisionArg,
    /// Embed these image files (PNG, JPEG, WebP, GIF, BMP) with an image-text model (CLIP, SigLIP) instead of
    /// texts.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    image: Vec<PathBuf>,
    /// Refuse images whose header declares more pixels than this (before decoding).
    #[arg(long, env = "BULKHEAD_MAX_IMAGE_PIXELS", default_value_t = bulkhead_image::DEFAULT_MAX_PIXELS)]
    max_image_pixels: u64,
    /// Sparse embeddings of a SPLADE model: per text its active vocabulary entries as `{"index", "value"}`.
    #[arg(long, conflicts_with_all = ["image", "dimensions", "default_prompt_name", "default_prompt"])]
    sparse: bool,
    /// Texts to embed.
    texts: Vec<String>,
}

impl EmbedArgs {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        let mut texts = self.texts.clone();
        if let Some(input) = &self.input {
            texts.extend(read_lines(input)?);
        }
        if !self.image.is_empty() {
            return self.run_images(texts);
        }
        if texts.is_empty() {
            return Err(UsageError("no text to embed; give TEXT arguments or --input FILE".into()).into());
        }
        let t_start = Instant::now();
        let model = self.model.open()?;
        if self.sparse || model.task.is_sparse() {
            if !self.sparse {
                return Err(UsageError(format!(
                    "{} is {} (no dense vectors); add --sparse for its sparse embeddings",
                    model.name,
                    model.task.noun()
                ))
                .into());
            }
            return super::sparse::embed(&model, self.model.chain(), &texts, self.json);
        }
        if model.task.is_cross_encoder() || model.task.is_speech() {
            let command = match model.task {
                bulkhead_core::ModelTask::Rerank { .. } => "rerank",
                bulkhead_core::ModelTask::SpeechToText => "transcribe",
                _ => "classify",
            };
            return Err(UsageError(format!(
                "{} is {}, not an embedding model; use `bulkhead {command}`",
                model.name,
                model.task.noun()
            ))
            .into());
        }
        if model.task.takes_images() {
            return images::embed(
                &model,
                self.model.chain(),
                images::Inputs::Texts(texts),
                self.dimensions,
                self.json,
                self.max_image_pixels,
            );
        }
        let mut model = self.precision.apply(model)?;
        set_default_prompt(&mut model, self.default_prompt_name.as_deref(), self.default_prompt.as_deref())?;
        let prompt = model.prompts.resolve(None, None)?;
        let tokenizer = Tokenizer::load(&model)?;
        let engines = engines();
        let mut loaded = load_chain(&engines, &model, &tokenizer, self.model.chain())?;
        let load_ms = t_start.elapsed().as_secs_f64() * 1e3;

        let t0 = Instant::now();
        let encoded = tokenizer.encode_prompted(&texts, prompt.as_deref(), Truncation::Right)?;
        let tokenize_ms = t0.elapsed().as_secs_f64() * 1e3;
        let (mut vectors, timing) = loaded.embedder.embed_rows(&encoded.rows)?;
        if let Some(d) = self.dimensions {
            let native = vectors.first().map_or(0, Vec::len);
            model.matryoshka.check(d, native).map_err(|e| UsageError(format!("--dimensions: {e}")))?;
            vectors.iter_mut().for_each(|v| truncate_dims(v, d, model.normalize && d < native));
        }
        let unit = loaded.embedder.unit();
        let report = loaded.embedder.report();
        let dims = vectors.first().map_or(0, Vec::len);

        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        if self.json {
            let obj = json!({
                "model": model.name,
                "unit": unit,
                "dimensions": dims,
                "embeddings": vectors,
                "timing_ms": {
                    "load": load_ms,
                    "tokenize": tokenize_ms,
                    "infer": timing.infer_ms,
                    "post": timing.post_ms,
                },
                "precision": report.precision,
                "runtime": report.runtime,
                "placement": report.placement,
                "skipped": loaded.skipped,
            });
            serde_json::to_writer(&mut out, &obj)?;
            writeln!(out)?;
        } else {
            for v in &vectors {
                serde_json::to_writer(&mut out, v)?;
                writeln!(out)?;
            }
            eprintln!(
                "{} text(s) -> {dims} dimensions on {unit} ({:?}, {}): tokenize {tokenize_ms:.2} ms, infer {:.2} ms, \
                 post {:.2} ms (load {load_ms:.0} ms)",
                vectors.len(),
                report.precision,
                report.runtime,
                timing.infer_ms,
                timing.post_ms,
            );
        }
        Ok(())
    }
}

impl EmbedArgs {
    /// `--image FILE...`: image embeddings of an image-text model.
    fn run_images(self, texts: Vec<String>) -> anyhow::Result<()> {
        if !texts.is_empty() {
            return Err(UsageError(
                "give texts or --image files, not both (each is embedded by its own tower; run twice)".into(),
            )
            .into());
        }
        let model = self.model.open()?;
        if !model.task.takes_images() {
            return Err(UsageError(format!(
                "{} is {}, which takes texts only; --image needs an image-text model (CLIP, SigLIP)",
                model.name,
                model.task.noun()
            ))
            .into());
        }
        let inputs = images::Inputs::Images(self.image.clone());
        images::embed(&model, self.model.chain(), inputs, self.dimensions, self.json, self.max_image_pixels)
    }
}

fn read_lines(path: &PathBuf) -> anyhow::Result<Vec<String>> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(path).with_context(|| format!("--input {}", path.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut lines = vec![];
    for line in reader.lines() {
        lines.push(line.with_context(|| format!("reading {}", path.display()))?);
    }
    Ok(lines)
}
