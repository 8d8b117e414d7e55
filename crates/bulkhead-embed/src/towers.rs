//! Two-tower image-text models (CLIP, SigLIP) on one unit: the text tower's and the vision tower's graphs (built
//! by `bulkhead-graph` from the folder's safetensors, cached on disk) loaded as two
//! [`GraphSession`](bulkhead_core::GraphSession)s of one engine, behind one [`Towers`] value.
//!
//! * texts arrive as [`Row::Tokens`] from the same [`Tokenizer`](crate::Tokenizer) as every embedding model, and
//!   are padded on the right as the model was trained: CLIP to the longest row of the batch (it pools its end of
//!   text token and is causal, so padding never reaches a real position), SigLIP to the text tower's full length
//!   with its pad token (it pools the last position). The attention mask covers the real tokens, except for a
//!   `SiglipTokenizer` folder, whose processor hands the model `input_ids` alone (every position attended), as
//!   transformers' `SiglipProcessor` does;
//! * images arrive as [`Row::Pixels`], already decoded and preprocessed (the server and the CLI use
//!   `bulkhead-image`), and are stacked into one `pixel_values` batch.
//!
//! Vectors are the towers' projections (`get_text_features` / `get_image_features`), L2-normalised only when the
//! model's folder says so (a sentence-transformers `Normalize` module), as for every embedding model.

use std::path::Path;
use std::time::Instant;

use bulkhead_core::{
    Availability, Chain, Engine, EngineError, GraphSession, ModelFiles, NamedTensor, Row, RowKind, SessionReport,
    TensorData, Unit,
};
use bulkhead_graph::{build_tower_cached, tower_spec, BuildOptions, GraphError, Tower, TowerSpec};

use crate::chain::{ChainError, SkippedUnit};
use crate::pooling::l2_normalize;
use crate::{Engines, StageTiming};

/// The two towers of an image-text model, loaded on one unit.
pub struct Towers {
    text: Box<dyn GraphSession>,
    vision: Box<dyn GraphSession>,
    spec: TowerSpec,
    pad_id: i64,
    /// Whether padding positions are masked out (`false`: every position attended, as `SiglipProcessor` does).
    mask_padding: bool,
    normalize: bool,
}

/// The pad token id and whether the attention mask leaves padding out, from config.json and tokenizer_config.json.
fn text_padding(model: &ModelFiles) -> (i64, bool) {
    let read =
        |p: &Path| std::fs::read_to_string(p).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    let config = model.config.as_deref().and_then(read);
    let pad = config
        .as_ref()
        .and_then(|c| c.pointer("/text_config/pad_token_id"))
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(model.pad_token_id);
    let folder = model.config.as_deref().and_then(Path::parent).unwrap_or(&model.source);
    let tok_class = read(&folder.join("tokenizer_config.json"))
        .and_then(|c| c.get("tokenizer_class").and_then(serde_json::Value::as_str).map(str::to_string));
    (pad, tok_class.as_deref() != Some("SiglipTokenizer"))
}

fn graph_error(unit: &Unit, e: GraphError) -> EngineError {
    let reason = e.to_string();
    match e {
        GraphError::UnsupportedArchitecture { .. } | GraphError::Unsupported { .. } => {
            EngineError::Unsupported { unit: unit.to_string(), reason }
        }
        _ => EngineError::ModelRejected { unit: unit.to_string(), reason },
    }
}

impl Towers {
    /// Loads both towers of `model` on `unit` of `engine`, the graphs cached under bulkhead's cache directory
    /// (`graphs/`, shared with the embedding models).
    pub fn load(engine: &dyn Engine, model: &ModelFiles, unit: &Unit) -> Result<Towers, EngineError> {
        Self::load_with_cache(engine, model, unit, &bulkhead_core::install::cache_dir().join("graphs"))
    }

