//! Segmentation models (SAM2): a synthetic scene generated here (a gradient, a disc and a bar, at the model's input
//! side, so no file and no resize is needed) sent to a unit's worker as `/v1/segment` sends it (`Payload::Segment`):
//! new images through the image encoder, then clicks on the embedding the worker caches, then one fixed prompt whose
//! masks are compared between units. The bench times the same encodes and clicks.

use std::time::{Duration, Instant};

use bulkhead_core::ModelFiles;
use bulkhead_image::Preprocessor;
use bulkhead_segment::{InputImage, Masks, Prompt, SegmentJob, SegmentOutput};
use bulkhead_supervisor::{Answer, ClientError, Payload, RunError};

use super::latency::Timed;
use super::unit::Failed;
use super::worker::Worker;
use super::Plan;
use crate::progress::Progress;
use crate::report::{SegmentReport, SegmentSpeed, StepSpeed, UnitReport};
use crate::{analyze, media};

/// The image every unit segments, at the model's input side, and the point of its fixed click.
#[derive(Debug, Clone)]
pub struct Scene {
    /// Side of the square model input.
    pub side: u32,
    /// The image, already at the input size (the worker normalises it as it does a served image).
    pub image: InputImage,
    /// The fixed click, on the disc, in model-input coordinates.
    pub click: [f32; 2],
}

impl Scene {
    /// The scene for `model`, at the input size of its `preprocessor_config.json`; why not, when that file does not
    /// give a fixed size.
    pub fn for_model(model: &ModelFiles) -> Result<Scene, String> {
        let dir = if model.source.is_dir() { model.source.clone() } else { model.source.with_file_name("") };
        let pre = Preprocessor::from_model_dir(&dir).map_err(|e| e.to_string())?;
        let size = pre
            .input_size()
            .ok_or_else(|| format!("{}: the preprocessor gives no fixed input size for a SAM2 model", dir.display()))?;
        let side = size.width.max(1);
        Ok(Scene::new(side))
    }

    /// The synthetic scene at `side` x `side`: a vertical blue-grey gradient, an orange disc left of the centre and
    /// a dark green bar at the lower right.
    pub fn new(side: u32) -> Scene {
        let s = f64::from(side);
        let (cx, cy, radius) = (0.4 * s, 0.45 * s, 0.2 * s);
        let mut rgb = Vec::with_capacity((side * side * 3) as usize);
        for y in 0..side {
            for x in 0..side {
                let (fx, fy) = (f64::from(x) + 0.5, f64::from(y) + 0.5);
                let shade = (60.0 + 120.0 * fy / s) as u8;
                let px = if (fx - cx).powi(2) + (fy - cy).powi(2) <= radius * radius {
                    [240, 140, 30]
                } else if fx > 0.65 * s && fx < 0.9 * s && fy > 0.7 * s && fy < 0.85 * s {
                    [20, 90, 40]
                } else {
                    [shade / 2, shade, shade.saturating_add(40)]
                };
                rgb.extend_from_slice(&px);
            }
        }
        Scene { side, image: InputImage { width: side, height: side, rgb }, click: [cx as f32, cy as f32] }
    }

    /// A job on image `id`: its pixels along when `with_image`, one foreground click at `point`.
    fn job(&self, id: &str, with_image: bool, point: [f32; 2], multimask: bool) -> SegmentJob {
        SegmentJob {
            image_id: id.to_string(),
            image: with_image.then(|| self.image.clone()),
            prompt: Prompt { points: vec![point], labels: vec![1], ..Prompt::default() },
            multimask,
        }
    }

    /// The `k`-th click of a run: the cells of a 4 x 4 grid in turn, so that prompts vary as a user's do.
    fn click_at(&self, k: usize) -> [f32; 2] {
        let cell = self.side as f32 / 4.0;
        [((k % 4) as f32 + 0.5) * cell, ((k / 4 % 4) as f32 + 0.5) * cell]
    }
}

/// One answered job.
struct Segmented {
    masks: Masks,
    wall_ms: f64,
    rss_bytes: u64,
}

/// Sends `job`; masks, or `None` when the worker asked for the image (`NeedImage`).
async fn segment(worker: &mut Worker, job: SegmentJob) -> Result<Option<Segmented>, ClientError> {
    let ran = worker.run(&Payload::Segment(job)).await?;
    match ran.answer {
        Answer::Segment(SegmentOutput::Masks(masks)) => {
            Ok(Some(Segmented { masks, wall_ms: ran.wall_ms, rss_bytes: ran.rss_bytes }))
        }
        Answer::Segment(SegmentOutput::NeedImage) => Ok(None),
        other => Err(ClientError::Run(RunError::Engine(format!(
            "expected masks, got another answer ({} rows)",
            other.rows()
        )))),
    }
}

/// A job that must be answered with masks (it carries its image).
async fn masks_of(worker: &mut Worker, job: SegmentJob) -> Result<Segmented, ClientError> {
    segment(worker, job).await?.ok_or_else(|| {
        ClientError::Run(RunError::Engine("the worker asked for the image of a job that carried it".into()))
    })
}

/// Timed predictions of one step, with what the memory run needs.
pub struct Steps {
    pub speed: StepSpeed,
    /// Resident memory after each timed prediction.
    pub rss_bytes: Vec<u64>,
    /// Every click answered from the cached embedding (always `true` for encodes).
    pub reused: bool,
    /// The image id the last prediction used.
    pub last_id: String,
}

