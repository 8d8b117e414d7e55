//! The HTML report: one self-contained page (inline CSS, inline SVG charts, no script, no external URL) with the
//! verdicts, the charts (latency and throughput per unit and batch size, memory over predictions, latency over input
//! length, load times) and the tables. `scripts/render-doctor-html.sh` renders it to PNG with headless Chromium.

use std::fmt::Write;

use super::svg::{bar_chart, line_chart};
use crate::report::{LatencyRow, ModelKind, Report, UnitReport, Verdict};

const MIB: f64 = (1u64 << 20) as f64;

/// Escapes text for HTML and SVG.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "ok",
        Verdict::Slow | Verdict::Inaccurate | Verdict::Leaks => "warn",
        Verdict::Crashes | Verdict::Unusable => "bad",
    }
}

pub(crate) fn html_table(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
    if rows.is_empty() {
        out.push_str("<p class=\"muted\">not measured</p>");
        return;
    }
    out.push_str("<table><tr>");
    for h in headers {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr>");
    for row in rows {
        out.push_str("<tr>");
        for c in row {
            let _ = write!(out, "<td>{}</td>", esc(c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1180px;color:#111827;background:#fff}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #e5e7eb;padding-bottom:4px}
.muted{color:#6b7280}.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #e5e7eb;border-left-width:6px;border-radius:6px;padding:10px 14px;min-width:240px;flex:1}
.card.ok{border-left-color:#16a34a}.card.warn{border-left-color:#d97706}.card.bad{border-left-color:#dc2626}
.verdict{font-weight:700;text-transform:uppercase;font-size:13px}.ok .verdict{color:#16a34a}.warn .verdict{color:#b45309}.bad .verdict{color:#dc2626}
.charts{display:flex;flex-wrap:wrap;gap:16px}.chart{border:1px solid #e5e7eb;border-radius:6px;background:#fafafa}
.title{font-size:14px;font-weight:600;text-anchor:middle}.tick{font-size:11px;fill:#374151}.axis{font-size:12px;fill:#374151}.value{font-size:9px;fill:#374151}
.grid{stroke:#e5e7eb}table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #e5e7eb;padding:4px 8px;text-align:left}th{background:#f3f4f6}
code,pre{font-family:ui-monospace,monospace;font-size:12px}pre{background:#111827;color:#e5e7eb;padding:10px;border-radius:6px;overflow-x:auto}
.rec{font-size:16px;background:#ecfdf5;border:1px solid #16a34a;border-radius:6px;padding:10px 14px}";

/// The whole page: one section after another.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    header(&mut o, r);
    verdicts(&mut o, r);
    recommendation(&mut o, r);
    charts(&mut o, r);
    match r.settings.kind {
        ModelKind::Text => {
            latency(&mut o, r);
            super::vision::html_section(&mut o, r);
        }
        _ => super::media::html_sections(&mut o, r),
    }
    load(&mut o, r);
    placement(&mut o, r);
    memory(&mut o, r);
    if r.settings.kind == ModelKind::Text {
        accuracy(&mut o, r);
    }
    crashes(&mut o, r);
    findings(&mut o, r);
    o
}

/// The page's head and the model, machine and chain.
fn header(o: &mut String, r: &Report) {
    let m = &r.model;
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>bulkhead doctor: {name}</title><style>{CSS}</style></head><body>",
        name = esc(&m.name)
    );
    let _ = write!(
        o,
        "<h1>bulkhead doctor: {}</h1><p class=\"muted\">{} &middot; {} &middot; {:.0} MiB of weights &middot; {} {} with {} CPUs &middot; {} &middot; chain <code>{}</code></p>",
        esc(&m.name),
        esc(&m.source),
        esc(&m.format),
        m.weights_bytes as f64 / MIB,
        esc(&r.machine.os),
        esc(&r.machine.arch),
        r.machine.cpus,
        esc(r.machine.onnxruntime.as_deref().unwrap_or("")),
        esc(&r.settings.chain)
    );
    if r.settings.faults.as_array().is_some_and(|a| !a.is_empty()) {
        let _ = write!(o, "<p><b>Fault injection active:</b> <code>{}</code></p>", esc(&r.settings.faults.to_string()));
    }
}

/// One card per unit.
fn verdicts(o: &mut String, r: &Report) {
    o.push_str("<h2>Verdicts</h2><div class=\"cards\">");
    for u in &r.units {
        let _ = write!(
            o,
            "<div class=\"card {}\"><div><b>{}</b> <span class=\"verdict\">{}</span></div><div class=\"muted\">{}</div></div>",
            verdict_class(u.verdict),
            esc(&u.unit),
            u.verdict.as_str(),
            esc(&u.evidence.join("; "))
        );
    }
    o.push_str("</div>");
}

/// The recommended chain and why.
fn recommendation(o: &mut String, r: &Report) {
    let rec = if r.recommendation.compute_units.is_empty() {
        "no unit of the chain can run this model".to_string()
    } else {
        format!("BULKHEAD_COMPUTE_UNITS={}", r.recommendation.compute_units)
    };
    let _ = write!(o, "<h2>Recommendation</h2><p class=\"rec\"><code>{}</code></p><ul>", esc(&rec));
    for n in &r.recommendation.notes {
        let _ = write!(o, "<li>{}</li>", esc(n));
    }
    o.push_str("</ul>");
}

/// Latency and throughput per batch size, memory over predictions, latency over input length, load times.
fn charts(o: &mut String, r: &Report) {
    o.push_str("<h2>Charts</h2><div class=\"charts\">");
    super::media::html_charts(o, r);
    super::vision::html_charts(o, r);
    let names: Vec<String> = r.units.iter().filter(|u| !u.latency.is_empty()).map(|u| u.unit.clone()).collect();
    let groups: Vec<String> = r.settings.batch_sizes.iter().map(|b| format!("batch {b}")).collect();
    let per_batch = |f: &dyn Fn(&LatencyRow) -> f64| -> Vec<(String, Vec<Option<f64>>)> {
        r.units
            .iter()
            .filter(|u| !u.latency.is_empty())
            .map(|u| {
                let v =
                    r.settings.batch_sizes.iter().map(|b| u.latency.iter().find(|l| l.batch == *b).map(f)).collect();
                (u.unit.clone(), v)
            })
            .collect()
    };
    if !names.is_empty() {
        o.push_str(&bar_chart(
            "Latency p50 per batch size",
            "milliseconds",
            "batch size",
            &groups,
            &per_batch(&|l| l.p50_ms),
        ));
        o.push_str(&bar_chart(
            "Throughput per batch size",
            "inputs per second",
            "batch size",
            &groups,
            &per_batch(&|l| l.throughput_per_s),
        ));
    }
    let mem: Vec<(String, Vec<(f64, f64)>)> = r
        .units
        .iter()
        .filter_map(|u| {
            let m = u.memory.as_ref()?;
            Some((
                u.unit.clone(),
                m.rss_bytes.iter().enumerate().map(|(i, b)| ((i + 1) as f64, *b as f64 / MIB)).collect(),
            ))
        })
        .collect();
    if !mem.is_empty() {
        o.push_str(&line_chart("Resident memory over predictions", "MiB", "prediction", &mem));
    }
    let shapes: Vec<(String, Vec<(f64, f64)>)> = r
        .units
        .iter()
        .filter_map(|u| {
            let s = u.shapes.as_ref()?;
            Some((u.unit.clone(), s.rows.iter().map(|x| (x.seq as f64, x.p50_ms)).collect()))
        })
        .collect();
    if !shapes.is_empty() {
        o.push_str(&line_chart("Latency over input length (batch 1)", "milliseconds", "tokens", &shapes));
    }
    let loads: Vec<&UnitReport> = r.units.iter().filter(|u| u.load.is_some()).collect();
    if !loads.is_empty() {
        let groups: Vec<String> = loads.iter().map(|u| u.unit.clone()).collect();
        let cold = loads.iter().map(|u| u.load.as_ref().map(|l| l.cold.session_ms)).collect();
        let cached =
            loads.iter().map(|u| u.load.as_ref().and_then(|l| l.cached.as_ref().map(|c| c.session_ms))).collect();
        o.push_str(&bar_chart(
            "Session creation: cold and cached load",
            "milliseconds",
            "unit",
            &groups,
            &[("cold".into(), cold), ("cached".into(), cached)],
        ));
    }
    o.push_str("</div>");
}

/// Latency and throughput per batch size (2b, 2c).
fn latency(o: &mut String, r: &Report) {
    o.push_str("<h2>Latency and throughput (2b, 2c)</h2>");
    let rows: Vec<Vec<String>> = r
        .units
        .iter()
        .flat_map(|u| {
            u.latency.iter().map(move |l| {
                vec![
                    u.unit.clone(),
                    l.batch.to_string(),
                    l.seq.to_string(),
                    format!("{:.2}", l.first_ms),
                    format!("{:.2}", l.p50_ms),
                    format!("{:.2}", l.p95_ms),
                    format!("{:.2}", l.engine_p50_ms),
                    format!("{:.0}", l.throughput_per_s),
                ]
            })
        })
        .collect();
    html_table(o, &["unit", "batch", "tokens", "first ms", "p50 ms", "p95 ms", "engine p50 ms", "inputs/s"], &rows);
}

/// Load times, caches, resident memory and load errors (1a-1c, 2a, 3b).
fn load(o: &mut String, r: &Report) {
    o.push_str("<h2>Load (1a-1c, 2a, 3b)</h2>");
    let rows: Vec<Vec<String>> = r
        .units
        .iter()
        .map(|u| {
            let s = u.session.as_ref();
            let l = u.load.as_ref();
            vec![
                u.unit.clone(),
                s.map_or("-".into(), |s| format!("{} on {}", s.runtime, s.unit)),
                s.map_or("-".into(), |s| s.precision.to_string()),
                l.map_or("-".into(), |l| format!("{:.0}", l.cold.total_ms)),
                l.and_then(|l| l.cached.as_ref()).map_or("-".into(), |c| format!("{:.0}", c.total_ms)),
                l.map_or("-".into(), |l| l.cache.to_string()),
                l.map_or("-".into(), |l| format!("{:.0}", l.rss_after_load_bytes as f64 / MIB)),
                u.load_error.as_ref().map_or(String::new(), |e| format!("[{}] {}", e.branch, e.reason)),
            ]
        })
        .collect();
    html_table(
        o,
        &["unit", "ran on", "precision", "cold ms", "cached ms", "cache", "resident MiB", "load error"],
        &rows,
    );
}

/// Node placement and CPU fallbacks (1b, 5a).
fn placement(o: &mut String, r: &Report) {
    o.push_str("<h2>Placement (1b, 5a)</h2>");
    let rows: Vec<Vec<String>> = r
        .units
        .iter()
        .filter_map(|u| {
            let p = u.placement.as_ref()?;
            let ops: Vec<String> = p.fallback_op_types.iter().map(|(k, v)| format!("{k}x{v}")).collect();
            let providers: Vec<String> = p.providers.iter().map(|x| format!("{}: {}", x.provider, x.nodes)).collect();
            Some(vec![
                u.unit.clone(),
                if p.reported { providers.join(", ") } else { "whole model on the unit (no per-node fallback)".into() },
                p.fallback_nodes.to_string(),
                ops.join(" "),
            ])
        })
        .collect();
    html_table(o, &["unit", "nodes per provider", "fell back to CPU", "fallback op types"], &rows);
}

/// Resident memory over predictions (3a).
fn memory(o: &mut String, r: &Report) {
    o.push_str("<h2>Memory (3a)</h2>");
    let rows: Vec<Vec<String>> = r
        .units
        .iter()
        .filter_map(|u| {
            let m = u.memory.as_ref()?;
            Some(vec![
                u.unit.clone(),
                m.predictions.to_string(),
                format!("{:.0}", m.rss_start_bytes as f64 / MIB),
                format!("{:.0}", m.rss_end_bytes as f64 / MIB),
                format!("{:.3}", m.slope_mib_per_prediction),
                m.recycle_every.map_or("-".into(), |n| n.to_string()),
            ])
        })
        .collect();
    html_table(o, &["unit", "predictions", "start MiB", "end MiB", "MiB per prediction", "recycle every"], &rows);
}

/// Outputs against the reference (4a, 4b, 5b).
fn accuracy(o: &mut String, r: &Report) {
    let _ = write!(
        o,
        "<h2>Accuracy (4a, 4b, 5b)</h2><p class=\"muted\">{}</p>",
        esc(&r.reference.as_ref().map_or("no fp32 CPU reference".into(), |x| format!(
            "{} probes against {} ({}, {})",
            r.settings.probes, x.unit, x.model, x.precision
        )))
    );
    let rows: Vec<Vec<String>> = r
        .units
        .iter()
        .filter_map(|u| {
            let a = u.accuracy.as_ref()?;
            Some(vec![
                u.unit.clone(),
                a.precision.to_string(),
                if a.quantized { "yes".into() } else { "no".into() },
                format!("{:.7}", a.min_cosine),
                format!("{:.7}", a.mean_cosine),
                format!("{:.2e}", a.max_abs_diff),
            ])
        })
        .collect();
    html_table(o, &["unit", "precision", "quantized", "min cosine", "mean cosine", "max abs diff"], &rows);
}

/// Workers that died or hung, with their stderr tails.
fn crashes(o: &mut String, r: &Report) {
    for u in &r.units {
        if let Some(c) = &u.crash {
            let how = match (&c.signal, c.exit_code, c.hung) {
                (_, _, true) => "hung".to_string(),
                (Some(s), _, _) => s.clone(),
                (None, Some(code), _) => format!("exit code {code}"),
                _ => "ended".into(),
            };
            let _ = write!(
                o,
                "<h2>Crash: {} ({})</h2><p>{} while {}</p><pre>{}</pre>",
                esc(&u.unit),
                esc(&how),
                esc(&how),
                esc(&c.during),
                esc(&c.stderr_tail)
            );
        }
    }
}

/// Every finding, the model's first, and the page's end.
fn findings(o: &mut String, r: &Report) {
    o.push_str("<h2>Findings</h2><ul>");
    for f in &r.model.findings {
        let _ = write!(o, "<li>[{}] {} model: {}</li>", f.branch, f.severity, esc(&f.message));
    }
    for u in &r.units {
        for f in &u.findings {
            let _ = write!(o, "<li>[{}] {} {}: {}</li>", f.branch, f.severity, esc(&u.unit), esc(&f.message));
        }
    }
    let _ = writeln!(
        o,
        "</ul><p class=\"muted\">bulkhead {} &middot; schema {}</p></body></html>",
        esc(&r.bulkhead_version),
        esc(&r.schema)
    );
}
