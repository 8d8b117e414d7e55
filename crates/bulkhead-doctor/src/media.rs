//! From measurements to conclusions for the models that take audio or images (speech to text, segmentation), as
//! [`analyze`](crate::analyze) does for text models: speed from timed runs, each unit's agreement with the first unit
//! of the chain, the findings (memory growing per transcription or per click, the leak pattern; runs that disagree),
//! and what the verdicts and the recommended chain read. Pure functions over the report, unit-tested below.

use bulkhead_core::stats::{mean, percentile};
use bulkhead_segment::Masks;

use crate::analyze;
use crate::measure::speech::Run;
use crate::report::{
    Branch, Finding, MaskAgreement, Memory, Severity, SpeechSpeed, StepSpeed, TokenAgreement, UnitReport, Verdict,
};

const MIB: f64 = (1u64 << 20) as f64;

/// Below this intersection over union with the first unit's mask, a segmentation unit is `inaccurate`.
pub const MIN_MASK_IOU_OK: f64 = 0.95;

/// `amount` per second of `ms` milliseconds (0 when nothing was timed).
pub(crate) fn per_second(amount: f64, ms: f64) -> f64 {
    if ms > 0.0 && ms.is_finite() {
        amount * 1e3 / ms
    } else {
        0.0
    }
}

/// The speed of timed transcriptions of a `clip_seconds` clip (`first_ms`: the untimed first one).
pub fn speech_speed(clip_seconds: f64, first_ms: f64, runs: &[Run]) -> SpeechSpeed {
    let of = |f: &dyn Fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
    let walls = of(&|r| r.wall_ms);
    let features = percentile(&of(&|r| r.stages.features_ms), 0.5);
    let encode = percentile(&of(&|r| r.stages.encode_ms), 0.5);
    let generate = percentile(&of(&|r| r.stages.generate_ms), 0.5);
    let tokens = percentile(&of(&|r| r.token_ids.len() as f64), 0.5);
    let p50 = percentile(&walls, 0.5);
    SpeechSpeed {
        clip_seconds,
        transcriptions: runs.len(),
        first_ms,
        p50_ms: p50,
        p95_ms: percentile(&walls, 0.95),
        features_p50_ms: features,
        encode_p50_ms: encode,
        generate_p50_ms: generate,
        rtf: per_second(clip_seconds, p50),
        rtf_features: per_second(clip_seconds, features),
        rtf_encode: per_second(clip_seconds, encode),
        rtf_generate: per_second(clip_seconds, generate),
        tokens: tokens.round() as usize,
        decoder_tokens_per_s: percentile(&of(&|r| per_second(r.token_ids.len() as f64, r.stages.generate_ms)), 0.5),
    }
}

/// The speed of one kind of timed segmentation prediction.
pub fn step_speed(first_ms: f64, walls: &[f64], engine: &[f64]) -> StepSpeed {
    StepSpeed {
        runs: walls.len(),
        first_ms,
        p50_ms: percentile(walls, 0.5),
        p95_ms: percentile(walls, 0.95),
        engine_p50_ms: percentile(engine, 0.5),
        per_s: per_second(1.0, mean(walls)),
    }
}

/// Share of foreground pixels (logit above 0) of each low-resolution mask.
pub fn foreground(masks: &Masks) -> Vec<f64> {
    let area = masks.side * masks.side;
    if area == 0 {
        return vec![];
    }
    masks
        .logits
        .chunks(area)
        .take(masks.count)
        .map(|m| m.iter().filter(|&&v| v > 0.0).count() as f64 / area as f64)
        .collect()
}

/// Resident memory that grows per prediction (the leak pattern), for `what` (`transcription`, `click`): a
/// warning naming the growth and the recycling option that bounds it; `info` when memory stays flat.
pub(crate) fn memory_finding(m: &Memory, what: &str) -> Finding {
    let (start, end) = (m.rss_start_bytes as f64 / MIB, m.rss_end_bytes as f64 / MIB);
    if analyze::leaks(m) {
        let every = m.recycle_every.map_or(String::new(), |n| format!(", about every {n} {what}s"));
        return Finding::new(
            Branch::MemoryGrowth,
            Severity::Warning,
            format!(
                "resident memory grows ~{:.1} MiB per {what} ({start:.0} -> {end:.0} MiB over {} {what}s): the leak \
                 pattern; serve with --recycle-growth-mb {} to replace the worker before it grows past that{every}",
                m.slope_mib_per_prediction, m.predictions, m.budget_mb
            ),
        );
    }
    Finding::new(
        Branch::MemoryGrowth,
        Severity::Info,
        format!(
            "resident memory flat over {} {what}s ({start:.0} -> {end:.0} MiB, {:+.3} MiB per {what})",
            m.predictions, m.slope_mib_per_prediction
        ),
    )
}

