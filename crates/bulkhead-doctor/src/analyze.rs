//! From measurements to conclusions: statistics, the verdict of each unit with its evidence, and the recommended
//! chain. Pure functions over the report, unit-tested below with synthetic numbers.

use std::collections::BTreeMap;

use bulkhead_core::{Precision, SessionReport};

use bulkhead_supervisor::LoadFailureKind;

use crate::report::{
    Accuracy, Availability, Branch, Finding, LatencyRow, Memory, Placement, ProviderNodes, Recommendation, Severity,
    ShapeRow, Shapes, UnitReport, Verdict,
};
use bulkhead_core::stats::{compare, mean, percentile, slope};

const MIB: f64 = (1u64 << 20) as f64;

/// Below this minimum cosine against the reference, a unit is `inaccurate`.
pub const MIN_COSINE_OK: f64 = 0.9999;
/// Resident growth per prediction (over the second half of the memory run) from which a unit `leaks`.
pub const LEAK_MIB_PER_PREDICTION: f64 = 1.0 / 16.0;
/// ... provided the run grew by at least this much in all.
pub const LEAK_MIN_GROWTH_MIB: f64 = 8.0;
/// A unit is `slow` when more than this many milliseconds per prediction (and more than half the engine time) are
/// lost outside the forward pass (a loaded 2-core machine shows up to ~5 ms of pipe and scheduling latency).
pub const SLOW_OVERHEAD_MS: f64 = 10.0;
/// A unit is `slow` when it is this many times slower at batch 1 than the fastest unit of the chain.
pub const SLOWER_THAN_FASTEST: f64 = 8.0;

/// A latency row from the first prediction of a shape and the timed ones after it.
pub fn latency_row(batch: usize, seq: usize, first_ms: f64, walls: &[f64], engine: &[f64]) -> LatencyRow {
    let m = mean(walls);
    LatencyRow {
        batch,
        seq,
        iterations: walls.len(),
        first_ms,
        min_ms: walls.iter().copied().fold(f64::INFINITY, f64::min).min(first_ms.max(0.0)).max(0.0),
        p50_ms: percentile(walls, 0.5),
        p95_ms: percentile(walls, 0.95),
        mean_ms: m,
        engine_p50_ms: percentile(engine, 0.5),
        overhead_p50_ms: percentile(&walls.iter().zip(engine).map(|(w, e)| (w - e).max(0.0)).collect::<Vec<_>>(), 0.5),
        engine_min_ms: if engine.is_empty() { 0.0 } else { engine.iter().copied().fold(f64::INFINITY, f64::min) },
        throughput_per_s: if m > 0.0 { batch as f64 * 1e3 / m } else { 0.0 },
    }
}

/// Dynamic shapes: spikes on the first prediction of a new length, the revisit, and the cost per token.
pub fn shapes(rows: Vec<ShapeRow>, revisit_seq: usize, revisit_ms: f64) -> Shapes {
    let spikes = rows.iter().filter(|r| r.spike).count();
    let revisit_p50 = rows.iter().find(|r| r.seq == revisit_seq).map_or(0.0, |r| r.p50_ms);
    let revisit_spike = is_spike(revisit_ms, revisit_p50);
    let recompiles_suspected = (spikes >= 2 && 2 * spikes >= rows.len()) || (spikes >= 1 && revisit_spike);
    let xs: Vec<f64> = rows.iter().map(|r| r.seq as f64).collect();
    let ys: Vec<f64> = rows.iter().map(|r| r.p50_ms).collect();
    let recommendation = recompiles_suspected.then(|| {
        let lens: Vec<String> = rows.iter().map(|r| r.seq.to_string()).collect();
        format!(
            "the first prediction of each new input length is slow ({spikes} of {} lengths spiked): pad inputs to \
             a few fixed buckets (e.g. {}) so the unit compiles each shape once",
            rows.len(),
            lens.join(", ")
        )
    });
    Shapes {
        rows,
        revisit_seq,
        revisit_ms,
        spikes,
        recompiles_suspected,
        ms_per_token: slope(&xs, &ys),
        recommendation,
    }
}

