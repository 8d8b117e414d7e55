//! Inline SVG charts for the HTML report: grouped bars and lines on round axes, every label escaped.

use std::fmt::Write;

use super::html::esc;

const PALETTE: [&str; 8] = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#4b5563"];

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