/// A speech unit's own findings: memory per transcription (3a), and runs of the same clip that wrote different
/// token ids (4a).
pub fn speech_findings(u: &UnitReport) -> Vec<Finding> {
    let mut out: Vec<Finding> = u.memory.iter().map(|m| memory_finding(m, "transcription")).collect();
    if let Some(s) = u.speech.as_ref().filter(|s| !s.deterministic) {
        out.push(Finding::new(
            Branch::Accuracy,
            Severity::Warning,
            format!(
                "the same clip transcribed {} times gave different token ids: greedy decoding should repeat exactly",
                s.speed.transcriptions + 1
            ),
        ));
    }
    out
}

/// A segmentation unit's own findings: memory per click (3a), and clicks that could not use the cached image
/// embedding (2c: each then ran the image encoder again).
pub fn segment_findings(u: &UnitReport) -> Vec<Finding> {
    let mut out: Vec<Finding> = u.memory.iter().map(|m| memory_finding(m, "click")).collect();
    if u.segmentation.as_ref().is_some_and(|s| !s.embedding_reused) {
        out.push(Finding::new(
            Branch::OtherUnitRan,
            Severity::Warning,
            "clicks on an encoded image found no cached embedding and needed the image again: every click paid the \
             image encoder (raise BULKHEAD_IMAGE_CACHE_MB)",
        ));
    }
    out
}

/// The first position where two token sequences differ (`None` when identical).
pub fn first_divergence(a: &[i64], b: &[i64]) -> Option<usize> {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => Some(i),
        None if a.len() != b.len() => Some(a.len().min(b.len())),
        None => None,
    }
}

/// Each speech unit's token ids against the first unit that transcribed (4a).
pub fn speech_agreement(units: &mut [UnitReport]) {
    let Some(i) = units.iter().position(|u| u.speech.is_some()) else { return };
    let reference_unit = units[i].unit.clone();
    let Some(reference) = units[i].speech.clone() else { return };
    for u in units.iter_mut().skip(i + 1) {
        let Some(s) = u.speech.as_mut() else { continue };
        let divergence = first_divergence(&s.token_ids, &reference.token_ids);
        let a = TokenAgreement {
            reference_unit: reference_unit.clone(),
            identical: divergence.is_none(),
            first_divergence: divergence,
            tokens: s.token_ids.len(),
            reference_tokens: reference.token_ids.len(),
            reference_text: reference.text.clone(),
        };
        let finding = match divergence {
            None => Finding::new(
                Branch::Accuracy,
                Severity::Info,
                format!("token ids identical to {reference_unit}'s ({} tokens)", a.tokens),
            ),
            Some(at) => Finding::new(
                Branch::Accuracy,
                Severity::Warning,
                format!(
                    "token ids diverge from {reference_unit}'s at position {at} ({} vs {} tokens): {:?} vs {:?}",
                    a.tokens, a.reference_tokens, s.text, reference.text
                ),
            ),
        };
        s.agreement = Some(a);
        u.findings.push(finding);
    }
}

/// Intersection over union of two masks' foregrounds (logit above 0); 1 when both are empty.
pub fn mask_iou(a: &[f32], b: &[f32]) -> f64 {
    let (mut inter, mut union) = (0usize, 0usize);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x > 0.0, *y > 0.0);
        inter += usize::from(x && y);
        union += usize::from(x || y);
    }
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// `got`'s masks against the reference's, mask by mask; `None` when their shapes differ.
pub fn compare_masks(got: &Masks, want: &Masks, reference_unit: &str) -> Option<MaskAgreement> {
    if got.count != want.count || got.side != want.side || got.logits.len() != want.logits.len() {
        return None;
    }
    let area = (got.side * got.side).max(1);
    let min_mask_iou =
        got.logits.chunks(area).zip(want.logits.chunks(area)).map(|(a, b)| mask_iou(a, b)).fold(1.0, f64::min);
    let max_diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).fold(0.0, f64::max);
    Some(MaskAgreement {
        reference_unit: reference_unit.to_string(),
        min_mask_iou,
        max_iou_score_diff: max_diff(&got.iou_scores, &want.iou_scores),
        max_logit_diff: max_diff(&got.logits, &want.logits),
    })
}

