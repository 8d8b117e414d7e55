//! The report's renderers: each reads a finished [`Report`](crate::report::Report) and measures nothing, so a saved
//! JSON report renders exactly as a fresh one (`bulkhead doctor --from-json`).
//!
//! * [`terminal`]: tables, colour on a terminal;
//! * [`html`]: one self-contained page, with charts drawn by [`svg`];
//! * [`json`]: the `bulkhead.doctor/1` document, and reading it back;
//! * [`media`]: the sections of a speech-to-text or segmentation model, as text and HTML;
//! * [`vision`]: the vision-tower section of an image-text model, as text and HTML.

pub mod html;
pub mod json;
pub mod media;
pub mod svg;
pub mod terminal;
pub mod vision;

#[cfg(test)]
mod tests {
    use crate::report::*;

    /// A report with one measured unit and one that crashed while loading.
    pub(super) fn report() -> Report {
        let mut ok = UnitReport::new("ort:cpu".into());
        ok.findings.push(Finding::new(Branch::DynamicShapes, Severity::Info, "no latency spikes"));
        let mut crashed = UnitReport::new("candle:cpu".into());
        crashed.verdict = Verdict::Crashes;
        crashed.crash = Some(Crash {
            phase: CrashPhase::Loading,
            during: "loading the model".into(),
            signal: Some("SIGSEGV".into()),
            exit_code: None,
            hung: false,
            stderr_tail: "fault injection: load_crash <here>\n".into(),
        });
        Report {
            schema: SCHEMA.into(),
            bulkhead_version: "0.0.0".into(),
            model: serde_json::from_value(serde_json::json!({
                "name": "m", "source": "/m", "format": "onnx", "architecture": null, "model_type": null,
                "pooling": "mean", "normalize": true, "max_seq_length": 256, "files": [], "weights_bytes": 0,
                "onnx": null, "safetensors": null, "quantized": false, "findings": []
            }))
            .unwrap(),
            machine: Machine {
                os: "linux".into(),
                arch: "x86_64".into(),
                cpus: 2,
                memory_total_bytes: None,
                memory_available_bytes: None,
                onnxruntime: None,
            },
            settings: serde_json::from_value(serde_json::json!({
                "chain": "ort:cpu,candle:cpu", "batch_sizes": [1], "iterations": 2, "predictions": 4,
                "seq_lengths": [], "probes": 0, "memory_budget_mb": 256, "load_timeout_s": 1,
                "predict_timeout_s": 1, "faults": []
            }))
            .unwrap(),
            units: vec![ok, crashed],
            reference: None,
            recommendation: Recommendation { compute_units: "ort:cpu".into(), notes: vec![] },
        }
    }

    #[test]
    fn every_renderer_reads_the_same_report() {
        let r = report();
        let text = super::terminal::render(&r, false);
        for needle in ["Verdicts", "Crashes", "candle:cpu: SIGSEGV while loading the model", "[2b] info ort:cpu"] {
            assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
        }
        let page = super::html::render(&r);
        assert!(page.contains("&lt;here&gt;") && !page.contains("<here>"), "stderr is escaped");
        let back = super::json::parse(&super::json::render(&r)).unwrap();
        assert_eq!(super::terminal::render(&back, false), text, "a saved report renders as the fresh one");
    }
}
