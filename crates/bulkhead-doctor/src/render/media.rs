//! The sections of a speech-to-text or segmentation model's report, as text and as HTML (tables and a chart): the
//! transcriptions (real-time factor per stage, decoder tokens per second, agreement with the first unit, the
//! transcript) or the image encoder and the clicks (latency, images and clicks per second, masks and their
//! agreement). The common sections (verdicts, load, memory, crashes, findings) are rendered as for any model.

use std::fmt::Write;

use super::html::{esc, html_table};
use super::svg::bar_chart;
use super::terminal::{heading, table, Cell};
use crate::report::{Report, SegmentReport, SpeechReport, UnitReport};

/// A transcript cut to `n` characters for a table.
fn short(text: &str, n: usize) -> String {
    let t = text.trim();
    match t.char_indices().nth(n) {
        Some((i, _)) => format!("{}...", &t[..i]),
        None => t.to_string(),
    }
}

fn speech_units(r: &Report) -> impl Iterator<Item = (&UnitReport, &SpeechReport)> {
    r.units.iter().filter_map(|u| u.speech.as_ref().map(|s| (u, s)))
}

fn segment_units(r: &Report) -> impl Iterator<Item = (&UnitReport, &SegmentReport)> {
    r.units.iter().filter_map(|u| u.segmentation.as_ref().map(|s| (u, s)))
}

/// A speech unit's agreement in words: the reference itself, identical, or where the token ids diverge.
fn speech_agreement(s: &SpeechReport) -> String {
    let own = if s.deterministic { "" } else { ", runs differ" };
    match &s.agreement {
        None => format!("reference{own}"),
        Some(a) if a.identical => format!("identical to {}{own}", a.reference_unit),
        Some(a) => format!("diverges from {} at token {}{own}", a.reference_unit, a.first_divergence.unwrap_or(0)),
    }
}

/// A segmentation unit's agreement in words.
fn mask_agreement(s: &SegmentReport) -> String {
    match &s.agreement {
        None => "reference".into(),
        Some(a) => format!("min IoU {:.4} vs {}", a.min_mask_iou, a.reference_unit),
    }
}

fn speech_rows(r: &Report) -> Vec<Vec<String>> {
    speech_units(r)
        .map(|(u, s)| {
            let v = &s.speed;
            vec![
                u.unit.clone(),
                v.transcriptions.to_string(),
                format!("{:.1}", v.first_ms),
                format!("{:.1}", v.p50_ms),
                format!("{:.1}", v.p95_ms),
                format!("{:.1}x", v.rtf),
                format!("{:.1} ({:.0}x)", v.features_p50_ms, v.rtf_features),
                format!("{:.1} ({:.0}x)", v.encode_p50_ms, v.rtf_encode),
                format!("{:.1} ({:.0}x)", v.generate_p50_ms, v.rtf_generate),
                v.tokens.to_string(),
                format!("{:.0}", v.decoder_tokens_per_s),
                speech_agreement(s),
            ]
        })
        .collect()
}

const SPEECH_HEADERS: [&str; 12] = [
    "unit",
    "runs",
    "first ms",
    "p50 ms",
    "p95 ms",
    "real time",
    "features ms",
    "encode ms",
    "generate ms",
    "tokens",
    "decoder tokens/s",
    "token ids",
];

fn segment_rows(r: &Report) -> Vec<Vec<String>> {
    segment_units(r)
        .map(|(u, s)| {
            let (e, c) = (&s.speed.encoder, &s.speed.clicks);
            let iou: Vec<String> = s.iou_scores.iter().map(|x| format!("{x:.3}")).collect();
            vec![
                u.unit.clone(),
                e.runs.to_string(),
                format!("{:.1}", e.first_ms),
                format!("{:.1}", e.p50_ms),
                format!("{:.1}", e.engine_p50_ms),
                format!("{:.1}", e.per_s),
                c.runs.to_string(),
                format!("{:.2}", c.p50_ms),
                format!("{:.2}", c.engine_p50_ms),
                format!("{:.0}", c.per_s),
                iou.join(" "),
                mask_agreement(s),
            ]
        })
        .collect()
}

