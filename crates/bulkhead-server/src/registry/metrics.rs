//! The models' lifecycle in the Prometheus text format (`/metrics`).

use super::ModelInfo;
use crate::api::models::ModelState;

/// The models' lifecycle states and resident memory in the Prometheus text format.
pub fn render_metrics(models: &[ModelInfo]) -> String {
    use crate::metrics::Metric;
    use std::fmt::Write;
    let escape = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let mut out = String::new();
    for m in [Metric::ModelState, Metric::ModelResidentBytes] {
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} gauge", m.name(), m.help(), m.name());
    }
    let states =
        [ModelState::Available, ModelState::Loading, ModelState::Loaded, ModelState::Draining, ModelState::Failed];
    let mut state_lines = String::new();
    let mut memory_lines = String::new();
    for info in models {
        let model = escape(&info.name);
        for s in states {
            let on = u8::from(s == info.state);
            let _ =
                writeln!(state_lines, "{}{{model=\"{model}\",state=\"{}\"}} {on}", Metric::ModelState.name(), s.word());
        }
        if info.entry.is_some() {
            let bytes = info.stats.resident_bytes.unwrap_or(0);
            let _ = writeln!(memory_lines, "{}{{model=\"{model}\"}} {bytes}", Metric::ModelResidentBytes.name());
        }
    }
    // HELP/TYPE lines first for both, then the samples of each family together.
    let (state_head, memory_head) = out.split_at(out.find("# HELP bulkhead_model_resident").unwrap_or(out.len()));
    format!("{state_head}{state_lines}{memory_head}{memory_lines}")
}
