//! Everything measured on one unit: availability, a cold load in a private, empty compiled-model cache, node
//! placement, the measurements on the ready worker, a second (cached) load; and how a failed step becomes a finding
//! (a crash or hang, a load error, a failed prediction) instead of the end of the diagnosis.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bulkhead_core::{GraphCache, SessionReport, Unit};
use bulkhead_supervisor::{ClientError, Ready};

use super::latency::{self, Timed};
use super::worker::{Start, Worker};
use super::{segment, speech, vision, Inputs, Outputs, Plan};
use crate::analyze;
use crate::progress::Progress;
use crate::report::{
    self, Availability, Branch, CompiledCache, Crash, CrashPhase, Finding, LoadError, LoadReport, Severity, ShapeRow,
    UnitReport, WarmupRow,
};
use bulkhead_core::stats;

const MIB: f64 = (1u64 << 20) as f64;

/// A failed step: why, and what the worker was doing, in words.
pub(crate) type Failed = (ClientError, String);

/// Diagnoses one unit: returns its report and its outputs to compare with other units' (on the probe set, or the
/// masks of the fixed prompt).
pub async fn diagnose_unit(
    plan: &Plan<'_>,
    unit: Unit,
    availability: bulkhead_core::Availability,
    progress: &mut Progress,
) -> (UnitReport, Option<Outputs>) {
    let name = unit.to_string();
    let mut r = UnitReport::new(name.clone());
    match availability {
        bulkhead_core::Availability::Usable => {}
        bulkhead_core::Availability::NotCompiled(why) => {
            r.availability = Availability::NotCompiled;
            r.availability_reason = Some(why);
            return (r, None);
        }
        bulkhead_core::Availability::Unusable(why) => {
            r.availability = Availability::Unusable;
            r.availability_reason = Some(why);
            return (r, None);
        }
    }
    let dir = unit_dir(&plan.cache_root, unit);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    progress.phase(&name, "cold load");
    let start = |generation| Start {
        model: plan.model,
        unit,
        generation,
        faults: &plan.options.faults,
        cache_dir: Some(dir.as_path()),
        limits: plan.options.limits,
        memory: plan.options.worker_memory.as_ref(),
    };
    let (mut worker, ready) = match Worker::start(start(0)).await {
        Ok(started) => started,
        Err(e) => {
            let during = match &e {
                ClientError::Died { step: bulkhead_supervisor::client::Step::WarmingUp, .. } => "warming up",
                _ => "loading the model",
            };
            record_failure(&mut r, e, during);
            return (r, None);
        }
    };
    loaded(&mut r, unit, &ready);

    let mut probe_out = None;
    if let Err((e, during)) = measure(plan, &mut worker, &mut r, &mut probe_out, progress).await {
        record_failure(&mut r, e, &during);
        return (r, probe_out);
    }
    worker.shutdown().await;
    r.findings.extend(analyze::warmup_mismatch(&r));

    progress.phase(&name, "cached load");
    match Worker::start(start(1)).await {
        Ok((worker, ready)) => {
            if let Some(l) = r.load.as_mut() {
                l.cached = Some(load_timing(&ready));
                l.cached_cache_hit = cache_hit(&ready.report);
            }
            worker.shutdown().await;
        }
        Err(e) => record_failure(&mut r, e, "loading the model a second time"),
    }
    load_findings(&mut r);
    (r, probe_out)
}

fn unit_dir(root: &Path, unit: Unit) -> PathBuf {
    root.join(unit.to_string().replace([':', '[', ']'], "_"))
}

fn load_timing(ready: &Ready) -> report::LoadTiming {
    let t = ready.timing;
    report::LoadTiming {
        process_ms: t.process_ms,
        session_ms: t.session_ms,
        warmup_ms: t.warmup_ms,
        total_ms: t.total_ms,
    }
}

/// Whether the compiled-model cache was hit (`None`: the unit uses none).
fn cache_hit(report: &SessionReport) -> Option<bool> {
    report.graph_cache.map(|c| c == GraphCache::Hit)
}

