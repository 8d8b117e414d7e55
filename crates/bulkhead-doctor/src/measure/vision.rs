//! Image-text models (CLIP, SigLIP): the vision tower measured on synthetic images generated here (a gradient, a
//! disc and a bar, at a few sizes and aspect ratios, no file needed), preprocessed by the model's own
//! `preprocessor_config.json` and sent to a unit's worker exactly as `/v1/embeddings` sends an image input
//! (`Row::Pixels` with the vision tower's encoder positions, through `Payload::Rows`): single-image latency,
//! images per second at a batch, whether the same images give the same vectors, resident memory after each
//! image. The bench times the same predictions.

use std::path::Path;
use std::time::Instant;

use bulkhead_core::{stats, ModelFiles, Row};
use bulkhead_image::{Preprocessor, RgbImage};
use bulkhead_supervisor::{ClientError, Payload};

use super::latency::Timed;
use super::unit::Failed;
use super::worker::Worker;
use super::{Batch, Plan};
use crate::progress::Progress;
use crate::report::{UnitReport, VisionReport, VisionSpeed};
use crate::{analyze, vision};

/// Images per prediction of the batch measure: the larger image batch the worker warms up with.
pub const BATCH: usize = 8;

/// The synthetic images every unit embeds, preprocessed for the model.
#[derive(Debug, Clone)]
pub struct Images {
    /// Side of the square model input.
    pub side: u32,
    /// `WIDTHxHEIGHT` of each image before preprocessing.
    pub sizes: Vec<String>,
    /// Each image as the worker is sent it.
    pub rows: Vec<Row>,
}

impl Images {
    /// The images for `model`: the vision tower's input side and positions from its config, the pixel values from
    /// its own preprocessor (as `bulkhead serve` builds them); why not, when the folder cannot say.
    pub fn for_model(model: &ModelFiles) -> Result<Images, String> {
        let spec = bulkhead_graph::tower_spec(model).map_err(|e| format!("{}: {e}", model.name))?;
        let folder = model.config.as_deref().and_then(Path::parent).unwrap_or(&model.source);
        let pre = Preprocessor::from_model_dir(folder)
            .map_err(|e| format!("{}: the image processor: {e}", folder.display()))?;
        let side = spec.image_size as u32;
        match pre.input_size() {
            Some(s) if s.width == side && s.height == side => {}
            other => {
                return Err(format!(
                    "{}: preprocessor_config.json makes {} images, but the vision tower takes {side}x{side}; fix the \
                     crop_size / size there",
                    folder.display(),
                    other.map_or("variable-size".to_string(), |s| format!("{}x{}", s.width, s.height))
                ))
            }
        }
        let mut images = Images { side, sizes: vec![], rows: vec![] };
        for (k, (w, h)) in shapes(side).into_iter().enumerate() {
            let pixels =
                pre.preprocess(&synthetic(w, h, k)).map_err(|e| format!("the synthetic {w}x{h} image: {e}"))?;
            images.sizes.push(format!("{w}x{h}"));
            images.rows.push(Row::Pixels { values: pixels.data, positions: spec.image_positions });
        }
        Ok(images)
    }

    /// `n` images cycling through the synthetic ones from the `start`-th, as one prediction.
    pub fn batch(&self, start: usize, n: usize) -> Batch {
        let rows = (0..n).map(|i| self.rows[(start + i) % self.rows.len()].clone()).collect();
        Batch { payload: Payload::Rows(rows), texts: vec![] }
    }

    /// Every synthetic image once, as one prediction.
    pub fn all(&self) -> Batch {
        self.batch(0, self.rows.len())
    }
}

/// Sizes of the synthetic images for an input side `s`: square at the input side, a 3:2 landscape and a 1:2
/// portrait larger than it (resized down, then centre-cropped), and a small square (resized up).
fn shapes(s: u32) -> [(u32, u32); 4] {
    let s = s.max(4);
    [(s, s), (3 * s / 2, s), (s, 2 * s), (s / 2 + 1, s / 2 + 1)]
}

