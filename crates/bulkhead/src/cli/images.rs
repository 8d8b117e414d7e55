//! Image-text models (CLIP, SigLIP) in the commands: the sentence-transformers CLIP folder layout resolved to its
//! transformers module, what `serve` learns from a first request, and `bulkhead embed` on such a model (texts
//! through the text tower; `--image FILE...` through the vision tower).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bulkhead_core::{Chain, ModelFiles, Row};
use bulkhead_embed::{load_towers_chain, truncate_dims, Tokenizer, Truncation};
use bulkhead_image::{Limits, Preprocessor};
use bulkhead_server::ModelKind;
use bulkhead_supervisor::{Job, Supervisor};
use serde_json::json;

use super::common::{engines, UsageError};

/// A sentence-transformers CLIP folder (`modules.json` naming a `CLIPModel` module, no config.json at the top):
/// the module's transformers files, named after the top folder, normalised when a `Normalize` module follows.
/// `None` for every other folder.
pub fn open_sentence_transformers_clip(path: &Path) -> Option<anyhow::Result<ModelFiles>> {
    let modules = std::fs::read_to_string(path.join("modules.json")).ok()?;
    if path.join("config.json").is_file() || !modules.contains("CLIPModel") {
        return None;
    }
    Some((|| {
        let mut files = bulkhead_graph::tower_model_files(path)?;
        if let Some(name) = path.file_name() {
            files.name = name.to_string_lossy().into_owned();
        }
        files.normalize = modules.contains("Normalize");
        Ok(files)
    })())
}

/// Texts of an image-text model are cut at the text tower's positions (`text_config.max_position_embeddings`),
/// whatever the tokenizer's `model_max_length` says.
pub fn fit_text_length(files: &mut ModelFiles) -> anyhow::Result<()> {
    let spec = bulkhead_graph::tower_spec(files)?;
    files.max_seq_length = files.max_seq_length.min(spec.max_text_tokens).max(1);
    Ok(())
}

/// The image side of a served image-text model: its processor, checked against the vision tower's input, and the
/// encoder positions of one image.
fn image_side(files: &ModelFiles) -> anyhow::Result<(Preprocessor, usize)> {
    let spec = bulkhead_graph::tower_spec(files)?;
    let folder = files.config.as_deref().and_then(Path::parent).unwrap_or(&files.source);
    let preprocessor =
        Preprocessor::from_model_dir(folder).with_context(|| format!("{}: the image processor", folder.display()))?;
    let side = spec.image_size as u32;
    match preprocessor.input_size() {
        Some(s) if s.width == side && s.height == side => Ok((preprocessor, spec.image_positions)),
        other => Err(anyhow::anyhow!(
            "{}: preprocessor_config.json makes {} images, but the vision tower takes {side}x{side}; fix the \
             crop_size / size there",
            folder.display(),
            other.map_or("variable-size".to_string(), |s| format!("{}x{}", s.width, s.height))
        )),
    }
}

/// What `serve` learns about an image-text model from a text and an image request through its supervisor.
pub async fn first_request(files: &ModelFiles, tokenizer: Tokenizer, sup: &Supervisor) -> anyhow::Result<ModelKind> {
    let (preprocessor, image_positions) = image_side(files)?;
    let first = |e| anyhow::anyhow!("{}: first request failed: {e}", files.name);
    let rows = tokenizer.encode(&["bulkhead".to_string()])?;
    let text = sup.embed(rows, vec![]).await.map_err(first)?;
    let dimensions = text.answer.into_vectors().and_then(|v| v.first().map(Vec::len)).unwrap_or(0);
    let size = preprocessor.input_size().map_or(0, |s| (s.width * s.height * 3) as usize);
    let blank = Row::Pixels { values: vec![0.0; size], positions: image_positions };
    let image = sup.run(Job::rows(vec![blank])).await.map_err(first)?;
    let image_dims = image.answer.into_vectors().and_then(|v| v.first().map(Vec::len)).unwrap_or(0);
    if image_dims != dimensions {
        anyhow::bail!(
            "{}: the text tower gives {dimensions} dimensions and the vision tower {image_dims}; they must share one \
             space",
            files.name
        );
    }
    Ok(ModelKind::ImageText { tokenizer, dimensions, preprocessor: Arc::new(preprocessor), image_positions })
}