const SEGMENT_HEADERS: [&str; 12] = [
    "unit",
    "images",
    "first ms",
    "image p50 ms",
    "encoder p50 ms",
    "images/s",
    "clicks",
    "click p50 ms",
    "decoder p50 ms",
    "clicks/s",
    "IoU scores",
    "masks",
];

fn speech_title(r: &Report) -> String {
    let clip = speech_units(r).next().map_or(0.0, |(_, s)| s.speed.clip_seconds);
    format!(
        "Speech (2b, 3a, 4a): a {clip:.0} s synthetic clip transcribed again and again, round trip to the worker \
         (stage ms at p50, with the real-time factor of each stage)"
    )
}

fn segment_title(r: &Report) -> String {
    let side = segment_units(r).next().map_or(0, |(_, s)| s.speed.input_side);
    format!(
        "Segmentation (2b, 3a, 4a): new {side}x{side} images through the image encoder, clicks on the cached \
         embedding, masks of a fixed prompt against the first unit"
    )
}

/// The speech section of the text report: one row per unit, then each unit's transcript.
pub fn terminal_speech(out: &mut String, r: &Report, colour: bool) {
    heading(out, &speech_title(r), colour);
    let rows = speech_rows(r).into_iter().map(|row| row.into_iter().map(Cell::from).collect()).collect();
    table(out, &SPEECH_HEADERS, rows, colour);
    for (u, s) in speech_units(r) {
        let language = s.language.as_deref().map_or(String::new(), |l| format!(" [{l}]"));
        let _ = writeln!(out, "  {}{language}: {:?}", u.unit, short(&s.text, 96));
    }
}

/// The segmentation section of the text report.
pub fn terminal_segmentation(out: &mut String, r: &Report, colour: bool) {
    heading(out, &segment_title(r), colour);
    let rows = segment_rows(r).into_iter().map(|row| row.into_iter().map(Cell::from).collect()).collect();
    table(out, &SEGMENT_HEADERS, rows, colour);
}

/// The charts of a speech or segmentation report: the real-time factor per stage, or the latency per step.
pub fn html_charts(o: &mut String, r: &Report) {
    if speech_units(r).next().is_some() {
        let groups: Vec<String> = ["round trip", "features", "encode", "generate"].map(String::from).to_vec();
        let series: Vec<(String, Vec<Option<f64>>)> = speech_units(r)
            .map(|(u, s)| {
                let v = &s.speed;
                (u.unit.clone(), vec![Some(v.rtf), Some(v.rtf_features), Some(v.rtf_encode), Some(v.rtf_generate)])
            })
            .collect();
        o.push_str(&bar_chart("Real-time factor per stage", "audio seconds per second", "stage", &groups, &series));
    }
    if segment_units(r).next().is_some() {
        let groups: Vec<String> = ["new image", "encoder", "click", "decoder"].map(String::from).to_vec();
        let series: Vec<(String, Vec<Option<f64>>)> = segment_units(r)
            .map(|(u, s)| {
                let (e, c) = (&s.speed.encoder, &s.speed.clicks);
                (u.unit.clone(), vec![Some(e.p50_ms), Some(e.engine_p50_ms), Some(c.p50_ms), Some(c.engine_p50_ms)])
            })
            .collect();
        o.push_str(&bar_chart("Latency p50 per step", "milliseconds", "step", &groups, &series));
    }
}

/// The speech or segmentation section of the HTML page.
pub fn html_sections(o: &mut String, r: &Report) {
    if speech_units(r).next().is_some() {
        let _ = write!(o, "<h2>{}</h2>", esc(&speech_title(r)));
        html_table(o, &SPEECH_HEADERS, &speech_rows(r));
        o.push_str("<ul>");
        for (u, s) in speech_units(r) {
            // Quoted and escaped as in the text report: a random-weight model writes control characters.
            let text = format!("{:?}", short(&s.text, 400));
            let _ = write!(o, "<li><b>{}</b>: <code>{}</code></li>", esc(&u.unit), esc(&text));
        }
        o.push_str("</ul>");
    }
    if segment_units(r).next().is_some() {
        let _ = write!(o, "<h2>{}</h2>", esc(&segment_title(r)));
        html_table(o, &SEGMENT_HEADERS, &segment_rows(r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcripts_are_cut_on_characters() {
        assert_eq!(short("  héllo wörld  ", 5), "héllo...");
        assert_eq!(short("abc", 5), "abc");
    }
}
