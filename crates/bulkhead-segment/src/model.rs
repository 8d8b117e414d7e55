//! SAM2's two graphs on one unit: the image encoder once per image (its three embeddings cached by the image's
//! content id) and the prompt encoder + mask decoder per click.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bulkhead_core::{EngineError, GraphSession, ModelFiles, NamedTensor, SessionReport, TensorData};
use bulkhead_graph::sam2::{build_sam2_cached, is_sam2, Sam2Graph, IMAGE_EMBEDDINGS};
use bulkhead_graph::GraphError;
use bulkhead_image::{ConfigError, Preprocessor, ProcessorKind, RgbImage};

use crate::cache::ByteLru;
use crate::job::{InputImage, Masks, Prompt, SegmentJob, SegmentOutput};

/// The environment variable (and `serve --image-cache-mb`) bounding the image caches, in MiB: the worker's
/// embeddings and the server's prepared images, each.
pub const IMAGE_CACHE_ENV: &str = "BULKHEAD_IMAGE_CACHE_MB";

/// The ONNX community's file names of a SAM2 export, beside config.json or under `onnx/`.
const PAIR: [&str; 2] = ["vision_encoder.onnx", "prompt_encoder_mask_decoder.onnx"];

/// Why a SAM2 model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The folder is not a SAM2 checkpoint and holds no ONNX pair.
    #[error("{0} is not a SAM2 model: config.json names no `Sam2Model` and there is no {a} + {b} pair", a = PAIR[0], b = PAIR[1])]
    NotSam2(String),
    /// The graphs could not be built from config.json and the safetensors.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// `preprocessor_config.json` is missing, invalid or not a SAM2 processor.
    #[error("{path}: {reason}")]
    Preprocessor {
        /// The folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A graph file could not be opened.
    #[error(transparent)]
    Files(#[from] bulkhead_core::ModelError),
    /// The engine refused a graph.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Why one job failed while the model stays loaded.
#[derive(Debug, thiserror::Error)]
pub enum RunFailure {
    /// The job does not fit the model (an image or mask of the wrong size): a bug of the sender.
    #[error("{0}")]
    Input(String),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The two graph files of a SAM2 model and whether they came from the graph cache.
#[derive(Debug, Clone)]
pub struct Sam2Files {
    /// `pixel_values` -> the three image embeddings.
    pub encoder: PathBuf,
    /// Embeddings + prompt -> masks.
    pub decoder: PathBuf,
    /// Where the graphs came from: `onnx pair`, `graph cache` or `built`.
    pub origin: &'static str,
}

fn folder(model: &ModelFiles) -> PathBuf {
    if model.source.is_dir() {
        model.source.clone()
    } else {
        model.source.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }
}

/// The model's two graphs: an ONNX community pair (`vision_encoder.onnx` + `prompt_encoder_mask_decoder.onnx`
/// beside config.json or under `onnx/`) as it is, else built from config.json and the safetensors into
/// `cache_dir` (once; later loads hit the cache).
pub fn graph_files(model: &ModelFiles, cache_dir: &Path) -> Result<Sam2Files, LoadError> {
    let root = folder(model);
    for dir in [root.clone(), root.join("onnx")] {
        let (enc, dec) = (dir.join(PAIR[0]), dir.join(PAIR[1]));
        if enc.is_file() && dec.is_file() {
            return Ok(Sam2Files { encoder: enc, decoder: dec, origin: "onnx pair" });
        }
    }
    if !is_sam2(model) {
        return Err(LoadError::NotSam2(root.display().to_string()));
    }
    let enc = build_sam2_cached(model, Sam2Graph::VisionEncoder, cache_dir)?;
    let dec = build_sam2_cached(model, Sam2Graph::PromptEncoderMaskDecoder, cache_dir)?;
    let origin = if enc.cache_hit && dec.cache_hit { "graph cache" } else { "built" };
    Ok(Sam2Files { encoder: enc.path, decoder: dec.path, origin })
}

/// A SAM2 model loaded on one unit, with its embedding cache.
pub struct Sam2 {
    encoder: Box<dyn GraphSession>,
    decoder: Box<dyn GraphSession>,
    preprocessor: Preprocessor,
    /// The model input's side (1024 for the released checkpoints).
    side: u32,
    /// The low-resolution mask's side (a quarter of `side`).
    mask_side: usize,
    /// Embeddings of recent images by content id.
    embeddings: ByteLru<Vec<NamedTensor>>,
    /// The warm-up image's embeddings: what a health probe decodes against (never evicted).
    warm: Vec<NamedTensor>,
    files: Sam2Files,
}

fn f32s(t: &NamedTensor) -> Result<&[f32], RunFailure> {
    match &t.data {
        TensorData::F32(v) => Ok(v),
        other => Err(RunFailure::Input(format!("output `{}` is {:?}, not float32", t.name, other.datatype()))),
    }
}

fn tensor(name: &str, shape: Vec<usize>, data: TensorData) -> Result<NamedTensor, RunFailure> {
    NamedTensor::new(name, shape, data).map_err(RunFailure::Input)
}

impl Sam2 {
    /// Loads the SAM2 model `model` with `load` (a graph file as a [`GraphSession`] on the caller's unit), its
    /// graphs from [`graph_files`], an embedding cache of `cache_bytes`. Nothing runs yet: call
    /// [`Sam2::warm_up`].
    pub fn load(
        model: &ModelFiles,
        cache_dir: &Path,
        cache_bytes: usize,
        load: impl Fn(&ModelFiles) -> Result<Box<dyn GraphSession>, EngineError>,
    ) -> Result<Sam2, LoadError> {
        let root = folder(model);
        let bad = |reason: String| LoadError::Preprocessor { path: root.join("preprocessor_config.json"), reason };
        let preprocessor = Preprocessor::from_model_dir(&root).map_err(|e: ConfigError| bad(e.to_string()))?;
        if preprocessor.kind() != ProcessorKind::Sam2 {
            return Err(bad(format!("{:?} is not Sam2ImageProcessor", preprocessor.kind())));
        }
        let side = match preprocessor.input_size() {
            Some(s) if s.width == s.height && s.width >= 16 => s.width,
            other => return Err(bad(format!("SAM2 takes a square input of at least 16 pixels, not {other:?}"))),
        };
        let files = graph_files(model, cache_dir)?;
        let open = |path: &Path| -> Result<Box<dyn GraphSession>, LoadError> { Ok(load(&ModelFiles::open(path)?)?) };
        let encoder = open(&files.encoder)?;
        let decoder = open(&files.decoder)?;
        let mask_side = decoder
            .inputs()
            .iter()
            .find(|s| s.name == "input_masks")
            .and_then(|s| s.shape.last().copied())
            .filter(|&d| d > 0)
            .map_or(side as usize / 4, |d| d as usize);
        Ok(Sam2 {
            encoder,
            decoder,
            preprocessor,
            side,
            mask_side,
            embeddings: ByteLru::new(cache_bytes),
            warm: vec![],
            files,
        })
    }

    /// What runs the image encoder (the heavier graph): unit, runtime, placement.
    pub fn report(&self) -> &SessionReport {
        self.encoder.report()
    }

    /// The two graph files.
    pub fn files(&self) -> &Sam2Files {
        &self.files
    }

    /// The model input's side in pixels.
    pub fn input_side(&self) -> u32 {
        self.side
    }

    /// The preprocessor (`preprocessor_config.json`).
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// Images whose embeddings are cached, and their bytes.
    pub fn cached(&self) -> (usize, usize) {
        (self.embeddings.len(), self.embeddings.bytes())
    }

    /// Runs the encoder on a mid-grey image and the decoder on a centre point against it: returns (encode ms,
    /// decode ms). The embeddings are kept for health probes.
    pub fn warm_up(&mut self) -> Result<(f64, f64), RunFailure> {
        let n = self.side as usize * self.side as usize * 3;
        let grey = InputImage { width: self.side, height: self.side, rgb: vec![128; n] };
        let t = Instant::now();
        self.warm = self.encode(&grey)?;
        let encode_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        self.probe()?;
        Ok((encode_ms, t.elapsed().as_secs_f64() * 1e3))
    }

    /// A health probe: the decoder on a centre point against the warm-up image's embeddings.
    pub fn probe(&mut self) -> Result<Masks, RunFailure> {
        let c = self.side as f32 / 2.0;
        let prompt = Prompt { points: vec![[c, c]], labels: vec![1], ..Prompt::default() };
        let mut warm = std::mem::take(&mut self.warm);
        let t = Instant::now();
        let out = self.decode(&mut warm, &prompt, true);
        self.warm = warm;
        let mut masks = out?;
        masks.decode_ms = t.elapsed().as_secs_f64() * 1e3;
        Ok(masks)
    }

    /// Runs one job: the encoder unless the image's embeddings are cached (or [`SegmentOutput::NeedImage`] when
    /// they are not and the job has no image), then the decoder.
    pub fn run(&mut self, job: &SegmentJob) -> Result<SegmentOutput, RunFailure> {
        let (mut embeddings, cached, encode_ms) = match (self.embeddings.remove(&job.image_id), &job.image) {
            (Some((e, _)), _) => (e, true, 0.0),
            (None, None) => return Ok(SegmentOutput::NeedImage),
            (None, Some(image)) => {
                let t = Instant::now();
                let e = self.encode(image)?;
                (e, false, t.elapsed().as_secs_f64() * 1e3)
            }
        };
        let t = Instant::now();
        let out = self.decode(&mut embeddings, &job.prompt, job.multimask);
        let decode_ms = t.elapsed().as_secs_f64() * 1e3;
        let bytes = embeddings.iter().map(|t| t.data.len() * 4).sum();
        self.embeddings.insert(job.image_id.clone(), embeddings, bytes);
        let mut masks = out?;
        masks.encode_ms = encode_ms;
        masks.decode_ms = decode_ms;
        masks.embedding_cached = cached;
        Ok(SegmentOutput::Masks(masks))
    }

    /// The image encoder: the 8-bit model-input image normalised, then the three embeddings.
    fn encode(&mut self, image: &InputImage) -> Result<Vec<NamedTensor>, RunFailure> {
        if (image.width, image.height) != (self.side, self.side) {
            return Err(RunFailure::Input(format!(
                "the image is {}x{}, the model takes {}x{}",
                image.width, image.height, self.side, self.side
            )));
        }
        let rgb = RgbImage::new(image.width, image.height, image.rgb.clone())
            .ok_or_else(|| RunFailure::Input("the image's bytes do not match its size".into()))?;
        let s = self.side as usize;
        let pixels = tensor("pixel_values", vec![1, 3, s, s], TensorData::F32(self.preprocessor.normalize(&rgb)))?;
        let outputs = self.encoder.run(std::slice::from_ref(&pixels))?;
        let mut embeddings = vec![];
        for name in IMAGE_EMBEDDINGS {
            let t = outputs.iter().find(|t| t.name == name).ok_or_else(|| {
                RunFailure::Input(format!(
                    "the image encoder has no output `{name}` (graph {})",
                    self.files.encoder.display()
                ))
            })?;
            embeddings.push(t.clone());
        }
        Ok(embeddings)
    }

    /// The prompt encoder + mask decoder on `embeddings` (the three tensors, borrowed as the first inputs and
    /// handed back unchanged).
    fn decode(&mut self, embeddings: &mut Vec<NamedTensor>, p: &Prompt, multimask: bool) -> Result<Masks, RunFailure> {
        let ms = self.mask_side;
        let n = p.points.len();
        if p.labels.len() != n || p.boxes.len() > 1 || (n == 0 && p.boxes.is_empty()) {
            return Err(RunFailure::Input(format!(
                "a prompt of {n} points, {} labels, {} boxes",
                p.labels.len(),
                p.boxes.len()
            )));
        }
        let (mask, has_mask) = match &p.mask {
            Some(m) if m.len() == ms * ms => (m.clone(), 1.0),
            Some(m) => {
                return Err(RunFailure::Input(format!("mask input of {} values, the model takes {ms}x{ms}", m.len())))
            }
            None => (vec![0.0; ms * ms], 0.0),
        };
        let prompt = [
            tensor("input_points", vec![1, 1, n, 2], TensorData::F32(p.points.iter().flatten().copied().collect()))?,
            tensor("input_labels", vec![1, 1, n], TensorData::I64(p.labels.clone()))?,
            tensor(
                "input_boxes",
                vec![1, p.boxes.len(), 4],
                TensorData::F32(p.boxes.iter().flatten().copied().collect()),
            )?,
            tensor("input_masks", vec![1, 1, ms, ms], TensorData::F32(mask))?,
            tensor("has_mask_input", vec![1], TensorData::F32(vec![has_mask]))?,
        ];
        // Only the inputs the graph declares (an exported pair may leave some out).
        let declared: Vec<String> = self.decoder.inputs().iter().map(|s| s.name.clone()).collect();
        let kept = embeddings.len();
        embeddings.extend(prompt.into_iter().filter(|t| declared.contains(&t.name)));
        let result = self.decoder.run(embeddings);
        embeddings.truncate(kept);
        let outputs = result?;
        let get = |name: &str| outputs.iter().find(|t| t.name == name);
        let (masks, ious) = match (multimask, get("single_pred_masks"), get("single_iou_scores")) {
            (false, Some(m), Some(i)) => (m, i),
            _ => (
                get("pred_masks").ok_or_else(|| RunFailure::Input("the decoder has no output `pred_masks`".into()))?,
                get("iou_scores").ok_or_else(|| RunFailure::Input("the decoder has no output `iou_scores`".into()))?,
            ),
        };
        let (mut logits, mut iou_scores) = (f32s(masks)?.to_vec(), f32s(ious)?.to_vec());
        let side = masks.shape.last().copied().unwrap_or(0);
        let mut count = iou_scores.len();
        if side == 0 || logits.len() != count * side * side {
            return Err(RunFailure::Input(format!("mask logits of shape {:?} for {count} IoU scores", masks.shape)));
        }
        if !multimask && count > 1 {
            // A graph without the single-mask outputs: keep the best of the candidates.
            let best = (0..count).max_by(|&a, &b| iou_scores[a].total_cmp(&iou_scores[b])).unwrap_or(0);
            logits = logits[best * side * side..(best + 1) * side * side].to_vec();
            iou_scores = vec![iou_scores[best]];
            count = 1;
        }
        let object_score = get("object_score_logits").and_then(|t| f32s(t).ok()?.first().copied()).unwrap_or(0.0);
        Ok(Masks {
            count,
            side,
            logits,
            iou_scores,
            object_score,
            encode_ms: 0.0,
            decode_ms: 0.0,
            embedding_cached: false,
        })
    }
}
