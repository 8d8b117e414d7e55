//! `bulkhead bench` on an image-text model's vision tower (CLIP, SigLIP): after the text rows, each unit's worker
//! embeds the doctor's synthetic images ([`measure::vision`](crate::measure::vision)), single images then batches,
//! timed as the doctor times them; the table of single-image latency and images per second.

use std::time::Duration;

use bulkhead_supervisor::ClientError;

use super::{BenchReport, Options};
use crate::measure::latency::Timed;
use crate::measure::vision::{self, Images};
use crate::measure::worker::Worker;
use crate::progress::Progress;
use crate::render::terminal::{self, Cell};
use crate::report::VisionSpeed;

/// The vision tower's speed on `worker`: at least `--iterations` single images and batches, for at least
/// `--seconds` each.
pub async fn speed(
    worker: &mut Worker,
    images: &Images,
    options: &Options,
    unit: &str,
    progress: &mut Progress,
) -> Result<VisionSpeed, ClientError> {
    progress.phase(unit, &format!("vision tower: single images, batches of {}", vision::BATCH));
    let timed = Timed { iterations: options.iterations, at_least: Duration::from_secs_f64(options.seconds) };
    let mut tick = |n: usize| progress.tick(n, options.iterations.max(n));
    vision::speed(worker, images, timed, &mut tick).await.map_err(|(_, e)| e)
}

/// The vision table, after the text rows (nothing when no unit measured a vision tower).
pub fn render(out: &mut String, r: &BenchReport, colour: bool) {
    let rows: Vec<Vec<Cell>> = r
        .units
        .iter()
        .filter_map(|u| {
            let s = u.vision.as_ref()?;
            Some(vec![
                Cell::from(u.unit.as_str()),
                Cell::from(u.precision.map(|p| p.to_string()).unwrap_or_default()),
                Cell::from(s.input_side.to_string()),
                Cell::from(s.single_runs.to_string()),
                Cell::from(format!("{:.2}", s.p50_ms)),
                Cell::from(format!("{:.2}", s.p99_ms)),
                Cell::from(format!("{:.2}", s.engine_p50_ms)),
                Cell::from(s.batch.to_string()),
                Cell::from(s.batch_runs.to_string()),
                Cell::from(format!("{:.2}", s.batch_p50_ms)),
                Cell::from(format!("{:.1}", s.images_per_s)),
            ])
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    out.push_str("vision tower (synthetic images, preprocessed as the server does):\n");
    let headers = [
        "unit",
        "precision",
        "side",
        "images",
        "p50 ms",
        "p99 ms",
        "engine p50 ms",
        "batch",
        "batches",
        "batch p50 ms",
        "images/s",
    ];
    terminal::table(out, &headers, rows, colour);
}
