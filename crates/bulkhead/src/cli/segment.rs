//! `bulkhead segment`: segment one image with a SAM2 model from points and/or a box, through a supervised worker
//! on the first unit of the chain that runs it (the server's path: a crash of the engine is an error message,
//! not a crash of this command).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bulkhead_core::ModelTask;
use bulkhead_image::{decode, Limits, Preprocessor, Size};
use bulkhead_segment::prompt::final_masks;
use bulkhead_segment::{image_id, InputImage, MappedPrompt, SegmentJob, SegmentOutput};
use bulkhead_supervisor::{faults, Job, Supervisor, SupervisorConfig};
use serde_json::json;

use super::common::{engines, ModelArgs, UsageError};

/// Arguments of `bulkhead segment`.
#[derive(Debug, clap::Args)]
pub struct SegmentArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The image (PNG, JPEG, WebP, GIF or BMP).
    image: PathBuf,
    /// A prompt point `X,Y[,LABEL]` in image pixels (LABEL 1 foreground, the default; 0 background); repeat for
    /// several.
    #[arg(long = "point", value_name = "X,Y[,LABEL]", value_parser = parse_point)]
    points: Vec<(f32, f32, i64)>,
    /// A prompt box `X0,Y0,X1,Y1` (top-left, bottom-right) in image pixels.
    #[arg(long = "box", value_name = "X0,Y0,X1,Y1", value_parser = parse_box)]
    bounding_box: Option<[f32; 4]>,
    /// Three candidate masks instead of the single best one (`--out` then writes the one with the highest
    /// predicted IoU).
    #[arg(long)]
    multimask: bool,
    /// Write the mask as an 8-bit PNG (foreground 255) at the image's size.
    #[arg(long, value_name = "mask.png")]
    out: Option<PathBuf>,
    /// Print one JSON object: model, unit, image_id, width, height, masks (COCO RLE), iou_scores, timing_ms.
    #[arg(long)]
    json: bool,
    /// The most pixels the image's header may declare.
    #[arg(long, env = "BULKHEAD_MAX_IMAGE_PIXELS", default_value_t = bulkhead_image::DEFAULT_MAX_PIXELS)]
    max_image_pixels: u64,
}

fn numbers(s: &str, what: &str) -> Result<Vec<f32>, String> {
    s.split(',')
        .map(|v| v.trim().parse::<f32>().ok().filter(|f| f.is_finite()))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| format!("`{s}` is not {what}"))
}

fn parse_point(s: &str) -> Result<(f32, f32, i64), String> {
    let v = numbers(s, "X,Y or X,Y,LABEL (numbers)")?;
    match v[..] {
        [x, y] => Ok((x, y, 1)),
        [x, y, l] if l == 0.0 || l == 1.0 => Ok((x, y, l as i64)),
        [_, _, l] => Err(format!("label {l} is not 1 (foreground) or 0 (background)")),
        _ => Err(format!("`{s}` is not X,Y or X,Y,LABEL")),
    }
}

fn parse_box(s: &str) -> Result<[f32; 4], String> {
    let v = numbers(s, "X0,Y0,X1,Y1 (numbers)")?;
    <[f32; 4]>::try_from(v).map_err(|_| format!("`{s}` is not X0,Y0,X1,Y1"))
}

