//! `bulkhead bench` on the models that take audio or images, each unit in its own worker process: a speech-to-text
//! model's real-time factor and decoder tokens per second on the doctor's synthetic clip, a segmentation model's
//! image-encoder images per second and clicks per second on a cached embedding, timed as the doctor times them
//! ([`measure::speech`](crate::measure::speech), [`measure::segment`](crate::measure::segment)).

use std::time::Duration;

use bulkhead_core::{Availability, ModelFiles, Unit};
use bulkhead_embed::Engines;
use bulkhead_supervisor::ClientError;

use super::{describe, start_worker, BenchReport, BenchUnit, Options, SCHEMA};
use crate::measure::latency::Timed;
use crate::measure::{segment, speech, Inputs};
use crate::progress::Progress;
use crate::render::terminal::{self, Cell};
use crate::report::{ModelKind, SegmentSpeed};
use crate::{checks, media, Error};

/// Measures a speech-to-text or segmentation `model` on every unit of the chain.
pub fn run(model: &ModelFiles, options: &Options, engines: &Engines) -> Result<BenchReport, Error> {
    let inputs = Inputs::of(model).map_err(Error::Inputs)?;
    if matches!(inputs, Inputs::Text) {
        return Err(Error::Inputs(format!("{} takes text: bench it with its tokenizer", model.name)));
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut progress = Progress::new("bench");
    let mut units = vec![];
    for unit in options.chain.units() {
        let mut u = BenchUnit::new(unit);
        match engines.availability(unit) {
            Availability::Usable => {
                if let Err(e) = runtime.block_on(bench_unit(model, *unit, &inputs, options, &mut u, &mut progress)) {
                    u.error = Some(describe(&e));
                }
            }
            Availability::NotCompiled(r) | Availability::Unusable(r) => u.error = Some(r),
        }
        units.push(u);
    }
    progress.finish();
    Ok(BenchReport {
        schema: SCHEMA.into(),
        bulkhead_version: env!("CARGO_PKG_VERSION").into(),
        model: model.name.clone(),
        kind: inputs.kind(),
        machine: checks::machine(),
        seconds: options.seconds,
        units,
    })
}

/// One unit: a worker, then the transcriptions, or the encodes and the clicks.
async fn bench_unit(
    model: &ModelFiles,
    unit: Unit,
    inputs: &Inputs,
    options: &Options,
    u: &mut BenchUnit,
    progress: &mut Progress,
) -> Result<(), ClientError> {
    let mut worker = start_worker(model, unit, options, u, progress).await?;
    let timed = Timed { iterations: options.iterations, at_least: Duration::from_secs_f64(options.seconds) };
    let mut tick = |n: usize| progress.tick(n, options.iterations.max(n));
    match inputs {
        Inputs::Speech(clip) => {
            let (first, runs) = speech::runs(&mut worker, clip, timed, &mut tick).await.map_err(|(_, e)| e)?;
            u.speech = Some(media::speech_speed(clip.seconds, first.wall_ms, &runs));
        }
        Inputs::Segment(scene) => {
            let encoded = segment::encodes(&mut worker, scene, timed, &mut tick).await.map_err(|(_, e)| e)?;
            let clicked =
                segment::clicks(&mut worker, scene, &encoded.last_id, timed, &mut tick).await.map_err(|(_, e)| e)?;
            u.segmentation =
                Some(SegmentSpeed { input_side: scene.side, encoder: encoded.speed, clicks: clicked.speed });
        }
        Inputs::Text => {}
    }
    worker.shutdown().await;
    Ok(())
}

/// The bench table of a speech-to-text or segmentation model.
pub fn render(r: &BenchReport, colour: bool) -> String {
    let mut out = format!(
        "bulkhead bench {}: {} ({} model) on {} {} ({} CPUs), at least {} s per unit, round trip to a worker process\n",
        r.bulkhead_version,
        r.model,
        r.kind.as_str(),
        r.machine.os,
        r.machine.arch,
        r.machine.cpus,
        r.seconds
    );
    let precision = |u: &BenchUnit| Cell::from(u.precision.map(|p| p.to_string()).unwrap_or_default());
    match r.kind {
        ModelKind::Speech => {
            let rows = r
                .units
                .iter()
                .filter_map(|u| {
                    let s = u.speech.as_ref()?;
                    Some(vec![
                        Cell::from(u.unit.as_str()),
                        precision(u),
                        Cell::from(format!("{:.1}", s.clip_seconds)),
                        Cell::from(s.transcriptions.to_string()),
                        Cell::from(format!("{:.1}", s.p50_ms)),
                        Cell::from(format!("{:.1}x", s.rtf)),
                        Cell::from(format!(
                            "{:.1} / {:.1} / {:.1}",
                            s.features_p50_ms, s.encode_p50_ms, s.generate_p50_ms
                        )),
                        Cell::from(s.tokens.to_string()),
                        Cell::from(format!("{:.0}", s.decoder_tokens_per_s)),
                    ])
                })
                .collect();
            let headers = [
                "unit",
                "precision",
                "clip s",
                "runs",
                "p50 ms",
                "real time",
                "features / encode / generate ms",
                "tokens",
                "decoder tokens/s",
            ];
            terminal::table(&mut out, &headers, rows, colour);
        }
        _ => {
            let rows = r
                .units
                .iter()
                .filter_map(|u| {
                    let s = u.segmentation.as_ref()?;
                    Some(vec![
                        Cell::from(u.unit.as_str()),
                        precision(u),
                        Cell::from(s.input_side.to_string()),
                        Cell::from(s.encoder.runs.to_string()),
                        Cell::from(format!("{:.1}", s.encoder.p50_ms)),
                        Cell::from(format!("{:.1}", s.encoder.engine_p50_ms)),
                        Cell::from(format!("{:.1}", s.encoder.per_s)),
                        Cell::from(s.clicks.runs.to_string()),
                        Cell::from(format!("{:.2}", s.clicks.p50_ms)),
                        Cell::from(format!("{:.2}", s.clicks.engine_p50_ms)),
                        Cell::from(format!("{:.0}", s.clicks.per_s)),
                    ])
                })
                .collect();
            let headers = [
                "unit",
                "precision",
                "side",
                "images",
                "image p50 ms",
                "encoder p50 ms",
                "images/s",
                "clicks",
                "click p50 ms",
                "decoder p50 ms",
                "clicks/s",
            ];
            terminal::table(&mut out, &headers, rows, colour);
        }
    }
    for u in r.units.iter().filter(|u| u.error.is_some()) {
        out.push_str(&format!("  {}: not measured: {}\n", u.unit, u.error.as_deref().unwrap_or("")));
    }
    out
}