/// A first prediction of a shape that took more than three times the steady latency plus 20 ms (a recompilation
/// costs hundreds of milliseconds; a busy machine's scheduling hiccups stay below that).
pub fn is_spike(first_ms: f64, steady_ms: f64) -> bool {
    first_ms > 3.0 * steady_ms + 20.0
}

/// Memory over a run: the slope over its second half (after allocator warm-up) and the recycle interval that keeps
/// growth under `budget_mb`.
pub fn memory(rss: Vec<u64>, batch: usize, budget_mb: u64) -> Memory {
    let half = rss.len() / 2;
    let tail = &rss[half..];
    let xs: Vec<f64> = (half..rss.len()).map(|i| i as f64).collect();
    let ys: Vec<f64> = tail.iter().map(|&b| b as f64).collect();
    let s = slope(&xs, &ys);
    let recycle_every =
        (s / MIB >= LEAK_MIB_PER_PREDICTION).then(|| ((budget_mb as f64 * MIB) / s).floor().max(1.0) as u64);
    Memory {
        predictions: rss.len(),
        batch,
        rss_start_bytes: rss.first().copied().unwrap_or(0),
        rss_end_bytes: rss.last().copied().unwrap_or(0),
        slope_bytes_per_prediction: s,
        slope_mib_per_prediction: s / MIB,
        budget_mb,
        recycle_every,
        rss_bytes: rss,
    }
}

/// Whether a memory run shows the leak pattern: at least [`LEAK_MIB_PER_PREDICTION`] per prediction over its
/// second half, and [`LEAK_MIN_GROWTH_MIB`] in all.
pub fn leaks(m: &Memory) -> bool {
    let growth = (m.rss_end_bytes as f64 - m.rss_start_bytes as f64) / MIB;
    m.slope_mib_per_prediction >= LEAK_MIB_PER_PREDICTION && growth >= LEAK_MIN_GROWTH_MIB
}

/// Node placement of a session: what ran on the unit's provider and what fell back to the CPU.
pub fn placement(report: &SessionReport, provider: &str) -> Placement {
    let providers: Vec<ProviderNodes> = report
        .placement
        .iter()
        .map(|p| ProviderNodes { provider: p.provider.clone(), nodes: p.nodes, op_types: p.op_types.clone() })
        .collect();
    let total_nodes = providers.iter().map(|p| p.nodes).sum();
    let on_unit_nodes = providers.iter().filter(|p| p.provider == provider).map(|p| p.nodes).sum();
    let mut fallback_op_types = BTreeMap::new();
    let mut fallback_nodes = 0;
    if provider != "CPUExecutionProvider" {
        for p in providers.iter().filter(|p| p.provider == "CPUExecutionProvider") {
            fallback_nodes += p.nodes;
            for (op, n) in &p.op_types {
                *fallback_op_types.entry(op.clone()).or_default() += n;
            }
        }
    }
    Placement {
        reported: !providers.is_empty(),
        total_nodes,
        on_unit_nodes,
        fallback_nodes,
        fallback_op_types,
        providers,
    }
}

/// The branch of the diagnosis tree (docs/doctor.md) a load failure belongs to, by the engine's own classification:
/// a unit that cannot run here is `1b`; a format newer than the engine `1a`; an operator, architecture or head the
/// engine does not implement `5a`; files it refused and anything else around the engine `1c`.
pub fn load_error_branch(kind: LoadFailureKind) -> Branch {
    match kind {
        LoadFailureKind::NotCompiled | LoadFailureKind::Unusable => Branch::UnitCannotRun,
        LoadFailureKind::FormatTooNew => Branch::FormatVersion,
        LoadFailureKind::Unsupported => Branch::Unsupported,
        LoadFailureKind::ModelRejected | LoadFailureKind::Inference | LoadFailureKind::Setup => Branch::BrokenFiles,
    }
}

fn last_line(text: &str) -> &str {
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim()
}

/// The p50 latency of a unit at batch 1, if measured.
fn batch1_p50(u: &UnitReport) -> Option<f64> {
    u.latency.iter().find(|r| r.batch == 1).map(|r| r.p50_ms)
}

