//! Conclusions about an image-text model's vision tower (CLIP, SigLIP) from its measurements
//! ([`measure::vision`](crate::measure::vision)): the speed record, the unit's own findings (memory per image, runs
//! that disagree with themselves), each unit's image vectors against the first unit's, and what the verdict reads.

use bulkhead_core::stats::{mean, percentile};

use crate::analyze::MIN_COSINE_OK;
use crate::measure::vision::{min_cosine, Images, BATCH};
use crate::report::{Branch, Finding, Severity, UnitReport, Verdict, VisionAgreement, VisionSpeed};

/// The speed record of single-image round trips (`first`, `walls`, `engine`) and [`BATCH`]-image ones.
pub fn speed(images: &Images, first: f64, walls: &[f64], engine: &[f64], batch_walls: &[f64]) -> VisionSpeed {
    VisionSpeed {
        image_sizes: images.sizes.clone(),
        input_side: images.side,
        single_runs: walls.len(),
        first_ms: first,
        p50_ms: percentile(walls, 0.5),
        p99_ms: percentile(walls, 0.99),
        engine_p50_ms: percentile(engine, 0.5),
        batch: BATCH,
        batch_runs: batch_walls.len(),
        batch_p50_ms: percentile(batch_walls, 0.5),
        images_per_s: crate::media::per_second(BATCH as f64, mean(batch_walls)),
    }
}

/// A vision unit's own findings: resident memory per image (3a), and the same images giving other vectors the
/// second time (4a).
pub fn findings(u: &UnitReport) -> Vec<Finding> {
    let Some(v) = &u.vision else { return vec![] };
    let mut out = vec![crate::media::memory_finding(&v.memory, "image")];
    if !v.deterministic {
        out.push(Finding::new(
            Branch::Accuracy,
            Severity::Warning,
            "the same synthetic images embedded twice gave different vectors: the vision tower should repeat exactly",
        ));
    }
    out
}

/// Each unit's image vectors against the first unit's that embedded them (4a).
pub fn agreement(units: &mut [UnitReport]) {
    let Some(i) = units.iter().position(|u| u.vision.is_some()) else { return };
    let reference_unit = units[i].unit.clone();
    let want = units[i].vision.as_ref().map(|v| v.vectors.clone()).unwrap_or_default();
    for u in units.iter_mut().skip(i + 1) {
        let Some(v) = u.vision.as_mut() else { continue };
        if v.vectors.len() != want.len() || v.vectors.iter().zip(&want).any(|(a, b)| a.len() != b.len()) {
            u.findings.push(Finding::new(
                Branch::OutputShape,
                Severity::Problem,
                format!(
                    "image vectors have another shape than {reference_unit}'s ({} x {} vs {} x {})",
                    v.vectors.len(),
                    v.dimensions,
                    want.len(),
                    want.first().map_or(0, Vec::len)
                ),
            ));
            continue;
        }
        let a = VisionAgreement {
            reference_unit: reference_unit.clone(),
            images: want.len(),
            min_cosine: min_cosine(&v.vectors, &want),
            max_abs_diff: v
                .vectors
                .iter()
                .flatten()
                .zip(want.iter().flatten())
                .map(|(x, y)| f64::from((x - y).abs()))
                .fold(0.0, f64::max),
        };
        let ok = a.min_cosine >= MIN_COSINE_OK;
        u.findings.push(Finding::new(
            Branch::Accuracy,
            if ok { Severity::Info } else { Severity::Warning },
            format!(
                "image vectors against {reference_unit}'s: min cosine {:.6}, max abs diff {:.2e} over {} images",
                a.min_cosine, a.max_abs_diff, a.images
            ),
        ));
        v.agreement = Some(a);
    }
}

/// What the verdict reads from the vision tower: memory growing per image is `leaks`, image vectors that disagree
/// with the first unit's are `inaccurate`.
pub fn verdict_evidence(u: &UnitReport) -> Vec<(Verdict, String)> {
    let Some(v) = &u.vision else { return vec![] };
    let mut out = vec![];
    let m = &v.memory;
    if crate::analyze::leaks(m) {
        out.push((
            Verdict::Leaks,
            format!(
                "resident memory grows {:.2} MiB per image through the vision tower ({} images)",
                m.slope_mib_per_prediction, m.predictions
            ),
        ));
    }
    if let Some(a) = v.agreement.as_ref().filter(|a| a.min_cosine.is_nan() || a.min_cosine < MIN_COSINE_OK) {
        out.push((
            Verdict::Inaccurate,
            format!("image vectors differ from {}: min cosine {:.6}", a.reference_unit, a.min_cosine),
        ));
    }
    out
}

/// The vision tower's speed in words, for a healthy unit's evidence.
pub fn ok_evidence(u: &UnitReport) -> Option<String> {
    u.vision.as_ref().map(|v| {
        format!(
            "vision tower {:.1} images/s at batch {} (single image p50 {:.1} ms)",
            v.speed.images_per_s, v.speed.batch, v.speed.p50_ms
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze;
    use crate::report::VisionReport;

    fn unit(name: &str, vectors: Vec<Vec<f32>>, rss: Vec<u64>) -> UnitReport {
        let mut u = UnitReport::new(name.into());
        u.vision = Some(VisionReport {
            speed: VisionSpeed::default(),
            dimensions: vectors.first().map_or(0, Vec::len),
            deterministic: true,
            memory: analyze::memory(rss, 1, 256),
            agreement: None,
            vectors,
        });
        u
    }

    #[test]
    fn units_are_compared_with_the_first_that_embedded_images() {
        let flat = vec![300 << 20; 10];
        let mut units = vec![
            UnitReport::new("ort:cuda".into()),
            unit("ort:cpu", vec![vec![1.0, 0.0], vec![0.0, 1.0]], flat.clone()),
            unit("candle:cpu", vec![vec![1.0, 0.0], vec![1.0, 1.0]], flat.clone()),
            unit("x", vec![vec![1.0, 0.0, 0.0]], flat),
        ];
        agreement(&mut units);
        assert!(units[1].vision.as_ref().unwrap().agreement.is_none(), "the reference itself");
        let a = units[2].vision.as_ref().unwrap().agreement.clone().unwrap();
        assert_eq!((a.reference_unit.as_str(), a.images), ("ort:cpu", 2));
        assert!((a.min_cosine - 0.5f64.sqrt()).abs() < 1e-6 && (a.max_abs_diff - 1.0).abs() < 1e-9);
        assert_eq!(verdict_evidence(&units[2])[0].0, Verdict::Inaccurate);
        assert!(verdict_evidence(&units[1]).is_empty());
        assert!(units[3].findings.iter().any(|f| f.branch == Branch::OutputShape));
    }

    #[test]
    fn memory_growing_per_image_is_the_leak_finding() {
        let u = unit("ort:cpu", vec![], (0..20).map(|i| (200 << 20) + i * (16 << 20)).collect());
        let f = &findings(&u)[0];
        assert_eq!((f.branch, f.severity), (Branch::MemoryGrowth, Severity::Warning));
        assert!(f.message.contains("~16.0 MiB per image") && f.message.contains("--recycle-growth-mb 256"));
        assert_eq!(verdict_evidence(&u)[0].0, Verdict::Leaks);
    }
}