    /// [`Towers::load`] with the graphs cached in `cache_dir`.
    pub fn load_with_cache(
        engine: &dyn Engine,
        model: &ModelFiles,
        unit: &Unit,
        cache_dir: &Path,
    ) -> Result<Towers, EngineError> {
        let spec = tower_spec(model).map_err(|e| graph_error(unit, e))?;
        let session = |tower| -> Result<Box<dyn GraphSession>, EngineError> {
            let built = build_tower_cached(model, tower, &BuildOptions::default(), cache_dir)
                .map_err(|e| graph_error(unit, e))?;
            let files = ModelFiles::open(&built.path)
                .map_err(|e| EngineError::ModelRejected { unit: unit.to_string(), reason: e.to_string() })?;
            engine.load_graph(&files, unit)
        };
        let vision = session(Tower::Vision)?;
        let text = session(Tower::Text)?;
        let (pad_id, mask_padding) = text_padding(model);
        Ok(Towers { text, vision, spec, pad_id, mask_padding, normalize: model.normalize })
    }

    /// What the towers take and give.
    pub fn spec(&self) -> &TowerSpec {
        &self.spec
    }

    /// What really runs the vision tower (the text tower runs on the same unit).
    pub fn report(&self) -> &SessionReport {
        self.vision.report()
    }

    /// The unit that computes.
    pub fn unit(&self) -> Unit {
        self.vision.report().unit
    }

    /// One image of zeros in the vision tower's input shape: warm-up and health probes run the live vision path.
    pub fn blank_image(&self) -> Row {
        let n = self.spec.channels * self.spec.image_size * self.spec.image_size;
        Row::Pixels { values: vec![0.0; n], positions: self.spec.image_positions }
    }

    /// One vector per row: token rows through the text tower, images through the vision tower (rows of one kind;
    /// a mix, or pairs, is refused).
    pub fn embed_rows(&mut self, rows: &[Row]) -> Result<(Vec<Vec<f32>>, StageTiming), EngineError> {
        let kind = rows.first().map_or(RowKind::Tokens, Row::kind);
        if let Some(other) = rows.iter().find(|r| r.kind() != kind) {
            return Err(self.refuse(format!("{kind} mixed with {} in one batch", other.kind())));
        }
        match kind {
            RowKind::Tokens => self.embed_texts(rows),
            RowKind::Pixels => self.embed_images(rows),
            RowKind::Pair => Err(self.refuse("an image-text model embeds texts and images, not token pairs".into())),
        }
    }

    fn refuse(&self, reason: String) -> EngineError {
        EngineError::Inference { unit: self.unit().to_string(), reason }
    }

    fn finish(
        &self,
        out: Vec<NamedTensor>,
        name: &str,
        rows: usize,
        t0: Instant,
    ) -> Result<(Vec<Vec<f32>>, StageTiming), EngineError> {
        let infer_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let tensor =
            out.into_iter().find(|t| t.name == name).ok_or_else(|| self.refuse(format!("no `{name}` output")))?;
        let TensorData::F32(data) = tensor.data else {
            return Err(self.refuse(format!("`{name}` is not float32")));
        };
        if rows == 0 || data.len() % rows != 0 {
            return Err(self.refuse(format!("`{name}` holds {} values for {rows} rows", data.len())));
        }
        let mut vectors: Vec<Vec<f32>> = data.chunks_exact(data.len() / rows).map(<[f32]>::to_vec).collect();
        if let Some(i) = vectors.iter().position(|v| v.iter().any(|x| !x.is_finite())) {
            return Err(self.refuse(format!("row {i} of `{name}` is not finite")));
        }
        if self.normalize {
            vectors.iter_mut().for_each(|v| l2_normalize(v));
        }
        Ok((vectors, StageTiming { infer_ms, post_ms: t1.elapsed().as_secs_f64() * 1e3, ..StageTiming::default() }))
    }