/// Each segmentation unit's masks of the fixed prompt against the first unit's that segmented (4a, 5b).
pub fn mask_agreement(units: &mut [UnitReport], masks: &[Option<Masks>]) {
    let Some(i) = masks.iter().position(Option::is_some) else { return };
    let reference_unit = units[i].unit.clone();
    let Some(want) = masks[i].as_ref() else { return };
    for (u, got) in units.iter_mut().zip(masks).skip(i + 1) {
        let (Some(got), Some(s)) = (got, u.segmentation.as_mut()) else { continue };
        let Some(a) = compare_masks(got, want, &reference_unit) else {
            u.findings.push(Finding::new(
                Branch::OutputShape,
                Severity::Problem,
                format!(
                    "masks have another shape than {reference_unit}'s ({} x {}x{} vs {} x {}x{})",
                    got.count, got.side, got.side, want.count, want.side, want.side
                ),
            ));
            continue;
        };
        let severity = if a.min_mask_iou < MIN_MASK_IOU_OK { Severity::Warning } else { Severity::Info };
        u.findings.push(Finding::new(
            Branch::Accuracy,
            severity,
            format!(
                "masks against {reference_unit}'s: min IoU {:.4}, IoU scores within {:.2e}, logits within {:.2e}",
                a.min_mask_iou, a.max_iou_score_diff, a.max_logit_diff
            ),
        ));
        s.agreement = Some(a);
    }
}

/// What the verdict of a speech or segmentation unit reads beyond memory: output that disagrees with the first
/// unit is `inaccurate`.
pub fn verdict_evidence(u: &UnitReport) -> Vec<(Verdict, String)> {
    let mut out = vec![];
    if let Some(a) = u.speech.as_ref().and_then(|s| s.agreement.as_ref()).filter(|a| !a.identical) {
        out.push((
            Verdict::Inaccurate,
            format!(
                "token ids diverge from {} at position {} ({} vs {} tokens)",
                a.reference_unit,
                a.first_divergence.unwrap_or(0),
                a.tokens,
                a.reference_tokens
            ),
        ));
    }
    if let Some(a) = u.segmentation.as_ref().and_then(|s| s.agreement.as_ref()) {
        if a.min_mask_iou.is_nan() || a.min_mask_iou < MIN_MASK_IOU_OK {
            out.push((
                Verdict::Inaccurate,
                format!("masks differ from {}: min IoU {:.4}", a.reference_unit, a.min_mask_iou),
            ));
        }
    }
    out
}

/// The speed of a healthy speech or segmentation unit, in words (its verdict's evidence).
pub fn ok_evidence(u: &UnitReport) -> Option<String> {
    if let Some(s) = &u.speech {
        let v = &s.speed;
        return Some(format!(
            "{:.1}x real time on a {:.0} s clip (p50 {:.0} ms), decoder {:.0} tokens/s",
            v.rtf, v.clip_seconds, v.p50_ms, v.decoder_tokens_per_s
        ));
    }
    u.segmentation.as_ref().map(|s| {
        format!(
            "encoder {:.1} images/s (p50 {:.1} ms), {:.0} clicks/s (p50 {:.2} ms)",
            s.speed.encoder.per_s, s.speed.encoder.p50_ms, s.speed.clicks.per_s, s.speed.clicks.p50_ms
        )
    })
}