/// A deterministic `width` x `height` scene, varied by `k`: a diagonal gradient, a disc and a bar whose places and
/// colours move with `k`. The same pixels on every machine.
pub fn synthetic(width: u32, height: u32, k: usize) -> RgbImage {
    let (w, h) = (f64::from(width.max(1)), f64::from(height.max(1)));
    let kf = k as f64;
    let (cx, cy, r) = ((0.3 + 0.1 * kf % 0.4) * w, (0.4 + 0.07 * kf % 0.3) * h, 0.2 * w.min(h));
    let disc = [(240 - 30 * k % 200) as u8, (140 + 20 * k % 100) as u8, (30 + 50 * k % 200) as u8];
    let mut rgb = Vec::with_capacity((w * h * 3.0) as usize);
    for y in 0..height.max(1) {
        for x in 0..width.max(1) {
            let (fx, fy) = (f64::from(x) + 0.5, f64::from(y) + 0.5);
            let shade = (40.0 + 160.0 * (fx / w + fy / h) / 2.0) as u8;
            let px = if (fx - cx).powi(2) + (fy - cy).powi(2) <= r * r {
                disc
            } else if fx > 0.6 * w && fx < 0.9 * w && fy > 0.7 * h && fy < 0.85 * h {
                [20, 90, 40]
            } else {
                [shade / 2, shade, shade.saturating_add(30)]
            };
            rgb.extend_from_slice(&px);
        }
    }
    RgbImage::new(width.max(1), height.max(1), rgb).expect("the buffer has width x height x 3 bytes")
}

/// Timed predictions of batches of `n` images (cycling through the synthetic ones): a first, untimed one, then at
/// least `timed.iterations` for at least `timed.at_least`. Returns the first round trip, the round trips and the
/// engine times; a failure says which prediction (0 is the first).
pub async fn timed(
    worker: &mut Worker,
    images: &Images,
    n: usize,
    timed: Timed,
    tick: &mut dyn FnMut(usize),
) -> Result<(f64, Vec<f64>, Vec<f64>), (usize, ClientError)> {
    let first = worker.predict(&images.batch(0, n)).await.map_err(|e| (0, e))?.wall_ms;
    let (mut walls, mut engine) = (vec![], vec![]);
    let t0 = Instant::now();
    while walls.len() < timed.iterations || t0.elapsed() < timed.at_least {
        let k = walls.len() + 1;
        let p = worker.predict(&images.batch(k, n)).await.map_err(|e| (k, e))?;
        walls.push(p.wall_ms);
        engine.push(p.engine_ms());
        tick(k);
    }
    Ok((first, walls, engine))
}

/// Single-image latency, then images per second at [`BATCH`], as one speed record.
pub async fn speed(
    worker: &mut Worker,
    images: &Images,
    t: Timed,
    tick: &mut dyn FnMut(usize),
) -> Result<VisionSpeed, (String, ClientError)> {
    let (first, walls, engine) =
        timed(worker, images, 1, t, tick).await.map_err(|(k, e)| (format!("single image {}", k + 1), e))?;
    let (_, batch_walls, _) = timed(worker, images, BATCH, t, tick)
        .await
        .map_err(|(k, e)| (format!("a batch of {BATCH} images, prediction {}", k + 1), e))?;
    Ok(vision::speed(images, first, &walls, &engine, &batch_walls))
}