/// Decides the verdict of every unit, with its evidence. Units are compared side by side for `slow`.
pub fn verdicts(units: &mut [UnitReport]) {
    let fastest: Vec<(String, f64)> = units.iter().filter_map(|u| batch1_p50(u).map(|p| (u.unit.clone(), p))).collect();
    for u in units.iter_mut() {
        let (verdict, evidence) = decide(u, &fastest);
        u.verdict = verdict;
        u.evidence = evidence;
    }
}

fn decide(u: &UnitReport, batch1: &[(String, f64)]) -> (Verdict, Vec<String>) {
    if u.availability != Availability::Usable {
        let why = u.availability_reason.clone().unwrap_or_default();
        return (Verdict::Unusable, vec![format!("{} here: {why}", u.availability.in_words())]);
    }
    if let Some(c) = &u.crash {
        let how = match (&c.signal, c.exit_code, c.hung) {
            (_, _, true) => "hung (killed after the timeout)".to_string(),
            (Some(s), _, _) => format!("died of {s}"),
            (None, Some(code), _) => format!("exited with code {code}"),
            (None, None, _) => "ended".to_string(),
        };
        let tail = last_line(&c.stderr_tail);
        let mut e = format!("the worker {how} while {}", c.during);
        if !tail.is_empty() {
            e.push_str(&format!("; stderr: {tail}"));
        }
        return (Verdict::Crashes, vec![e]);
    }
    if let Some(l) = &u.load_error {
        return (Verdict::Unusable, vec![format!("the model does not load ({}, {}): {}", l.kind, l.branch, l.reason)]);
    }
    if let Some(f) = u.findings.iter().find(|f| f.branch == Branch::Predict) {
        return (Verdict::Unusable, vec![f.message.clone()]);
    }
    let mut found: Vec<(Verdict, String)> = vec![];
    if let Some(m) = &u.memory {
        if leaks(m) {
            let mut e = format!(
                "resident memory grows {:.2} MiB per prediction ({:.0} -> {:.0} MiB over {} predictions)",
                m.slope_mib_per_prediction,
                m.rss_start_bytes as f64 / MIB,
                m.rss_end_bytes as f64 / MIB,
                m.predictions
            );
            if let Some(n) = m.recycle_every {
                e.push_str(&format!("; recycle the worker every {n} predictions to stay under {} MiB", m.budget_mb));
            }
            found.push((Verdict::Leaks, e));
        }
    }
    if let Some(a) = &u.accuracy {
        // A NaN cosine (never hidden by `stats::compare`) is inaccurate too.
        if a.min_cosine.is_nan() || a.min_cosine < MIN_COSINE_OK {
            let q = if a.quantized { format!(" (quantized {} weights)", a.precision) } else { String::new() };
            found.push((
                Verdict::Inaccurate,
                format!(
                    "outputs differ from {}{q}: min cosine {:.6}, max abs diff {:.2e} over {} probes",
                    a.reference_unit, a.min_cosine, a.max_abs_diff, a.probes
                ),
            ));
        }
    }
    found.extend(crate::media::verdict_evidence(u));
    found.extend(crate::vision::verdict_evidence(u));
    for e in slow_evidence(u, batch1) {
        found.push((Verdict::Slow, e));
    }
    let verdict = found.iter().map(|(v, _)| *v).max().unwrap_or(Verdict::Ok);
    let mut evidence: Vec<String> = found.into_iter().map(|(_, e)| e).collect();
    if evidence.is_empty() {
        let mut e = vec![];
        if let Some(r) = u.latency.iter().find(|r| r.batch == 1) {
            e.push(format!("batch-1 p50 {:.2} ms", r.p50_ms));
        }
        if let Some(r) = u.latency.iter().max_by_key(|r| r.batch) {
            e.push(format!("{:.0}/s at batch {}", r.throughput_per_s, r.batch));
        }
        e.extend(crate::media::ok_evidence(u));
        e.extend(crate::vision::ok_evidence(u));
        if let Some(a) = &u.accuracy {
            e.push(format!("min cosine {:.6} vs {}", a.min_cosine, a.reference_unit));
        }
        if let Some(m) = &u.memory {
            e.push(format!("memory flat ({:+.3} MiB/prediction)", m.slope_mib_per_prediction));
        }
        evidence.push(e.join(", "));
    }
    (verdict, evidence)
}