/// New images through the encoder: a first, untimed one, then timed ones (at least `timed.iterations`, for at
/// least `timed.at_least`), each under a new id so that the worker's cache never answers. A failure says which
/// (0 is the first).
pub async fn encodes(
    worker: &mut Worker,
    scene: &Scene,
    timed: Timed,
    tick: &mut dyn FnMut(usize),
) -> Result<Steps, (usize, ClientError)> {
    let id = |i: usize| format!("bulkhead-doctor-image-{i}");
    let first = masks_of(worker, scene.job(&id(0), true, scene.click, false)).await.map_err(|e| (0, e))?;
    let (mut walls, mut engine, mut rss) = (vec![], vec![], vec![]);
    let t0 = Instant::now();
    while walls.len() < timed.iterations || t0.elapsed() < timed.at_least {
        let n = walls.len() + 1;
        let s = masks_of(worker, scene.job(&id(n), true, scene.click, false)).await.map_err(|e| (n, e))?;
        walls.push(s.wall_ms);
        engine.push(s.masks.encode_ms);
        rss.push(s.rss_bytes);
        tick(n);
    }
    let last_id = id(walls.len());
    Ok(Steps { speed: media::step_speed(first.wall_ms, &walls, &engine), rss_bytes: rss, reused: true, last_id })
}

/// Clicks on image `id`, whose embedding the worker holds: a first, untimed one, then timed ones. A click the
/// worker cannot answer from its cache is sent again with the image (and `reused` turns `false`).
pub async fn clicks(
    worker: &mut Worker,
    scene: &Scene,
    id: &str,
    timed: Timed,
    tick: &mut dyn FnMut(usize),
) -> Result<Steps, (usize, ClientError)> {
    let mut reused = true;
    let (mut walls, mut engine, mut rss) = (vec![], vec![], vec![]);
    let mut first_ms = 0.0;
    let t0 = Instant::now();
    let mut k = 0;
    while walls.len() < timed.iterations || t0.elapsed() < timed.at_least {
        let point = scene.click_at(k);
        let s = match segment(worker, scene.job(id, false, point, false)).await.map_err(|e| (k, e))? {
            Some(s) => s,
            None => {
                reused = false;
                masks_of(worker, scene.job(id, true, point, false)).await.map_err(|e| (k, e))?
            }
        };
        if k == 0 {
            first_ms = s.wall_ms;
        } else {
            walls.push(s.wall_ms);
            engine.push(s.masks.decode_ms);
            rss.push(s.rss_bytes);
            tick(walls.len());
        }
        k += 1;
    }
    let speed = media::step_speed(first_ms, &walls, &engine);
    Ok(Steps { speed, rss_bytes: rss, reused, last_id: id.to_string() })
}

/// The doctor's measurement of a segmentation unit: `--iterations` new images through the encoder, then
/// `--predictions` clicks on the last one (resident memory after each: the memory section), then the fixed prompt
/// (three masks) whose masks the caller compares between units.
pub async fn measure(
    plan: &Plan<'_>,
    scene: &Scene,
    worker: &mut Worker,
    r: &mut UnitReport,
    progress: &mut Progress,
) -> Result<Masks, Failed> {
    let (iterations, predictions) = (plan.options.iterations, plan.options.predictions);
    progress.phase(&r.unit, &format!("image encoder, {iterations} images"));
    let timed = Timed { iterations, at_least: Duration::ZERO };
    let mut tick = |i: usize| progress.tick(i, iterations);
    let encoded = encodes(worker, scene, timed, &mut tick)
        .await
        .map_err(|(i, e)| (e, format!("predicting (image {} through the encoder)", i + 1)))?;
    progress.phase(&r.unit, &format!("{predictions} clicks on a cached embedding"));
    let timed = Timed { iterations: predictions, at_least: Duration::ZERO };
    let mut tick = |i: usize| progress.tick(i, predictions);
    let clicked = clicks(worker, scene, &encoded.last_id, timed, &mut tick)
        .await
        .map_err(|(i, e)| (e, format!("predicting (click {} on a cached embedding)", i + 1)))?;
    let fixed = masks_of(worker, scene.job(&encoded.last_id, true, scene.click, true))
        .await
        .map_err(|e| (e, "predicting (the fixed prompt)".to_string()))?
        .masks;
    r.memory = Some(analyze::memory(clicked.rss_bytes, 1, plan.options.memory_budget_mb));
    r.segmentation = Some(SegmentReport {
        speed: SegmentSpeed { input_side: scene.side, encoder: encoded.speed, clicks: clicked.speed },
        masks: fixed.count,
        iou_scores: fixed.iou_scores.clone(),
        foreground: media::foreground(&fixed),
        embedding_reused: clicked.reused,
        agreement: None,
    });
    r.findings.extend(media::segment_findings(r));
    Ok(fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scene_has_its_disc_under_the_click() {
        let s = Scene::new(64);
        assert_eq!(s.image.rgb.len(), 64 * 64 * 3);
        let at = |x: f32, y: f32| {
            let i = ((y as usize) * 64 + x as usize) * 3;
            [s.image.rgb[i], s.image.rgb[i + 1], s.image.rgb[i + 2]]
        };
        assert_eq!(at(s.click[0], s.click[1]), [240, 140, 30]);
        assert_ne!(at(1.0, 1.0), [240, 140, 30]);
        let clicks: Vec<[f32; 2]> = (0..16).map(|k| s.click_at(k)).collect();
        assert!(clicks.iter().all(|p| p[0] > 0.0 && p[0] < 64.0 && p[1] > 0.0 && p[1] < 64.0));
        assert_eq!(
            clicks.iter().map(|p| (p[0] as u32, p[1] as u32)).collect::<std::collections::BTreeSet<_>>().len(),
            16
        );
    }
}