/// What the recommended chain orders a speech or segmentation unit by, with its words: the real-time factor, or
/// clicks per second.
pub fn speed(u: &UnitReport) -> Option<(f64, String)> {
    if let Some(s) = &u.speech {
        return Some((s.speed.rtf, format!("{:.1}x real time", s.speed.rtf)));
    }
    u.segmentation.as_ref().map(|s| (s.speed.clicks.per_s, format!("{:.0} clicks/s", s.speed.clicks.per_s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{SegmentReport, SpeechReport};
    use bulkhead_supervisor::SpeechTiming;

    fn run(wall: f64, generate: f64, tokens: usize) -> Run {
        Run {
            wall_ms: wall,
            stages: SpeechTiming { features_ms: 10.0, encode_ms: 40.0, generate_ms: generate },
            text: "x".into(),
            language: None,
            token_ids: vec![1; tokens],
            rss_bytes: 0,
        }
    }

    #[test]
    fn speech_speed_is_audio_seconds_per_second() {
        let s = speech_speed(4.0, 900.0, &[run(200.0, 100.0, 20), run(200.0, 100.0, 20), run(400.0, 100.0, 20)]);
        assert_eq!(s.transcriptions, 3);
        assert!((s.rtf - 20.0).abs() < 1e-9, "4 s of audio in 200 ms: {}", s.rtf);
        assert!((s.rtf_features - 400.0).abs() < 1e-9 && (s.rtf_encode - 100.0).abs() < 1e-9);
        assert!((s.rtf_generate - 40.0).abs() < 1e-9);
        assert_eq!(s.tokens, 20);
        assert!((s.decoder_tokens_per_s - 200.0).abs() < 1e-9);
        let none = speech_speed(4.0, 0.0, &[]);
        assert!(none.rtf == 0.0 && none.decoder_tokens_per_s == 0.0, "nothing timed is 0, never infinite");
    }

    #[test]
    fn divergence_is_the_first_differing_position() {
        assert_eq!(first_divergence(&[1, 2, 3], &[1, 2, 3]), None);
        assert_eq!(first_divergence(&[1, 2, 3], &[1, 5, 3]), Some(1));
        assert_eq!(first_divergence(&[1, 2], &[1, 2, 3]), Some(2));
    }

    fn speech_unit(name: &str, tokens: Vec<i64>) -> UnitReport {
        let mut u = UnitReport::new(name.into());
        u.speech = Some(SpeechReport {
            speed: SpeechSpeed { rtf: 10.0, ..SpeechSpeed::default() },
            text: format!("{tokens:?}"),
            language: None,
            token_ids: tokens,
            deterministic: true,
            agreement: None,
        });
        u
    }

    #[test]
    fn units_are_compared_with_the_first_that_transcribed() {
        let mut units = vec![
            UnitReport::new("ort:cuda".into()),
            speech_unit("ort:cpu", vec![1, 2, 3]),
            speech_unit("x", vec![1, 9]),
        ];
        speech_agreement(&mut units);
        assert!(units[1].speech.as_ref().unwrap().agreement.is_none(), "the reference itself");
        let a = units[2].speech.as_ref().unwrap().agreement.clone().unwrap();
        assert_eq!((a.identical, a.first_divergence, a.reference_unit.as_str()), (false, Some(1), "ort:cpu"));
        assert!(units[2].findings.iter().any(|f| f.branch == Branch::Accuracy && f.severity == Severity::Warning));
        assert_eq!(verdict_evidence(&units[2])[0].0, Verdict::Inaccurate);
        assert!(verdict_evidence(&units[1]).is_empty());
    }

    fn masks(logits: Vec<f32>, iou: Vec<f32>) -> Masks {
        Masks {
            count: iou.len(),
            side: 2,
            logits,
            iou_scores: iou,
            object_score: 1.0,
            encode_ms: 0.0,
            decode_ms: 1.0,
            embedding_cached: true,
        }
    }

    #[test]
    fn masks_agree_by_iou_of_their_foregrounds() {
        assert_eq!(mask_iou(&[1.0, 1.0, -1.0, -1.0], &[1.0, -1.0, -1.0, -1.0]), 0.5);
        assert_eq!(mask_iou(&[-1.0; 4], &[-2.0; 4]), 1.0);
        let want = masks(vec![1.0, 1.0, -1.0, -1.0], vec![0.9]);
        let got = masks(vec![1.0, -1.0, -1.0, -1.0], vec![0.7]);
        let a = compare_masks(&got, &want, "ort:cpu").unwrap();
        assert_eq!(a.min_mask_iou, 0.5);
        assert!((a.max_iou_score_diff - 0.2).abs() < 1e-6 && (a.max_logit_diff - 2.0).abs() < 1e-9);
        assert!(compare_masks(&masks(vec![1.0; 8], vec![0.1, 0.2]), &want, "ort:cpu").is_none());
        assert_eq!(foreground(&want), vec![0.5]);

        let mut units = vec![UnitReport::new("a".into()), UnitReport::new("b".into())];
        for u in &mut units {
            u.segmentation = Some(SegmentReport {
                speed: Default::default(),
                masks: 1,
                iou_scores: vec![],
                foreground: vec![],
                embedding_reused: true,
                agreement: None,
            });
        }
        mask_agreement(&mut units, &[Some(want), Some(got)]);
        assert_eq!(units[1].segmentation.as_ref().unwrap().agreement.as_ref().unwrap().min_mask_iou, 0.5);
        assert_eq!(verdict_evidence(&units[1])[0].0, Verdict::Inaccurate);
    }

    #[test]
    fn memory_growing_per_transcription_is_the_leak_finding() {
        let leak = analyze::memory((0..20).map(|i| (200 << 20) + i * (16 << 20)).collect(), 1, 256);
        let f = memory_finding(&leak, "transcription");
        assert_eq!((f.branch, f.severity), (Branch::MemoryGrowth, Severity::Warning));
        assert!(f.message.contains("~16.0 MiB per transcription") && f.message.contains("--recycle-growth-mb 256"));
        let flat = memory_finding(&analyze::memory(vec![200 << 20; 20], 1, 256), "click");
        assert_eq!(flat.severity, Severity::Info);
    }
}