impl SegmentArgs {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        let t_start = Instant::now();
        let model = self.model.open()?;
        if model.task != ModelTask::Segmentation {
            return Err(UsageError(format!(
                "{} is {}, not a segmentation model (a SAM2 folder: config.json with `Sam2Model`)",
                model.name,
                model.task.noun()
            ))
            .into());
        }
        let bytes = std::fs::read(&self.image)
            .map_err(|e| UsageError(format!("cannot read the image {}: {e}", self.image.display())))?;
        let t = Instant::now();
        let limits = Limits { max_pixels: self.max_image_pixels, ..Limits::default() };
        let decoded = decode(&bytes, limits).map_err(|e| UsageError(format!("{}: {e}", self.image.display())))?.image;
        let decode_ms = t.elapsed().as_secs_f64() * 1e3;
        let folder = if model.source.is_dir() { model.source.clone() } else { model.source.with_file_name("") };
        let preprocessor = Preprocessor::from_model_dir(&folder).map_err(|e| UsageError(format!("{e}")))?;
        let side = preprocessor.input_size().map_or(1024, |s| s.width);
        let t = Instant::now();
        let input = preprocessor.resize_and_crop(&decoded).map_err(|e| UsageError(format!("{e}")))?;
        let preprocess_ms = t.elapsed().as_secs_f64() * 1e3;
        let original = Size { height: decoded.height(), width: decoded.width() };
        let points: Vec<[f32; 2]> = self.points.iter().map(|&(x, y, _)| [x, y]).collect();
        let labels: Vec<i64> = self.points.iter().map(|&(_, _, l)| l).collect();
        let boxes: Vec<[f32; 4]> = self.bounding_box.into_iter().collect();
        let prompt = MappedPrompt::new(&points, Some(&labels), &boxes, original, side)
            .map_err(|e| UsageError(format!("{e} (--point X,Y[,LABEL], --box X0,Y0,X1,Y1)")))?;
        let id = image_id(&bytes);
        let job = SegmentJob {
            image_id: id.clone(),
            image: Some(InputImage { width: input.width(), height: input.height(), rgb: input.as_raw().to_vec() }),
            prompt: prompt.prompt,
            multimask: self.multimask,
        };

        let rules = faults::from_env().map_err(|e| UsageError(e.to_string()))?;
        let config = SupervisorConfig { faults: rules, state_dir: None, ..SupervisorConfig::default() };
        let chain = self.model.chain().clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let name = model.name.clone();
        let answer = runtime.block_on(async move {
            let sup = Supervisor::start(model, &chain, Arc::new(engines()), config);
            let ready = sup.wait_ready().await;
            let result = match ready {
                Ok(_) => sup.run(Job::segment(job)).await.map_err(|e| anyhow::anyhow!("{name}: {e}")),
                Err(e) => Err(anyhow::anyhow!("{e}")),
            };
            sup.shutdown().await;
            result
        })?;
        let unit = answer.unit;
        let masks = match answer.answer.into_segment() {
            Some(SegmentOutput::Masks(m)) => m,
            _ => anyhow::bail!("the worker answered no masks"),
        };
        let t = Instant::now();
        let finals = final_masks(&masks, original).context("mask post-processing")?;
        let best = (0..finals.len()).max_by(|&a, &b| masks.iou_scores[a].total_cmp(&masks.iou_scores[b]));
        if let (Some(out), Some(best)) = (&self.out, best) {
            std::fs::write(out, finals[best].to_png()).with_context(|| format!("cannot write {}", out.display()))?;
        }
        let post_ms = t.elapsed().as_secs_f64() * 1e3;
        let total_ms = t_start.elapsed().as_secs_f64() * 1e3;

        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        if self.json {
            let obj = json!({
                "model": self.model.model.clone().unwrap_or_else(|| folder.display().to_string()),
                "unit": unit,
                "image_id": id,
                "width": original.width,
                "height": original.height,
                "masks": finals.iter().map(|m| json!({"rle": m.to_rle()})).collect::<Vec<_>>(),
                "iou_scores": masks.iou_scores,
                "out": self.out,
                "timing_ms": {
                    "decode": decode_ms,
                    "preprocess": preprocess_ms,
                    "encode": masks.encode_ms,
                    "decode_masks": masks.decode_ms,
                    "post": post_ms,
                    "total": total_ms,
                },
            });
            serde_json::to_writer(&mut out, &obj)?;
            writeln!(out)?;
        } else {
            for (i, (m, iou)) in finals.iter().zip(&masks.iou_scores).enumerate() {
                let share = m.area() as f64 / (original.width as f64 * original.height as f64) * 100.0;
                writeln!(out, "mask {i}: predicted IoU {iou:.4}, {} pixels ({share:.1}% of the image)", m.area())?;
            }
            eprintln!(
                "{}x{} image on {unit}: decode {decode_ms:.1} ms, preprocess {preprocess_ms:.1} ms, encode {:.1} ms, \
                 masks {:.1} ms, post {post_ms:.1} ms{}",
                original.width,
                original.height,
                masks.encode_ms,
                masks.decode_ms,
                self.out.as_ref().map(|p| format!("; mask written to {}", p.display())).unwrap_or_default()
            );
        }
        Ok(())
    }
}