/// Branch 2c (warm-up fast, live queries slow: another unit ran them): live forward passes much slower than the
/// worker's warm-up on the same inputs. A finding, not a verdict: a machine whose load changes between warm-up and
/// the measurement shows the same.
pub fn warmup_mismatch(u: &UnitReport) -> Option<Finding> {
    let load = u.load.as_ref()?;
    u.latency.iter().find_map(|row| {
        let w = load.warmup.iter().find(|w| w.batch == row.batch)?;
        (row.engine_min_ms > (2.0 * w.ms).max(w.ms + 5.0)).then(|| {
            Finding::new(
                Branch::OtherUnitRan,
                Severity::Warning,
                format!(
                    "live forward passes at batch {} take at least {:.1} ms while the warm-up on the same inputs took \
                     {:.1} ms: check that live requests run on the unit (and input preparation) the warm-up used",
                    row.batch, row.engine_min_ms, w.ms
                ),
            )
        })
    })
}

/// Why a unit is slow, if it is: time lost outside the forward pass, far slower than the fastest unit of the chain,
/// a very slow first prediction, or recompiles on new input lengths.
fn slow_evidence(u: &UnitReport, batch1: &[(String, f64)]) -> Vec<String> {
    let mut out = vec![];
    // Time lost around the forward pass: the worker computes fast, yet answers slowly.
    if let Some(row) =
        u.latency.iter().find(|r| r.overhead_p50_ms > SLOW_OVERHEAD_MS && r.overhead_p50_ms > 0.5 * r.engine_p50_ms)
    {
        out.push(format!(
            "{:.1} ms per prediction is lost outside the forward pass at batch {} (round trip p50 {:.1} ms, engine \
             p50 {:.1} ms)",
            row.overhead_p50_ms, row.batch, row.p50_ms, row.engine_p50_ms
        ));
    }
    if let Some(mine) = batch1_p50(u) {
        if let Some((other, best)) = batch1.iter().filter(|(n, _)| *n != u.unit).min_by(|a, b| a.1.total_cmp(&b.1)) {
            if mine > SLOWER_THAN_FASTEST * best {
                out.push(format!("batch-1 p50 {mine:.1} ms is {:.0}x {other}'s {best:.1} ms", mine / best));
            }
        }
    }
    if let Some(r) = u.latency.iter().find(|r| r.batch == 1) {
        if r.first_ms > 500.0 && r.first_ms > 20.0 * r.p50_ms {
            out.push(format!("the first live prediction took {:.0} ms, steady p50 {:.1} ms", r.first_ms, r.p50_ms));
        }
    }
    if let Some(s) = &u.shapes {
        if s.recompiles_suspected {
            out.push(format!("{} of {} input lengths spiked on their first prediction", s.spikes, s.rows.len()));
        }
    }
    let others: Vec<String> =
        batch1.iter().filter(|(n, _)| *n != u.unit).map(|(n, p)| format!("{n} {p:.1} ms")).collect();
    if let (Some(first), Some(mine), false) = (out.first_mut(), batch1_p50(u), others.is_empty()) {
        first.push_str(&format!(" (side by side, batch-1 p50: {} {mine:.1} ms, {})", u.unit, others.join(", ")));
    }
    out
}

/// Throughput at the largest batch size every unit in `units` measured (or each unit's largest).
fn speed(u: &UnitReport, batch: Option<usize>) -> f64 {
    let row = match batch {
        Some(b) => u.latency.iter().find(|r| r.batch == b),
        None => u.latency.iter().max_by_key(|r| r.batch),
    };
    row.map_or_else(|| crate::media::speed(u).map_or(0.0, |(s, _)| s), |r| r.throughput_per_s)
}