/// What the cold load showed: the session (2c: the unit that really ran), its placement (1b), the load times.
fn loaded(r: &mut UnitReport, unit: Unit, ready: &Ready) {
    let session = &ready.report;
    r.session = Some(report::SessionInfo {
        unit: session.unit.to_string(),
        runtime: session.runtime.clone(),
        model_file: session.model_file.clone(),
        precision: session.precision,
        hidden_size: session.hidden_size,
        notes: session.notes.clone(),
    });
    if session.unit != unit {
        r.findings.push(Finding::new(
            Branch::OtherUnitRan,
            Severity::Problem,
            format!("asked for {unit}, the worker ran {}", session.unit),
        ));
    }
    #[cfg(feature = "ort")]
    let provider = bulkhead_ort::provider_name(unit.device);
    #[cfg(not(feature = "ort"))]
    let provider = "";
    let placement = analyze::placement(session, provider);
    if placement.fallback_nodes > 0 {
        let ops: Vec<String> = placement.fallback_op_types.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        r.findings.push(Finding::new(
            Branch::UnitCannotRun,
            Severity::Warning,
            format!(
                "{} of {} nodes fell back to the CPU: {}",
                placement.fallback_nodes,
                placement.total_nodes,
                ops.join(", ")
            ),
        ));
    }
    r.placement = Some(placement);
    let cold_hit = cache_hit(session);
    let cache = if session.graph_cache.is_some() { CompiledCache::BulkheadGraph } else { CompiledCache::None };
    r.load = Some(LoadReport {
        cold: load_timing(ready),
        cached: None,
        cache,
        cold_cache_hit: cold_hit,
        cached_cache_hit: None,
        cache_dir: (cache != CompiledCache::None).then(|| bulkhead_core::install::cache_dir().display().to_string()),
        rss_after_load_bytes: ready.rss_bytes,
        warmup: ready.warmup.iter().map(|w| WarmupRow { batch: w.batch, seq: w.seq, ms: w.ms }).collect(),
    });
}

/// Slow first load (2a): cold against cached.
fn load_findings(r: &mut UnitReport) {
    let Some(l) = &r.load else { return };
    let Some(cached) = &l.cached else { return };
    let msg = format!(
        "cold load {:.0} ms (session {:.0} ms), cached load {:.0} ms (session {:.0} ms); compiled-model cache: {}{}",
        l.cold.total_ms,
        l.cold.session_ms,
        cached.total_ms,
        cached.session_ms,
        l.cache,
        match l.cached_cache_hit {
            Some(true) => ", hit on the second load",
            Some(false) => ", missed on the second load",
            None => "",
        }
    );
    let slow_first = l.cold.session_ms > 2.0 * cached.session_ms + 500.0;
    r.findings.push(Finding::new(
        Branch::SlowFirstLoad,
        if slow_first { Severity::Warning } else { Severity::Info },
        msg,
    ));
}

/// Out of memory on load (3b): the weights and the loaded worker against the memory available.
pub fn memory_at_load(r: &mut UnitReport, weights: u64, available: u64) {
    let rss = r.load.as_ref().map_or(0, |l| l.rss_after_load_bytes);
    let need = rss.max(weights);
    if need == 0 {
        return;
    }
    let (severity, what) = if need as f64 > 0.8 * available as f64 {
        (Severity::Problem, "too close to the memory available: loading may fail or swap")
    } else {
        (Severity::Info, "fits")
    };
    let resident =
        if rss > 0 { format!(", worker resident after load {:.0} MiB", rss as f64 / MIB) } else { String::new() };
    r.findings.push(Finding::new(
        Branch::MemoryAtLoad,
        severity,
        format!(
            "weights {:.0} MiB{resident}, available {:.0} MiB: {what}",
            weights as f64 / MIB,
            available as f64 / MIB
        ),
    ));
}

/// Removes ANSI escape sequences (workers log in colour).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Records a failed step in the report: a crash or hang, a load error or a failed prediction.
fn record_failure(r: &mut UnitReport, error: ClientError, during: &str) {
    let hung = error.hung();
    match error {
        ClientError::Spawn(_) => r.findings.push(Finding::new(Branch::Predict, Severity::Problem, error.to_string())),
        ClientError::LoadFailed { kind, reason } => {
            let branch = analyze::load_error_branch(kind);
            r.findings.push(Finding::new(branch, Severity::Problem, format!("load failed ({kind}): {reason}")));
            r.load_error = Some(LoadError { kind: kind.into(), reason, branch });
        }
        ClientError::Died { step, exit } => {
            let how = match (&exit.signal, exit.code, hung) {
                (_, _, true) => "hung".to_string(),
                (Some(s), _, _) => s.clone(),
                (None, Some(c), _) => format!("exit code {c}"),
                _ => "ended".into(),
            };
            r.findings.push(Finding::new(Branch::Crash, Severity::Problem, format!("{how} while {during}")));
            r.crash = Some(Crash {
                phase: CrashPhase::from(step),
                during: during.into(),
                signal: exit.signal,
                exit_code: exit.code,
                hung,
                stderr_tail: strip_ansi(&exit.stderr_tail),
            });
        }
        ClientError::Run(e) => r.findings.push(Finding::new(
            Branch::Predict,
            Severity::Problem,
            format!("a prediction failed while {during}: {e}"),
        )),
    }
}