/// The doctor's measurement of the vision tower on a unit: the speed, the synthetic images twice (determinism, and
/// the vectors compared with the other units'), then `--predictions` single images with resident memory after
/// each (the leak finding when it grows per image).
pub async fn measure(
    plan: &Plan<'_>,
    images: &Images,
    worker: &mut Worker,
    r: &mut UnitReport,
    progress: &mut Progress,
) -> Result<(), Failed> {
    let iterations = plan.options.iterations;
    progress.phase(&r.unit, &format!("vision tower: {iterations} single images, {iterations} batches of {BATCH}"));
    let t = Timed { iterations, at_least: std::time::Duration::ZERO };
    let total = 2 * iterations;
    let mut done = 0;
    let mut tick = |_: usize| {
        done += 1;
        progress.tick(done.min(total), total);
    };
    let speed = speed(worker, images, t, &mut tick).await.map_err(|(what, e)| (e, format!("predicting ({what})")))?;
    let during = |what: &str| format!("predicting (the synthetic images, {what})");
    let vectors = worker.predict(&images.all()).await.map_err(|e| (e, during("first time")))?.vectors;
    let again = worker.predict(&images.all()).await.map_err(|e| (e, during("second time")))?.vectors;
    let n = plan.options.predictions;
    progress.phase(&r.unit, &format!("vision tower: memory over {n} images"));
    let mut rss = Vec::with_capacity(n);
    for i in 0..n {
        let p = worker
            .predict(&images.batch(i, 1))
            .await
            .map_err(|e| (e, format!("predicting (image {} of the memory run)", i + 1)))?;
        rss.push(p.rss_bytes);
        progress.tick(i + 1, n);
    }
    r.vision = Some(VisionReport {
        speed,
        dimensions: vectors.first().map_or(0, Vec::len),
        deterministic: vectors == again,
        memory: analyze::memory(rss, 1, plan.options.memory_budget_mb),
        agreement: None,
        vectors,
    });
    r.findings.extend(vision::findings(r));
    Ok(())
}

/// The lowest cosine of paired vectors (1 when there are none).
pub fn min_cosine(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    a.iter().zip(b).map(|(x, y)| stats::cosine(x, y)).fold(1.0, f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_images_are_fixed_and_varied() {
        let a = synthetic(48, 32, 0);
        assert_eq!((a.width(), a.height(), a.as_raw().len()), (48, 32, 48 * 32 * 3));
        assert_eq!(a, synthetic(48, 32, 0), "the same pixels every time");
        assert_ne!(a, synthetic(48, 32, 1), "another image for another k");
        let distinct: std::collections::BTreeSet<&[u8]> = a.as_raw().chunks(3).collect();
        assert!(distinct.len() > 10, "not a flat image: {} colours", distinct.len());
        assert_eq!(shapes(32), [(32, 32), (48, 32), (32, 64), (17, 17)]);
    }

    /// The rows are what the server sends for the same images: the model's own preprocessor, the tower's positions.
    #[test]
    fn images_are_preprocessed_as_the_server_does() {
        for (name, positions) in [("clip-tiny-random", 17), ("siglip-tiny-random", 16)] {
            let dir = bulkhead_testkit::fixture(&format!("vision/{name}"));
            let model = ModelFiles::open(&dir).unwrap();
            let images = Images::for_model(&model).unwrap();
            assert_eq!((images.side, images.rows.len()), (32, 4), "{name}");
            let pre = Preprocessor::from_model_dir(&dir).unwrap();
            for (k, (row, (w, h))) in images.rows.iter().zip(shapes(32)).enumerate() {
                let want = pre.preprocess(&synthetic(w, h, k)).unwrap().data;
                assert_eq!(row, &Row::Pixels { values: want, positions }, "{name} image {k}");
            }
            let batch = images.batch(3, 8);
            assert_eq!((batch.len(), batch.texts.len()), (8, 0));
        }
    }

    #[test]
    fn a_preprocessor_that_misses_the_tower_input_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let src = bulkhead_testkit::fixture("vision/clip-tiny-random");
        for f in std::fs::read_dir(&src).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, tmp.path().join(f.file_name().unwrap())).unwrap();
        }
        let config = std::fs::read_to_string(src.join("preprocessor_config.json")).unwrap();
        let config = config.replace("\"height\": 32", "\"height\": 48").replace("\"width\": 32", "\"width\": 48");
        std::fs::write(tmp.path().join("preprocessor_config.json"), config).unwrap();
        let err = Images::for_model(&ModelFiles::open(tmp.path()).unwrap()).unwrap_err();
        assert!(err.contains("makes 48x48 images, but the vision tower takes 32x32"), "{err}");
    }
}
