//! The terminal report: one table per branch of the diagnosis tree, verdicts in colour when stdout is a terminal
//! (and `NO_COLOR` is unset).

use std::fmt::Write;
use std::io::IsTerminal;

use crate::report::{ModelKind, Report, Verdict};

const MIB: f64 = (1u64 << 20) as f64;

/// Colour when stdout is a terminal and `NO_COLOR` is not set.
pub fn use_colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// A cell: text and an optional ANSI colour code.
pub struct Cell(pub String, pub Option<&'static str>);

impl From<String> for Cell {
    fn from(s: String) -> Cell {
        Cell(s, None)
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Cell {
        Cell(s.to_string(), None)
    }
}

pub fn verdict_colour(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "32",
        Verdict::Slow | Verdict::Inaccurate | Verdict::Leaks => "33",
        Verdict::Crashes | Verdict::Unusable => "31",
    }
}

/// Renders a table with a header row; columns are padded to their widest cell.
pub fn table(out: &mut String, headers: &[&str], rows: Vec<Vec<Cell>>, colour: bool) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.0.chars().count());
            }
        }
    }
    let line = |out: &mut String, cells: Vec<(String, Option<&str>)>, bold: bool| {
        out.push_str("  ");
        let n = cells.len();
        for (i, (text, code)) in cells.into_iter().enumerate() {
            let pad = widths[i].saturating_sub(text.chars().count());
            let last = i + 1 == n;
            let styled = match (colour, code, bold) {
                (true, _, true) => format!("\x1b[1m{text}\x1b[0m"),
                (true, Some(c), _) => format!("\x1b[{c}m{text}\x1b[0m"),
                _ => text,
            };
            out.push_str(&styled);
            if !last {
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push('\n');
    };
    if rows.is_empty() {
        out.push_str("  (not measured)\n");
        return;
    }
    line(out, headers.iter().map(|h| (h.to_string(), None)).collect(), true);
    for row in rows {
        line(out, row.into_iter().map(|c| (c.0, c.1)).collect(), false);
    }
}

pub(crate) fn heading(out: &mut String, title: &str, colour: bool) {
    if colour {
        let _ = writeln!(out, "\n\x1b[1;4m{title}\x1b[0m");
    } else {
        let _ = writeln!(out, "\n{title}");
    }
}

fn mib(b: u64) -> String {
    format!("{:.0}", b as f64 / MIB)
}

/// The whole report as text: one section after another.
pub fn render(r: &Report, colour: bool) -> String {
    let mut out = String::new();
    header(&mut out, r);
    verdicts(&mut out, r, colour);
    load(&mut out, r, colour);
    placement(&mut out, r, colour);
    match r.settings.kind {
        ModelKind::Text => {
            latency(&mut out, r, colour);
            input_lengths(&mut out, r, colour);
            super::vision::terminal(&mut out, r, colour);
        }
        ModelKind::Speech => super::media::terminal_speech(&mut out, r, colour),
        ModelKind::Segmentation => super::media::terminal_segmentation(&mut out, r, colour),
    }
    memory(&mut out, r, colour);
    if r.settings.kind == ModelKind::Text {
        accuracy(&mut out, r, colour);
    }
    crashes(&mut out, r, colour);
    findings(&mut out, r, colour);
    recommendation(&mut out, r, colour);
    out
}

/// The model, the machine and what was measured.
fn header(out: &mut String, r: &Report) {
    let m = &r.model;
    let _ = writeln!(out, "bulkhead doctor {}: {} ({})", r.bulkhead_version, m.name, m.source);
    let mut desc = vec![m.format.clone()];
    if let Some(a) = &m.architecture {
        desc.push(a.clone());
    }
    if let Some(s) = &m.safetensors {
        desc.push(format!("{:.1} M parameters ({})", s.parameters as f64 / 1e6, s.precision));
    }
    if let Some(o) = &m.onnx {
        let opsets: Vec<String> =
            o.opsets.iter().filter(|s| s.domain.is_empty()).map(|s| s.version.to_string()).collect();
        desc.push(format!("ONNX IR {} opset {} ({}, {} nodes)", o.ir_version, opsets.join("/"), o.precision, o.nodes));
    }
    desc.push(format!("{} MiB of weights", mib(m.weights_bytes)));
    if r.settings.kind == ModelKind::Text {
        desc.push(format!("{} pooling, max {} tokens", m.pooling, m.max_seq_length));
    }
    let _ = writeln!(out, "  model    {}", desc.join(", "));
    let mc = &r.machine;
    let _ = writeln!(
        out,
        "  machine  {} {}, {} CPUs, {} MiB memory ({} MiB available){}",
        mc.os,
        mc.arch,
        mc.cpus,
        mc.memory_total_bytes.map_or("?".into(), mib),
        mc.memory_available_bytes.map_or("?".into(), mib),
        mc.onnxruntime.as_ref().map_or(String::new(), |o| format!(", {o}"))
    );
    let s = &r.settings;
    let what = match s.kind {
        ModelKind::Text => format!(
            "batch sizes {:?}, {} iterations each, {} memory predictions, {} probes",
            s.batch_sizes, s.iterations, s.predictions, s.probes
        ),
        ModelKind::Speech => format!("{} timed transcriptions of a synthetic clip", s.predictions),
        ModelKind::Segmentation => {
            format!(
                "{} new images through the image encoder, {} clicks on a cached embedding",
                s.iterations, s.predictions
            )
        }
    };
    let _ = writeln!(
        out,
        "  measured chain {}: {what}{}",
        r.settings.chain,
        if r.settings.faults.as_array().is_some_and(|a| !a.is_empty()) {
            format!(", FAULT INJECTION {}", r.settings.faults)
        } else {
            String::new()
        }
    );
}

/// One line per unit: the verdict and its evidence.
fn verdicts(out: &mut String, r: &Report, colour: bool) {
    heading(out, "Verdicts", colour);
    table(
        out,
        &["unit", "verdict", "evidence"],
        r.units
            .iter()
            .map(|u| {
                vec![
                    Cell::from(u.unit.as_str()),
                    Cell(u.verdict.as_str().to_string(), Some(verdict_colour(u.verdict))),
                    Cell::from(u.evidence.join("; ")),
                ]
            })
            .collect(),
        colour,
    );
}

/// Load times, caches and resident memory (branches 1a-1c, 2a, 3b).
fn load(out: &mut String, r: &Report, colour: bool) {
    heading(out, "Load (1a-1c, 2a, 3b)", colour);
    table(
        out,
        &[
            "unit",
            "runtime",
            "precision",
            "cold ms (session)",
            "cached ms (session)",
            "cache",
            "resident MiB",
            "warm-up ms",
        ],
        r.units
            .iter()
            .map(|u| {
                let s = u.session.as_ref();
                let l = u.load.as_ref();
                let warm: Vec<String> =
                    l.map_or(vec![], |l| l.warmup.iter().map(|w| format!("b{} {:.1}", w.batch, w.ms)).collect());
                vec![
                    Cell::from(u.unit.as_str()),
                    Cell::from(s.map_or("-".into(), |s| s.runtime.clone())),
                    Cell::from(s.map_or("-".into(), |s| s.precision.to_string())),
                    Cell::from(l.map_or("-".into(), |l| format!("{:.0} ({:.0})", l.cold.total_ms, l.cold.session_ms))),
                    Cell::from(
                        l.and_then(|l| l.cached.as_ref())
                            .map_or("-".into(), |c| format!("{:.0} ({:.0})", c.total_ms, c.session_ms)),
                    ),
                    Cell::from(l.map_or("-".into(), |l| match l.cached_cache_hit {
                        Some(true) => format!("{} (hit)", l.cache),
                        Some(false) => format!("{} (miss)", l.cache),
                        None => l.cache.as_str().to_string(),
                    })),
                    Cell::from(l.map_or("-".into(), |l| mib(l.rss_after_load_bytes))),
                    Cell::from(if warm.is_empty() { "-".to_string() } else { warm.join(" / ") }),
                ]
            })
            .collect(),
        colour,
    );
    for u in &r.units {
        if let Some(e) = &u.load_error {
            let _ = writeln!(out, "  {}: load error [{}] ({}): {}", u.unit, e.branch, e.kind, e.reason);
        }
        if let Some(why) = &u.availability_reason {
            let _ = writeln!(out, "  {}: {}: {why}", u.unit, u.availability.in_words());
        }
    }
}

/// Node placement and CPU fallbacks (1b, 5a).
fn placement(out: &mut String, r: &Report, colour: bool) {
    heading(out, "Placement (1b, 5a)", colour);
    table(
        out,
        &["unit", "ran on", "nodes", "on the unit", "fell back to CPU", "fallback op types"],
        r.units
            .iter()
            .filter_map(|u| {
                let p = u.placement.as_ref()?;
                let ran = u.session.as_ref().map_or(String::new(), |s| s.unit.clone());
                if !p.reported {
                    return Some(vec![
                        Cell::from(u.unit.as_str()),
                        Cell::from(ran),
                        Cell::from("-"),
                        Cell::from("whole model"),
                        Cell::from("0"),
                        Cell::from("(engine has no per-node fallback)"),
                    ]);
                }
                let ops: Vec<String> = p.fallback_op_types.iter().map(|(k, v)| format!("{k}x{v}")).collect();
                Some(vec![
                    Cell::from(u.unit.as_str()),
                    Cell::from(ran),
                    Cell::from(p.total_nodes.to_string()),
                    Cell::from(p.on_unit_nodes.to_string()),
                    Cell(p.fallback_nodes.to_string(), (p.fallback_nodes > 0).then_some("33")),
                    Cell::from(if ops.is_empty() { "-".to_string() } else { ops.join(" ") }),
                ])
            })
            .collect(),
        colour,
    );
}

/// Latency and throughput per batch size (2b, 2c).
fn latency(out: &mut String, r: &Report, colour: bool) {
    heading(out, "Latency and throughput (2b, 2c): round trip to the worker", colour);
    let mut rows = vec![];
    for u in &r.units {
        for l in &u.latency {
            rows.push(vec![
                Cell::from(u.unit.as_str()),
                Cell::from(l.batch.to_string()),
                Cell::from(l.seq.to_string()),
                Cell::from(format!("{:.2}", l.first_ms)),
                Cell::from(format!("{:.2}", l.p50_ms)),
                Cell::from(format!("{:.2}", l.p95_ms)),
                Cell::from(format!("{:.2}", l.engine_p50_ms)),
                Cell::from(format!("{:.0}", l.throughput_per_s)),
            ]);
        }
    }
    table(out, &["unit", "batch", "tokens", "first ms", "p50 ms", "p95 ms", "engine p50 ms", "inputs/s"], rows, colour);
}

/// Latency over input length (2b).
fn input_lengths(out: &mut String, r: &Report, colour: bool) {
    heading(out, "Input lengths (2b): batch-1 p50 ms per token count (* = first prediction spiked)", colour);
    let lens = &r.settings.seq_lengths;
    let mut headers: Vec<String> = vec!["unit".into()];
    headers.extend(lens.iter().map(|l| l.to_string()));
    headers.push("ms/token".into());
    headers.push("recompiles?".into());
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    table(
        out,
        &header_refs,
        r.units
            .iter()
            .filter_map(|u| {
                let s = u.shapes.as_ref()?;
                let mut row = vec![Cell::from(u.unit.as_str())];
                for l in lens {
                    row.push(Cell::from(
                        s.rows
                            .iter()
                            .find(|x| x.seq == *l)
                            .map_or("-".into(), |x| format!("{:.1}{}", x.p50_ms, if x.spike { "*" } else { "" })),
                    ));
                }
                row.push(Cell::from(format!("{:.3}", s.ms_per_token)));
                row.push(Cell(
                    if s.recompiles_suspected { "suspected" } else { "no" }.into(),
                    s.recompiles_suspected.then_some("33"),
                ));
                Some(row)
            })
            .collect(),
        colour,
    );
}

/// Resident memory over predictions (3a).
fn memory(out: &mut String, r: &Report, colour: bool) {
    heading(out, "Memory (3a): resident memory over predictions", colour);
    table(
        out,
        &["unit", "predictions", "start MiB", "end MiB", "slope MiB/prediction", "recycle every"],
        r.units
            .iter()
            .filter_map(|u| {
                let m = u.memory.as_ref()?;
                Some(vec![
                    Cell::from(u.unit.as_str()),
                    Cell::from(m.predictions.to_string()),
                    Cell::from(mib(m.rss_start_bytes)),
                    Cell::from(mib(m.rss_end_bytes)),
                    Cell(format!("{:.3}", m.slope_mib_per_prediction), (u.verdict == Verdict::Leaks).then_some("33")),
                    Cell::from(m.recycle_every.map_or("-".into(), |n| format!("{n} (budget {} MiB)", m.budget_mb))),
                ])
            })
            .collect(),
        colour,
    );
}

/// Outputs against the reference (4a, 4b, 5b).
fn accuracy(out: &mut String, r: &Report, colour: bool) {
    let reference = r.reference.as_ref().map_or("no fp32 CPU reference".to_string(), |x| {
        format!("against {} ({}, {}{})", x.unit, x.model, x.precision, if x.in_chain { "" } else { ", extra worker" })
    });
    heading(out, &format!("Accuracy (4a, 4b, 5b): {} probes {reference}", r.settings.probes), colour);
    table(
        out,
        &["unit", "precision", "quantized", "min cosine", "mean cosine", "max abs diff"],
        r.units
            .iter()
            .filter_map(|u| {
                let a = u.accuracy.as_ref()?;
                Some(vec![
                    Cell::from(u.unit.as_str()),
                    Cell::from(a.precision.as_str()),
                    Cell(if a.quantized { "yes" } else { "no" }.into(), a.quantized.then_some("33")),
                    Cell(format!("{:.7}", a.min_cosine), (u.verdict == Verdict::Inaccurate).then_some("33")),
                    Cell::from(format!("{:.7}", a.mean_cosine)),
                    Cell::from(format!("{:.2e}", a.max_abs_diff)),
                ])
            })
            .collect(),
        colour,
    );
}

/// Workers that died or hung, with their stderr tails.
fn crashes(out: &mut String, r: &Report, colour: bool) {
    let crashed: Vec<_> = r.units.iter().filter_map(|u| u.crash.as_ref().map(|c| (u, c))).collect();
    if !crashed.is_empty() {
        heading(out, "Crashes", colour);
        for (u, c) in crashed {
            let how = match (&c.signal, c.exit_code, c.hung) {
                (_, _, true) => "hung (killed after the timeout)".to_string(),
                (Some(s), _, _) => s.clone(),
                (None, Some(code), _) => format!("exit code {code}"),
                _ => "ended".into(),
            };
            let _ = writeln!(out, "  {}: {how} while {}; stderr tail:", u.unit, c.during);
            let lines: Vec<&str> = c.stderr_tail.lines().filter(|l| !l.trim().is_empty()).collect();
            for l in &lines[lines.len().saturating_sub(8)..] {
                let _ = writeln!(out, "    | {l}");
            }
        }
    }
}

/// Every finding, the model's first.
fn findings(out: &mut String, r: &Report, colour: bool) {
    heading(out, "Findings", colour);
    for f in &r.model.findings {
        let _ = writeln!(out, "  [{}] {} model: {}", f.branch, f.severity, f.message);
    }
    for u in &r.units {
        for f in &u.findings {
            let _ = writeln!(out, "  [{}] {} {}: {}", f.branch, f.severity, u.unit, f.message);
        }
    }
}

/// The recommended chain and why.
fn recommendation(out: &mut String, r: &Report, colour: bool) {
    heading(out, "Recommendation", colour);
    if r.recommendation.compute_units.is_empty() {
        let _ = writeln!(out, "  no unit of the chain can run this model");
    } else {
        let chain = format!("BULKHEAD_COMPUTE_UNITS={}", r.recommendation.compute_units);
        let _ = writeln!(out, "  {}", if colour { format!("\x1b[1;32m{chain}\x1b[0m") } else { chain });
    }
    for n in &r.recommendation.notes {
        let _ = writeln!(out, "  - {n}");
    }
}
