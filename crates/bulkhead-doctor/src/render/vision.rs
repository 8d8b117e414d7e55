//! The vision section of an image-text model's report (CLIP, SigLIP), as text and as HTML (a table and a chart):
//! per unit, single-image latency, images per second at a batch, the image vectors' width, whether the same images
//! gave the same vectors, resident memory per image, and the vectors' agreement with the first unit's.

use std::fmt::Write;

use super::html::{esc, html_table};
use super::svg::bar_chart;
use super::terminal::{heading, table, Cell};
use crate::report::{Report, UnitReport, VisionReport};

const MIB: f64 = (1u64 << 20) as f64;

fn vision_units(r: &Report) -> impl Iterator<Item = (&UnitReport, &VisionReport)> {
    r.units.iter().filter_map(|u| u.vision.as_ref().map(|v| (u, v)))
}

/// A unit's agreement in words: the reference itself, or the lowest cosine against it.
fn agreement(v: &VisionReport) -> String {
    let own = if v.deterministic { "" } else { ", runs differ" };
    match &v.agreement {
        None => format!("reference{own}"),
        Some(a) => format!("min cosine {:.6} vs {}{own}", a.min_cosine, a.reference_unit),
    }
}

const HEADERS: [&str; 11] = [
    "unit",
    "images",
    "first ms",
    "p50 ms",
    "p99 ms",
    "engine p50 ms",
    "batch",
    "batch p50 ms",
    "images/s",
    "MiB/image",
    "vectors",
];

fn rows(r: &Report) -> Vec<Vec<String>> {
    vision_units(r)
        .map(|(u, v)| {
            let s = &v.speed;
            vec![
                u.unit.clone(),
                s.single_runs.to_string(),
                format!("{:.1}", s.first_ms),
                format!("{:.1}", s.p50_ms),
                format!("{:.1}", s.p99_ms),
                format!("{:.1}", s.engine_p50_ms),
                s.batch.to_string(),
                format!("{:.1}", s.batch_p50_ms),
                format!("{:.1}", s.images_per_s),
                format!("{:+.2}", v.memory.slope_bytes_per_prediction / MIB),
                format!("{} dims, {}", v.dimensions, agreement(v)),
            ]
        })
        .collect()
}

fn title(r: &Report) -> Option<String> {
    let (_, v) = vision_units(r).next()?;
    let s = &v.speed;
    Some(format!(
        "Vision tower (2b, 3a, 4a): synthetic images ({}) preprocessed to {side}x{side} as the server does, round \
         trip to the worker",
        s.image_sizes.join(", "),
        side = s.input_side
    ))
}

/// The vision section of the text report (nothing for a model without one).
pub fn terminal(out: &mut String, r: &Report, colour: bool) {
    let Some(title) = title(r) else { return };
    heading(out, &title, colour);
    let rows = rows(r).into_iter().map(|row| row.into_iter().map(Cell::from).collect()).collect();
    table(out, &HEADERS, rows, colour);
}

/// The vision tower's chart: single-image and batch latency per unit.
pub fn html_charts(o: &mut String, r: &Report) {
    if vision_units(r).next().is_none() {
        return;
    }
    let groups: Vec<String> = ["single image p50", "single image p99", "batch p50"].map(String::from).to_vec();
    let series: Vec<(String, Vec<Option<f64>>)> = vision_units(r)
        .map(|(u, v)| (u.unit.clone(), vec![Some(v.speed.p50_ms), Some(v.speed.p99_ms), Some(v.speed.batch_p50_ms)]))
        .collect();
    o.push_str(&bar_chart("Vision tower latency", "milliseconds", "images", &groups, &series));
}

/// The vision section of the HTML page.
pub fn html_section(o: &mut String, r: &Report) {
    let Some(title) = title(r) else { return };
    let _ = write!(o, "<h2>{}</h2>", esc(&title));
    html_table(o, &HEADERS, &rows(r));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze;
    use crate::report::{VisionAgreement, VisionSpeed};

    fn vision(agreement: Option<VisionAgreement>, deterministic: bool) -> VisionReport {
        VisionReport {
            speed: VisionSpeed { image_sizes: vec!["32x32".into()], input_side: 32, p50_ms: 1.5, ..Default::default() },
            dimensions: 16,
            deterministic,
            memory: analyze::memory((0..10).map(|i| (100 << 20) + i * (2 << 20)).collect(), 1, 256),
            agreement,
            vectors: vec![],
        }
    }

    #[test]
    fn rows_say_agreement_determinism_and_memory_per_image() {
        let a = VisionAgreement { reference_unit: "ort:cpu".into(), images: 4, min_cosine: 0.99, max_abs_diff: 0.1 };
        assert_eq!(agreement(&vision(None, true)), "reference");
        assert_eq!(agreement(&vision(Some(a.clone()), false)), "min cosine 0.990000 vs ort:cpu, runs differ");
        let mut u = UnitReport::new("ort:cuda".into());
        u.vision = Some(vision(Some(a), true));
        let mut r = crate::render::tests::report();
        r.units.push(u);
        let rows = rows(&r);
        assert_eq!(rows.len(), 1, "units without a vision tower have no row");
        assert_eq!((rows[0][0].as_str(), rows[0][3].as_str(), rows[0][9].as_str()), ("ort:cuda", "1.5", "+2.00"));
        let mut out = String::new();
        terminal(&mut out, &r, false);
        assert!(out.contains("synthetic images (32x32) preprocessed to 32x32"), "{out}");
        let page = crate::render::html::render(&r);
        assert!(page.contains("Vision tower latency") && page.contains("min cosine 0.990000 vs ort:cpu"));
        r.units.pop();
        let (mut out, mut page) = (String::new(), String::new());
        terminal(&mut out, &r, false);
        html_section(&mut page, &r);
        assert!(out.is_empty() && page.is_empty(), "no section without a vision tower");
    }
}