/// The measurements on a ready worker: for a text model latency per batch size, input lengths, probe outputs,
/// memory (then an image-text model's vision tower); a speech or segmentation model's own measurements otherwise.
async fn measure(
    plan: &Plan<'_>,
    worker: &mut Worker,
    r: &mut UnitReport,
    probe_out: &mut Option<Outputs>,
    progress: &mut Progress,
) -> Result<(), Failed> {
    match &plan.inputs {
        Inputs::Speech(clip) => return speech::measure(plan, clip, worker, r, progress).await,
        Inputs::Segment(scene) => {
            let masks = segment::measure(plan, scene, worker, r, progress).await?;
            *probe_out = Some(Outputs::Masks(Box::new(masks)));
            return Ok(());
        }
        Inputs::Text => {}
    }
    latency_per_batch(plan, worker, r, progress).await?;
    input_lengths(plan, worker, r, progress).await?;
    if let Some(probes) = &plan.probes {
        progress.phase(&r.unit, "probe outputs");
        let p = worker.predict(probes).await.map_err(|e| (e, "predicting the probe set".into()))?;
        *probe_out = Some(Outputs::Vectors(p.vectors));
    }
    memory_run(plan, worker, r, progress).await?;
    match &plan.vision {
        Some(images) => vision::measure(plan, images, worker, r, progress).await,
        None => Ok(()),
    }
}

/// Latency and throughput per batch size (2b, 2c).
async fn latency_per_batch(
    plan: &Plan<'_>,
    worker: &mut Worker,
    r: &mut UnitReport,
    progress: &mut Progress,
) -> Result<(), Failed> {
    let iterations = plan.options.iterations;
    let total = plan.batches.len() * (iterations + 1);
    progress.phase(&r.unit, "latency per batch size");
    let timed = Timed { iterations, at_least: Duration::ZERO };
    for (i, (size, batch)) in plan.batches.iter().enumerate() {
        let before = i * iterations;
        let mut tick = |n: usize| progress.tick(before + n, total);
        let row = latency::latency_row(worker, *size, batch, timed, &mut tick)
            .await
            .map_err(|(n, e)| (e, format!("predicting (batch {size}, prediction {})", n + 1)))?;
        r.latency.push(row);
    }
    Ok(())
}

/// Batch-1 latency at each input length, then the first length again (2b: recompiles on new shapes).
async fn input_lengths(
    plan: &Plan<'_>,
    worker: &mut Worker,
    r: &mut UnitReport,
    progress: &mut Progress,
) -> Result<(), Failed> {
    let Some((len0, b0)) = plan.lengths.first() else { return Ok(()) };
    progress.phase(&r.unit, "input lengths");
    let repeats = (plan.options.iterations / 4).clamp(3, 10);
    let mut rows = vec![];
    for (i, (len, b)) in plan.lengths.iter().enumerate() {
        let during = || format!("predicting (input length {len})");
        let first = worker.predict(b).await.map_err(|e| (e, during()))?.wall_ms;
        let mut walls = vec![];
        for _ in 0..repeats {
            walls.push(worker.predict(b).await.map_err(|e| (e, during()))?.wall_ms);
        }
        let p50 = stats::percentile(&walls, 0.5);
        rows.push(ShapeRow { seq: *len, first_ms: first, p50_ms: p50, spike: analyze::is_spike(first, p50) });
        progress.tick(i + 1, plan.lengths.len());
    }
    let revisit = worker.predict(b0).await.map_err(|e| (e, format!("predicting (input length {len0} again)")))?.wall_ms;
    let shapes = analyze::shapes(rows, *len0, revisit);
    let finding = match &shapes.recommendation {
        Some(rec) => Finding::new(Branch::DynamicShapes, Severity::Warning, rec.clone()),
        None => Finding::new(
            Branch::DynamicShapes,
            Severity::Info,
            format!(
                "no latency spikes across input lengths {}..{} tokens ({:.3} ms per token): dynamic shapes are fine here",
                len0,
                plan.lengths.last().map_or(0, |l| l.0),
                shapes.ms_per_token
            ),
        ),
    };
    r.findings.push(finding);
    r.shapes = Some(shapes);
    Ok(())
}

/// Resident memory after each of N single-input predictions (3a).
async fn memory_run(
    plan: &Plan<'_>,
    worker: &mut Worker,
    r: &mut UnitReport,
    progress: &mut Progress,
) -> Result<(), Failed> {
    if plan.singles.is_empty() {
        return Ok(());
    }
    let predictions = plan.options.predictions;
    progress.phase(&r.unit, &format!("memory over {predictions} predictions"));
    let mut rss = Vec::with_capacity(predictions);
    for i in 0..predictions {
        let b = &plan.singles[i % plan.singles.len()];
        let p =
            worker.predict(b).await.map_err(|e| (e, format!("predicting (prediction {} of the memory run)", i + 1)))?;
        rss.push(p.rss_bytes);
        progress.tick(i + 1, predictions);
    }
    r.memory = Some(analyze::memory(rss, 1, plan.options.memory_budget_mb));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_is_stripped_from_stderr_tails() {
        assert_eq!(strip_ansi("\x1b[33m WARN\x1b[0m fault injection"), " WARN fault injection");
        assert_eq!(strip_ansi("plain\nlines"), "plain\nlines");
    }
}