/// The recommended chain: healthy units first, fastest first; then units that work with a caveat (slow, leaking
/// with recycling, inaccurate); units that crash or cannot run are left out.
pub fn recommend(units: &[UnitReport]) -> Recommendation {
    let rank = |v: Verdict| match v {
        Verdict::Ok => Some(0),
        Verdict::Slow => Some(1),
        Verdict::Leaks => Some(2),
        Verdict::Inaccurate => Some(3),
        Verdict::Crashes | Verdict::Unusable => None,
    };
    let usable: Vec<&UnitReport> = units.iter().filter(|u| rank(u.verdict).is_some()).collect();
    let common = usable
        .iter()
        .map(|u| u.latency.iter().map(|r| r.batch).collect::<Vec<_>>())
        .reduce(|a, b| a.into_iter().filter(|x| b.contains(x)).collect())
        .and_then(|v| v.into_iter().max());
    let mut order = usable.clone();
    order.sort_by(|a, b| rank(a.verdict).cmp(&rank(b.verdict)).then(speed(b, common).total_cmp(&speed(a, common))));
    let mut notes = vec![];
    for (i, u) in order.iter().enumerate() {
        let s = speed(u, common);
        let at = common.map_or(String::new(), |b| format!(" at batch {b}"));
        let s = crate::media::speed(u).map_or(format!("{s:.0}/s{at}"), |(_, words)| words);
        let why = match u.verdict {
            Verdict::Ok if i == 0 => format!("{} first: ok and the fastest ({s})", u.unit),
            Verdict::Ok => format!("{}: ok ({s})", u.unit),
            v => format!("{}: {} ({})", u.unit, v.as_str(), u.evidence.first().cloned().unwrap_or_default()),
        };
        notes.push(why);
        if let Some(r) = u.shapes.as_ref().and_then(|s| s.recommendation.clone()) {
            notes.push(format!("{}: {r}", u.unit));
        }
    }
    for u in units.iter().filter(|u| rank(u.verdict).is_none()) {
        notes.push(format!(
            "{} left out: {} ({})",
            u.unit,
            u.verdict.as_str(),
            u.evidence.first().cloned().unwrap_or_default()
        ));
    }
    Recommendation { compute_units: order.iter().map(|u| u.unit.as_str()).collect::<Vec<_>>().join(","), notes }
}

