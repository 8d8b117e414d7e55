//! The HTML report: one self-contained page (inline CSS, inline SVG charts, no script, no external URL) with the
//! verdicts, the charts (latency and throughput per unit and batch size, memory over predictions, latency over input
//! length, load times) and the tables. `scripts/render-doctor-html.sh` renders it to PNG with headless Chromium.

use std::fmt::Write;

use super::report::{Report, Verdict};

const MIB: f64 = (1u64 << 20) as f64;
const PALETTE: [&str; 8] = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#4b5563"];

/// Escapes text for HTML and SVG.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A round upper bound and tick step for an axis from 0 to `max`.
fn axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 || v.abs() >= 10.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

const W: f64 = 560.0;
const H: f64 = 300.0;
const L: f64 = 64.0;
const R: f64 = 16.0;
const T: f64 = 36.0;
const B: f64 = 64.0;

fn frame(svg: &mut String, title: &str, y_label: &str, x_label: &str, y_max: f64, step: f64) {
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}"><text x="{cx}" y="20" class="title">{t}</text>"#,
        t = esc(title),
        cx = W / 2.0
    );
    let ph = H - T - B;
    let mut v = 0.0;
    while v <= y_max + step / 2.0 {
        let y = T + ph - v / y_max * ph;
        let _ = write!(
            svg,
            r#"<line x1="{L}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{tx}" y="{ty:.1}" class="tick" text-anchor="end">{label}</text>"#,
            x2 = W - R,
            tx = L - 6.0,
            ty = y + 4.0,
            label = fmt_tick(v)
        );
        v += step;
    }
    let _ = write!(
        svg,
        r#"<text x="14" y="{cy}" class="axis" transform="rotate(-90 14 {cy})" text-anchor="middle">{yl}</text><text x="{cx}" y="{by}" class="axis" text-anchor="middle">{xl}</text>"#,
        cy = T + ph / 2.0,
        yl = esc(y_label),
        cx = L + (W - L - R) / 2.0,
        by = H - 30.0,
        xl = esc(x_label)
    );
}

fn legend(svg: &mut String, names: &[String]) {
    let mut x = L;
    for (i, n) in names.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="{y}" width="12" height="12" fill="{c}"/><text x="{tx}" y="{ty}" class="tick">{n}</text>"#,
            y = H - 18.0,
            c = PALETTE[i % PALETTE.len()],
            tx = x + 16.0,
            ty = H - 8.0,
            n = esc(n)
        );
        x += 24.0 + 7.0 * n.chars().count() as f64;
    }
}

/// Grouped bars: one group per label, one bar per series.
pub fn bar_chart(
    title: &str,
    y_label: &str,
    x_label: &str,
    groups: &[String],
    series: &[(String, Vec<Option<f64>>)],
) -> String {
    let max = series.iter().flat_map(|(_, v)| v.iter().flatten()).copied().fold(0.0, f64::max);
    let (y_max, step) = axis(max);
    let mut svg = String::new();
    frame(&mut svg, title, y_label, x_label, y_max, step);
    let pw = W - L - R;
    let ph = H - T - B;
    let gw = pw / groups.len().max(1) as f64;
    let bw = (gw * 0.8) / series.len().max(1) as f64;
    for (g, label) in groups.iter().enumerate() {
        let gx = L + g as f64 * gw;
        let _ = write!(
            svg,
            r#"<text x="{x:.1}" y="{y}" class="tick" text-anchor="middle">{l}</text>"#,
            x = gx + gw / 2.0,
            y = T + ph + 16.0,
            l = esc(label)
        );
        for (s, (name, values)) in series.iter().enumerate() {
            let Some(v) = values.get(g).copied().flatten() else { continue };
            let h = v / y_max * ph;
            let x = gx + gw * 0.1 + s as f64 * bw;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{c}"><title>{n}: {v:.2}</title></rect><text x="{tx:.1}" y="{ty:.1}" class="value" text-anchor="middle">{vl}</text>"#,
                y = T + ph - h,
                w = (bw - 2.0).max(1.0),
                c = PALETTE[s % PALETTE.len()],
                n = esc(name),
                tx = x + bw / 2.0 - 1.0,
                ty = T + ph - h - 3.0,
                vl = fmt_tick(v)
            );
        }
    }
    legend(&mut svg, &series.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());
    svg.push_str("</svg>");
    svg
}