    /// Text embeddings of token rows (padding as the model was trained: see the module doc).
    pub fn embed_texts(&mut self, rows: &[Row]) -> Result<(Vec<Vec<f32>>, StageTiming), EngineError> {
        let t0 = Instant::now();
        let max = self.spec.max_text_tokens;
        if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() > max || r.is_empty()) {
            return Err(self.refuse(format!("text row {i} has {} tokens; the text tower takes 1 to {max}", r.len())));
        }
        let longest = rows.iter().map(Row::len).max().unwrap_or(0);
        let seq = if self.spec.pad_text_to_max { max } else { longest };
        let b = rows.len();
        let (mut ids, mut mask) = (vec![self.pad_id; b * seq], vec![i64::from(!self.mask_padding); b * seq]);
        for (i, r) in rows.iter().enumerate() {
            ids[i * seq..i * seq + r.len()].copy_from_slice(r.ids());
            mask[i * seq..i * seq + r.len()].iter_mut().for_each(|m| *m = 1);
        }
        let tensor =
            |name: &str, data| NamedTensor::new(name, vec![b, seq], TensorData::I64(data)).map_err(|e| self.refuse(e));
        let inputs = vec![tensor("input_ids", ids)?, tensor("attention_mask", mask)?];
        let out = self.text.run(&inputs)?;
        self.finish(out, "text_embeds", b, t0)
    }

    /// Image embeddings of preprocessed images.
    pub fn embed_images(&mut self, rows: &[Row]) -> Result<(Vec<Vec<f32>>, StageTiming), EngineError> {
        let t0 = Instant::now();
        let (c, side) = (self.spec.channels, self.spec.image_size);
        let per_image = c * side * side;
        let mut pixels = Vec::with_capacity(rows.len() * per_image);
        for (i, r) in rows.iter().enumerate() {
            match r.pixels() {
                Some(p) if p.len() == per_image => pixels.extend_from_slice(p),
                Some(p) => {
                    return Err(self.refuse(format!(
                        "image {i} has {} pixel values; the vision tower takes {c}x{side}x{side} = {per_image}",
                        p.len()
                    )))
                }
                None => return Err(self.refuse(format!("row {i} is no image"))),
            }
        }
        let input = NamedTensor::new("pixel_values", vec![rows.len(), c, side, side], TensorData::F32(pixels))
            .map_err(|e| self.refuse(e))?;
        let out = self.vision.run(&[input])?;
        self.finish(out, "image_embeds", rows.len(), t0)
    }
}

/// Image-text towers loaded on the first unit of a chain that runs them: [`crate::load_chain`] for CLIP and
/// SigLIP, the first forward pass made of the probe texts and a blank image.
pub struct LoadedTowers {
    /// The serving towers.
    pub towers: Towers,
    /// Units before it that were skipped, in chain order.
    pub skipped: Vec<SkippedUnit>,
    /// Milliseconds spent loading the serving unit (graphs and sessions).
    pub load_ms: f64,
}

/// Walks `chain` for an image-text model: availability, load of both towers, then a forward pass through each
/// (`probe` token rows, one blank image) whose output must be finite.
pub fn load_towers_chain(
    engines: &Engines,
    model: &ModelFiles,
    probe: &[Row],
    chain: &Chain,
) -> Result<LoadedTowers, ChainError> {
    let mut skipped = vec![];
    for unit in chain.units() {
        let mut skip = |kind: &str, reason: String| {
            tracing::warn!(unit = %unit, kind, "skipping {unit}: {reason}");
            skipped.push(SkippedUnit { unit: *unit, kind: kind.to_string(), reason });
        };
        match engines.availability(unit) {
            Availability::Usable => {}
            Availability::NotCompiled(r) => {
                skip("not_compiled", format!("{unit} is not compiled into this build: {r}"));
                continue;
            }
            Availability::Unusable(r) => {
                skip("unusable", format!("{unit} is unusable here: {r}"));
                continue;
            }
        }
        let t0 = Instant::now();
        let loaded = engines.with_engine(unit, |engine| Towers::load(engine, model, unit)).and_then(|mut towers| {
            let load_ms = t0.elapsed().as_secs_f64() * 1e3;
            towers.embed_texts(probe)?;
            let blank = towers.blank_image();
            towers.embed_images(&[blank])?;
            Ok((towers, load_ms))
        });
        match loaded {
            Ok((towers, load_ms)) => return Ok(LoadedTowers { towers, skipped, load_ms }),
            Err(e) => skip(e.kind(), e.to_string()),
        }
    }
    Err(ChainError { chain: chain.to_string(), skipped })
}