/// Accuracy of `got` against the reference's outputs.
pub fn accuracy(
    got: &[Vec<f32>],
    want: &[Vec<f32>],
    reference_unit: &str,
    precision: Precision,
) -> Result<Accuracy, Finding> {
    let (min_cosine, mean_cosine, max_abs_diff) = compare(got, want).ok_or_else(|| {
        Finding::new(
            Branch::OutputShape,
            Severity::Problem,
            format!(
                "outputs have another shape than {reference_unit}'s ({} x {} vs {} x {})",
                got.len(),
                got.first().map_or(0, Vec::len),
                want.len(),
                want.first().map_or(0, Vec::len)
            ),
        )
    })?;
    Ok(Accuracy {
        reference_unit: reference_unit.to_string(),
        probes: got.len(),
        min_cosine,
        mean_cosine,
        max_abs_diff,
        precision,
        quantized: precision.is_reduced(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{CompiledCache, Crash, CrashPhase, LoadReport, WarmupRow};

    fn unit(name: &str, b1: f64, b32_per_s: f64) -> UnitReport {
        let mut u = UnitReport::new(name.into());
        u.latency = vec![
            latency_row(1, 12, b1, &[b1, b1, b1 * 1.1], &[b1 * 0.9; 3]),
            LatencyRow { batch: 32, throughput_per_s: b32_per_s, ..latency_row(32, 20, 60.0, &[60.0], &[59.0]) },
        ];
        u.load = Some(LoadReport {
            cold: Default::default(),
            cached: None,
            cache: CompiledCache::None,
            cold_cache_hit: None,
            cached_cache_hit: None,
            cache_dir: None,
            rss_after_load_bytes: 0,
            warmup: vec![WarmupRow { batch: 1, seq: 12, ms: b1 }],
        });
        u
    }

    #[test]
    fn memory_slope_and_recycling() {
        let m = memory((0..40).map(|i| 100 * (1 << 20) + i * (4 << 20)).collect(), 1, 256);
        assert!((m.slope_mib_per_prediction - 4.0).abs() < 1e-9);
        assert_eq!(m.recycle_every, Some(64));
        assert_eq!(memory(vec![5 << 20; 10], 1, 256).recycle_every, None);
    }

    #[test]
    fn verdicts_and_recommendation() {
        let mut units = vec![unit("candle:cpu", 13.0, 230.0), unit("ort:cpu", 4.0, 490.0)];
        verdicts(&mut units);
        assert_eq!((units[0].verdict, units[1].verdict), (Verdict::Ok, Verdict::Ok), "{units:?}");
        assert_eq!(recommend(&units).compute_units, "ort:cpu,candle:cpu");

        // 20 ms added to every live prediction: slow, by the warm-up comparison.
        let mut slow = unit("ort:cpu", 4.0, 300.0);
        for r in &mut slow.latency {
            r.p50_ms += 20.0;
            r.overhead_p50_ms += 20.0;
        }
        let mut units = vec![slow, unit("candle:cpu", 13.0, 230.0)];
        verdicts(&mut units);
        assert_eq!(units[0].verdict, Verdict::Slow, "{:?}", units[0].evidence);
        assert!(units[0].evidence[0].contains("outside the forward pass"), "{:?}", units[0].evidence);
        assert_eq!(units[1].verdict, Verdict::Ok);
        assert_eq!(recommend(&units).compute_units, "candle:cpu,ort:cpu");

        let mut leak = unit("ort:cpu", 4.0, 490.0);
        leak.memory = Some(memory((0..40).map(|i| (100 << 20) + i * (4 << 20)).collect(), 1, 256));
        let mut crash = unit("candle:cpu", 13.0, 230.0);
        crash.crash = Some(Crash {
            phase: CrashPhase::Loading,
            during: "loading the model".into(),
            signal: Some("SIGSEGV".into()),
            exit_code: None,
            hung: false,
            stderr_tail: "a\nfault injection: load_crash\n".into(),
        });
        let mut units = vec![leak, crash];
        verdicts(&mut units);
        assert_eq!(units[0].verdict, Verdict::Leaks);
        assert!(units[0].evidence[0].contains("every 64 predictions"), "{:?}", units[0].evidence);
        assert_eq!(units[1].verdict, Verdict::Crashes);
        assert!(units[1].evidence[0].contains("SIGSEGV") && units[1].evidence[0].contains("load_crash"));
        let rec = recommend(&units);
        assert_eq!(rec.compute_units, "ort:cpu");
        assert!(rec.notes.iter().any(|n| n.contains("candle:cpu left out")), "{rec:?}");
    }

    #[test]
    fn load_errors_map_to_branches() {
        use LoadFailureKind as K;
        let table = [
            (K::NotCompiled, Branch::UnitCannotRun),
            (K::Unusable, Branch::UnitCannotRun),
            (K::FormatTooNew, Branch::FormatVersion),
            (K::Unsupported, Branch::Unsupported),
            (K::ModelRejected, Branch::BrokenFiles),
            (K::Inference, Branch::BrokenFiles),
            (K::Setup, Branch::BrokenFiles),
        ];
        for (kind, branch) in table {
            assert_eq!(load_error_branch(kind), branch, "{kind}");
        }
    }

    #[test]
    fn spikes_suggest_buckets() {
        let rows = vec![
            ShapeRow { seq: 8, first_ms: 50.0, p50_ms: 3.0, spike: is_spike(50.0, 3.0) },
            ShapeRow { seq: 16, first_ms: 60.0, p50_ms: 4.0, spike: is_spike(60.0, 4.0) },
        ];
        let s = shapes(rows, 8, 3.2);
        assert!(s.recompiles_suspected && s.recommendation.unwrap().contains("buckets"));
        let calm = shapes(vec![ShapeRow { seq: 8, first_ms: 3.5, p50_ms: 3.0, spike: false }], 8, 3.1);
        assert!(!calm.recompiles_suspected);
    }
}