/// Lines: one per series of (x, y) points.
pub fn line_chart(title: &str, y_label: &str, x_label: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let pts = series.iter().flat_map(|(_, p)| p.iter());
    let x_max_raw = pts.clone().map(|p| p.0).fold(0.0, f64::max);
    let y_max_raw = pts.map(|p| p.1).fold(0.0, f64::max);
    let (y_max, step) = axis(y_max_raw);
    let (x_max, x_step) = axis(x_max_raw);
    let mut svg = String::new();
    frame(&mut svg, title, y_label, x_label, y_max, step);
    let pw = W - L - R;
    let ph = H - T - B;
    let mut v = 0.0;
    while v <= x_max + x_step / 2.0 {
        let _ = write!(
            svg,
            r#"<text x="{x:.1}" y="{y}" class="tick" text-anchor="middle">{l}</text>"#,
            x = L + v / x_max * pw,
            y = T + ph + 16.0,
            l = fmt_tick(v)
        );
        v += x_step;
    }
    for (s, (name, points)) in series.iter().enumerate() {
        let path: Vec<String> =
            points.iter().map(|(x, y)| format!("{:.1},{:.1}", L + x / x_max * pw, T + ph - y / y_max * ph)).collect();
        let c = PALETTE[s % PALETTE.len()];
        let _ = write!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"><title>{}</title></polyline>"#,
            path.join(" "),
            esc(name)
        );
        if points.len() <= 16 {
            for p in &path {
                let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = write!(svg, r#"<circle cx="{x}" cy="{y}" r="3" fill="{c}"/>"#);
            }
        }
    }
    legend(&mut svg, &series.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());
    svg.push_str("</svg>");
    svg
}

fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "ok",
        Verdict::Slow | Verdict::Inaccurate | Verdict::Leaks => "warn",
        Verdict::Crashes | Verdict::Unusable => "bad",
    }
}

fn html_table(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
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

/// The whole page.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
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

    // Charts.
    o.push_str("<h2>Charts</h2><div class=\"charts\">");
    let names: Vec<String> = r.units.iter().filter(|u| !u.latency.is_empty()).map(|u| u.unit.clone()).collect();
    let groups: Vec<String> = r.settings.batch_sizes.iter().map(|b| format!("batch {b}")).collect();
    let per_batch = |f: &dyn Fn(&super::report::LatencyRow) -> f64| -> Vec<(String, Vec<Option<f64>>)> {
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
    let loads: Vec<&super::report::UnitReport> = r.units.iter().filter(|u| u.load.is_some()).collect();
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

    // Tables.
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
    html_table(
        &mut o,
        &["unit", "batch", "tokens", "first ms", "p50 ms", "p95 ms", "engine p50 ms", "inputs/s"],
        &rows,
    );

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
                s.map_or("-".into(), |s| s.precision.clone()),
                l.map_or("-".into(), |l| format!("{:.0}", l.cold.total_ms)),
                l.and_then(|l| l.cached.as_ref()).map_or("-".into(), |c| format!("{:.0}", c.total_ms)),
                l.map_or("-".into(), |l| l.cache.clone()),
                l.map_or("-".into(), |l| format!("{:.0}", l.rss_after_load_bytes as f64 / MIB)),
                u.load_error.as_ref().map_or(String::new(), |e| format!("[{}] {}", e.branch, e.reason)),
            ]
        })
        .collect();
    html_table(
        &mut o,
        &["unit", "ran on", "precision", "cold ms", "cached ms", "cache", "resident MiB", "load error"],
        &rows,
    );

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
    html_table(&mut o, &["unit", "nodes per provider", "fell back to CPU", "fallback op types"], &rows);

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
    html_table(&mut o, &["unit", "predictions", "start MiB", "end MiB", "MiB per prediction", "recycle every"], &rows);

    let _ = write!(
        o,
        "<h2>Accuracy (4a-4c, 5b)</h2><p class=\"muted\">{}</p>",
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
                a.precision.clone(),
                if a.quantized { "yes".into() } else { "no".into() },
                format!("{:.7}", a.min_cosine),
                format!("{:.7}", a.mean_cosine),
                format!("{:.2e}", a.max_abs_diff),
            ])
        })
        .collect();
    html_table(&mut o, &["unit", "precision", "quantized", "min cosine", "mean cosine", "max abs diff"], &rows);

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

    o.push_str("<h2>Findings</h2><ul>");
    for f in &m.findings {
        let _ = write!(o, "<li>[{}] {} model: {}</li>", esc(&f.branch), esc(&f.severity), esc(&f.message));
    }
    for u in &r.units {
        for f in &u.findings {
            let _ =
                write!(o, "<li>[{}] {} {}: {}</li>", esc(&f.branch), esc(&f.severity), esc(&u.unit), esc(&f.message));
        }
    }
    let _ = writeln!(
        o,
        "</ul><p class=\"muted\">bulkhead {} &middot; schema {}</p></body></html>",
        esc(&r.bulkhead_version),
        esc(&r.schema)
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_round() {
        assert_eq!(axis(7.3), (8.0, 2.0));
        assert_eq!(axis(480.0), (500.0, 100.0));
        assert_eq!(axis(0.0), (1.0, 0.2));
    }

    #[test]
    fn charts_are_inline_svg_with_escaped_labels() {
        let svg = bar_chart("a<b", "ms", "batch", &["1".into()], &[("ort:cpu".into(), vec![Some(3.0)])]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>") && svg.contains("a&lt;b"));
        let svg = line_chart("mem", "MiB", "n", &[("x".into(), vec![(1.0, 2.0), (2.0, 3.0)])]);
        assert!(svg.contains("<polyline"));
    }
}