/// What `bulkhead embed` embeds on an image-text model.
pub enum Inputs {
    /// Texts, through the text tower.
    Texts(Vec<String>),
    /// Image files, through the vision tower.
    Images(Vec<PathBuf>),
}

/// `bulkhead embed` on an image-text model: the towers loaded on the first unit of the chain that runs them, the
/// inputs through their tower, one vector per input printed (or one JSON object with `--json`).
pub fn embed(
    model: &ModelFiles,
    chain: &Chain,
    inputs: Inputs,
    dimensions: Option<usize>,
    as_json: bool,
    max_pixels: u64,
) -> anyhow::Result<()> {
    let t_start = Instant::now();
    let tokenizer = Tokenizer::load(model)?;
    // Images are read and checked before any model loads: a bad file is a usage error at once.
    let (rows, prepare_ms) = match &inputs {
        Inputs::Texts(texts) => {
            let t0 = Instant::now();
            let encoded = tokenizer.encode_prompted(texts, None, Truncation::Right)?;
            (encoded.rows, t0.elapsed().as_secs_f64() * 1e3)
        }
        Inputs::Images(paths) => {
            let t0 = Instant::now();
            let (preprocessor, positions) = image_side(model)?;
            let limits = Limits { max_pixels, ..Limits::default() };
            let mut rows = vec![];
            for p in paths {
                let bytes = std::fs::read(p).with_context(|| format!("--image {}", p.display()))?;
                let decoded = bulkhead_image::decode(&bytes, limits)
                    .map_err(|e| UsageError(format!("--image {}: {e}", p.display())))?;
                let pixels = preprocessor
                    .preprocess(&decoded.image)
                    .map_err(|e| UsageError(format!("--image {}: {e}", p.display())))?;
                rows.push(Row::Pixels { values: pixels.data, positions });
            }
            (rows, t0.elapsed().as_secs_f64() * 1e3)
        }
    };
    let engines = engines();
    let probe: Vec<Row> = tokenizer.encode(&bulkhead_embed::probe_texts())?.into_iter().map(Row::tokens).collect();
    let mut loaded = load_towers_chain(&engines, model, &probe, chain)?;
    let load_ms = t_start.elapsed().as_secs_f64() * 1e3 - prepare_ms;
    let (mut vectors, timing) = loaded.towers.embed_rows(&rows)?;
    if let Some(d) = dimensions {
        let native = vectors.first().map_or(0, Vec::len);
        model.matryoshka.check(d, native).map_err(|e| UsageError(format!("--dimensions: {e}")))?;
        vectors.iter_mut().for_each(|v| truncate_dims(v, d, model.normalize && d < native));
    }
    let unit = loaded.towers.unit();
    let report = loaded.towers.report();
    let dims = vectors.first().map_or(0, Vec::len);
    let stage = if matches!(inputs, Inputs::Images(_)) { "preprocess" } else { "tokenize" };
    let mut out = std::io::stdout().lock();
    if as_json {
        let obj = json!({
            "model": model.name,
            "unit": unit,
            "dimensions": dims,
            "inputs": if matches!(inputs, Inputs::Images(_)) { "image" } else { "text" },
            "embeddings": vectors,
            "timing_ms": { "load": load_ms, stage: prepare_ms, "infer": timing.infer_ms, "post": timing.post_ms },
            "precision": report.precision,
            "runtime": report.runtime,
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
            "{} input(s) -> {dims} dimensions on {unit} ({:?}, {}): {stage} {prepare_ms:.2} ms, infer {:.2} ms, post \
             {:.2} ms (load {load_ms:.0} ms)",
            vectors.len(),
            report.precision,
            report.runtime,
            timing.infer_ms,
            timing.post_ms,
        );
    }
    Ok(())
}
