//! `bulkhead doctor`: walks the diagnosis tree of seed 002 for a model on every unit of the chain, by measuring.
//!
//! Each unit runs in its own worker process (`bulkhead worker`), so a unit that segfaults, aborts or hangs is a
//! finding with its signal and stderr tail, not the end of the diagnosis. Per unit: availability; a cold load
//! (private, empty compiled-model cache) and a cached load; node placement; first-prediction, p50/p95 latency and
//! throughput per batch size; latency across input lengths (recompiles); resident memory over N predictions and its
//! slope; outputs on a fixed probe set against the most exact unit (fp32 on the CPU). Then a verdict per unit and a
//! recommended chain. Output: a terminal report, `--json` (schema `bulkhead.doctor/1`, docs/doctor.md) and
//! `--html FILE` (a self-contained page with SVG charts).
//!
//! Modules: [`report`] (the schema), [`worker`] (driving one measurement worker), [`checks`] (static file and
//! machine checks), [`analyze`] (statistics, verdicts, recommendation), [`terminal`] and [`html`] (renderers).

pub mod analyze;
pub mod checks;
pub mod html;
pub mod progress;
pub mod report;
pub mod terminal;
pub mod worker;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bulkhead_core::{Availability, Chain, ModelFiles, ModelTask, Unit};
use bulkhead_embed::{probe_texts, Tokenizer};
use bulkhead_supervisor::FaultRule;

use super::common::{engines, open_model, parse_chain, require_embedding_model, UsageError, Weights};
use progress::Progress;
use report::{Crash, Finding, LoadError, LoadReport, Report, Settings, ShapeRow, UnitReport, WarmupRow};
use worker::{Failure, Limits, Started, Worker};

/// Arguments of `bulkhead doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Model folder (Hugging Face layout), .onnx file, or hub id ORG/NAME[@REVISION] (cached or downloaded);
    /// default: all-MiniLM-L6-v2 installed by the set-up.
    #[arg(long, env = "BULKHEAD_MODEL", value_name = "PATH|ORG/NAME")]
    model: Option<String>,
    /// tokenizer.json to use when the model has none beside it.
    #[arg(long, env = "BULKHEAD_TOKENIZER")]
    tokenizer: Option<PathBuf>,
    /// The units to diagnose, in order (units or the aliases ALL, CPU_AND_GPU, CPU_AND_NE, CPU_ONLY).
    #[arg(long, env = "BULKHEAD_COMPUTE_UNITS", default_value = Chain::DEFAULT, value_parser = parse_chain)]
    compute_units: Chain,
    /// Print the report as one JSON object (schema `bulkhead.doctor/1`, see docs/doctor.md) instead of tables.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML page with the tables and charts to FILE.
    #[arg(long, env = "BULKHEAD_HTML", value_name = "FILE")]
    html: Option<PathBuf>,
    /// Predictions of the memory run (resident memory after each one).
    #[arg(long, env = "BULKHEAD_PREDICTIONS", default_value_t = 300)]
    predictions: usize,
    /// Timed predictions per batch size (after a first, untimed one).
    #[arg(long, env = "BULKHEAD_ITERATIONS", default_value_t = 20)]
    iterations: usize,
    /// Batch sizes of the latency and throughput table.
    #[arg(long, env = "BULKHEAD_BATCH_SIZES", default_value = "1,8,32", value_delimiter = ',')]
    batch_sizes: Vec<usize>,
    /// Input lengths (tokens, batch 1) of the dynamic-shape sweep; lengths above the model's maximum are dropped.
    #[arg(long, env = "BULKHEAD_SEQ_LENGTHS", default_value = "8,16,32,64,128,256,512", value_delimiter = ',')]
    seq_lengths: Vec<usize>,
    /// Resident-memory growth allowed before a worker should be recycled (for the recycle recommendation).
    #[arg(long, env = "BULKHEAD_MEMORY_BUDGET_MB", default_value_t = 256)]
    memory_budget_mb: u64,
    /// An fp32 model to compare outputs with when no unit of the chain runs fp32 weights (e.g. the original of a
    /// quantized model).
    #[arg(long, env = "BULKHEAD_REFERENCE", value_name = "PATH|ORG/NAME")]
    reference: Option<String>,
    /// Seconds a worker may take to load and warm up before it counts as hung.
    #[arg(long, env = "BULKHEAD_LOAD_TIMEOUT", default_value_t = 120)]
    load_timeout: u64,
    /// Seconds one prediction may take before the worker counts as hung.
    #[arg(long, env = "BULKHEAD_PREDICT_TIMEOUT", default_value_t = 30)]
    predict_timeout: u64,
    /// Render a report saved with --json (as tables, or with --html) instead of measuring.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["model", "reference", "tokenizer"])]
    from_json: Option<PathBuf>,
}

/// Fixed probe set of the accuracy comparison: the warm-up sentences plus longer, numeric and non-ASCII ones.
pub fn accuracy_probes() -> Vec<String> {
    let mut texts = probe_texts();
    texts.extend(
        [
            "Résumé, naïve café: diacritics and non-ASCII letters — and an em dash.",
            "東京は日本の首都です。",
            "Order #4521 shipped on 2026-11-03 for $1,299.99 (qty 3).",
            "fn main() { println!(\"hello\"); }",
            "a",
            "The mitochondria is the powerhouse of the cell, converting nutrients into adenosine triphosphate, the \
             energy currency that drives nearly every process in living organisms, from muscle contraction to the \
             firing of neurons and the synthesis of proteins and nucleic acids.",
            "Why did my model crash on the neural engine but not on the CPU?",
            "   leading and trailing spaces   ",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    texts
}

/// A batch to measure: token rows and the texts they came from; a cross-encoder's rows carry their token type ids.
#[derive(Clone)]
pub struct Batch {
    pub rows: Vec<Vec<i64>>,
    /// Token type ids per row (a reranker's or a classifier's rows); empty for an embedding model.
    pub type_ids: Vec<Vec<i64>>,
    pub texts: Vec<String>,
}

/// The query a reranker's measurement pairs with each probe text.
const PAIR_QUERY: &str = "Which compute unit really computed this answer?";

impl Batch {
    /// `texts` as `task` takes them: token rows of an embedding model, (query, text) pairs of a reranker, single
    /// texts of a classifier (with their token type ids).
    pub fn encode(tokenizer: &Tokenizer, task: &ModelTask, texts: Vec<String>) -> anyhow::Result<Batch> {
        if !task.is_cross_encoder() {
            return Ok(Batch { rows: tokenizer.encode(&texts)?, type_ids: vec![], texts });
        }
        let query = matches!(task, ModelTask::Rerank { .. }).then_some(PAIR_QUERY);
        let pairs: Vec<(&str, Option<&str>)> =
            texts.iter().map(|t| query.map_or((t.as_str(), None), |q| (q, Some(t.as_str())))).collect();
        let encoded = tokenizer.encode_pairs(&pairs, bulkhead_embed::Truncation::Right)?;
        let (rows, type_ids) = encoded.into_iter().map(|r| (r.ids, r.type_ids)).unzip();
        Ok(Batch { rows, type_ids, texts })
    }

    /// `n` rows cycling through the warm-up sentences (the shapes the worker warmed up with).
    pub fn of_probes(tokenizer: &Tokenizer, task: &ModelTask, n: usize) -> anyhow::Result<Batch> {
        Batch::encode(tokenizer, task, probe_texts().into_iter().cycle().take(n).collect())
    }

    pub fn seq(&self) -> usize {
        self.rows.iter().map(Vec::len).max().unwrap_or(0)
    }
}

/// Everything a unit's diagnosis needs.
struct Plan<'a> {
    model: &'a ModelFiles,
    rules: &'a [FaultRule],
    limits: Limits,
    batches: Vec<(usize, Batch)>,
    /// One row per input length (batch 1), for the dynamic-shape sweep.
    lengths: Vec<(usize, Batch)>,
    probes: Option<Batch>,
    /// Single-input batches of the warm-up sentences, for the memory run.
    singles: Vec<Batch>,
    predictions: usize,
    iterations: usize,
    budget_mb: u64,
    cache_root: PathBuf,
}

/// Rows of exact token lengths, cut from one long text (keeping the final special token).
fn length_sweep(tokenizer: &Tokenizer, task: &ModelTask, lengths: &[usize]) -> anyhow::Result<Vec<(usize, Batch)>> {
    let text = "bulkhead measures every compute unit of the chain before it trusts one. ".repeat(64);
    let ids = tokenizer.encode(std::slice::from_ref(&text))?.remove(0);
    let mut out = vec![];
    for &len in lengths {
        if len < 2 || len > ids.len() || len > tokenizer.max_len() {
            continue;
        }
        let mut row = ids[..len - 1].to_vec();
        row.push(*ids.last().unwrap_or(&0));
        // A cross-encoder takes the row as one segment (type ids 0).
        let type_ids = if task.is_cross_encoder() { vec![vec![0; row.len()]] } else { vec![] };
        out.push((len, Batch { rows: vec![row], type_ids, texts: vec![text.clone()] }));
    }
    Ok(out)
}

impl DoctorArgs {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        if let Some(path) = &self.from_json {
            let text = std::fs::read_to_string(path).with_context(|| format!("--from-json {}", path.display()))?;
            let report: Report = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a `{}` report", path.display(), report::SCHEMA))?;
            return self.output(&report);
        }
        if self.predictions < 2 || self.iterations == 0 {
            return Err(UsageError("--predictions must be at least 2 and --iterations at least 1".into()).into());
        }
        if self.batch_sizes.is_empty() || self.batch_sizes.contains(&0) {
            return Err(UsageError("--batch-sizes must be positive numbers, e.g. 1,8,32".into()).into());
        }
        let rules = bulkhead_supervisor::faults::from_env().map_err(|e| UsageError(e.to_string()))?;
        let weights = Weights::Chain(&self.compute_units);
        let model = open_model(self.model.as_deref(), self.tokenizer.as_deref(), weights)?;
        require_embedding_model(&model, "doctor", true)?;
        let reference_model = self.reference.as_deref().map(|p| open_model(Some(p), None, weights)).transpose()?;
        let tokenizer = Tokenizer::load(&model);
        let tokenizer_status = tokenizer.as_ref().map(|_| ()).map_err(|e| e.to_string());
        let report = self.diagnose(&model, tokenizer.ok(), tokenizer_status, &rules, reference_model.as_ref())?;
        self.output(&report)?;
        if report.recommendation.compute_units.is_empty() {
            anyhow::bail!("no unit of the chain `{}` can run this model (see the report)", report.settings.chain);
        }
        Ok(())
    }

    fn output(&self, report: &Report) -> anyhow::Result<()> {
        if let Some(path) = &self.html {
            std::fs::write(path, html::render(report)).with_context(|| format!("--html {}", path.display()))?;
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(report)?);
        } else {
            print!("{}", terminal::render(report, terminal::use_colour()));
        }
        if let Some(path) = &self.html {
            eprintln!("wrote {}", path.display());
        }
        Ok(())
    }

    fn diagnose(
        &self,
        model: &ModelFiles,
        tokenizer: Option<Tokenizer>,
        tokenizer_status: Result<(), String>,
        rules: &[FaultRule],
        reference_model: Option<&ModelFiles>,
    ) -> anyhow::Result<Report> {
        let engines = engines();
        let limits =
            Limits { load: Duration::from_secs(self.load_timeout), predict: Duration::from_secs(self.predict_timeout) };
        let cache_root = std::env::temp_dir().join(format!("bulkhead-doctor-{}", std::process::id()));
        let mut plan = Plan {
            model,
            rules,
            limits,
            batches: vec![],
            lengths: vec![],
            probes: None,
            singles: vec![],
            predictions: self.predictions,
            iterations: self.iterations,
            budget_mb: self.memory_budget_mb,
            cache_root: cache_root.clone(),
        };
        if let Some(t) = &tokenizer {
            for &b in &self.batch_sizes {
                plan.batches.push((b, Batch::of_probes(t, &model.task, b)?));
            }
            plan.lengths = length_sweep(t, &model.task, &self.seq_lengths)?;
            for text in probe_texts() {
                plan.singles.push(Batch::encode(t, &model.task, vec![text])?);
            }
            plan.probes = Some(Batch::encode(t, &model.task, accuracy_probes())?);
        }
        let machine = checks::machine();
        let model_report = checks::model_report(model, tokenizer_status);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let mut progress = Progress::new("doctor");
        let mut units = vec![];
        let mut outputs: Vec<Option<Vec<Vec<f32>>>> = vec![];
        for unit in self.compute_units.units() {
            let availability = engines.availability(unit);
            let (mut r, out) = runtime.block_on(diagnose_unit(&plan, *unit, availability, &mut progress));
            if let (Some(avail), true) = (machine.memory_available_bytes, r.availability == "usable") {
                oom_check(&mut r, checks::unit_weights_bytes(model, unit), avail);
            }
            units.push(r);
            outputs.push(out);
        }

        // Accuracy: against the most exact unit, fp32 on the CPU: one of the chain, else an extra worker.
        let precision_of = |u: &UnitReport| u.session.as_ref().map(|s| s.precision.clone()).unwrap_or_default();
        let in_chain = units
            .iter()
            .zip(&outputs)
            .position(|(u, o)| o.is_some() && u.crash.is_none() && precision_of(u) == "fp32" && is_cpu(&u.unit));
        let mut reference = None;
        let mut ref_out = None;
        if let (Some(i), None) = (in_chain, reference_model) {
            reference = Some(report::Reference {
                unit: units[i].unit.clone(),
                model: model.name.clone(),
                precision: "fp32".into(),
                in_chain: true,
            });
            ref_out = outputs[i].clone();
        } else if let Some(probes) = &plan.probes {
            let ref_model = reference_model.unwrap_or(model);
            progress.phase("reference", "fp32 CPU outputs");
            if let Some((unit, out)) = runtime.block_on(reference_outputs(ref_model, &probes.texts, limits)) {
                reference = Some(report::Reference {
                    unit,
                    model: ref_model.name.clone(),
                    precision: "fp32".into(),
                    in_chain: false,
                });
                ref_out = Some(out);
            }
        }
        progress.finish();
        for (u, out) in units.iter_mut().zip(&outputs) {
            let (Some(reference), Some(want), Some(got)) = (&reference, &ref_out, out) else { continue };
            let label = if reference.in_chain {
                reference.unit.clone()
            } else {
                format!("{} ({})", reference.unit, reference.model)
            };
            match analyze::accuracy(got, want, &label, &precision_of(u)) {
                Ok(a) => u.accuracy = Some(a),
                Err(f) => u.findings.push(f),
            }
        }
        if reference.is_none() && units.iter().any(|u| u.session.is_some()) {
            units.iter_mut().filter(|u| u.session.is_some()).for_each(|u| {
                u.findings.push(Finding::new(
                    "4b",
                    "warning",
                    "accuracy not measured: no fp32 CPU reference (pass --reference with the fp32 original of this model)",
                ))
            });
        }
        analyze::verdicts(&mut units);
        let recommendation = analyze::recommend(&units);
        let _ = std::fs::remove_dir_all(&cache_root);
        Ok(Report {
            schema: report::SCHEMA.into(),
            bulkhead_version: env!("CARGO_PKG_VERSION").into(),
            model: model_report,
            machine,
            settings: Settings {
                chain: self.compute_units.to_string(),
                batch_sizes: self.batch_sizes.clone(),
                iterations: self.iterations,
                predictions: self.predictions,
                seq_lengths: plan.lengths.iter().map(|(l, _)| *l).collect(),
                probes: plan.probes.as_ref().map_or(0, |p| p.rows.len()),
                memory_budget_mb: self.memory_budget_mb,
                load_timeout_s: self.load_timeout,
                predict_timeout_s: self.predict_timeout,
                faults: serde_json::to_value(rules)?,
            },
            units,
            reference,
            recommendation,
        })
    }
}

fn is_cpu(unit: &str) -> bool {
    unit.parse::<Unit>().is_ok_and(|u| u.is_cpu())
}

/// Out of memory on load (3b): the weights and the loaded worker against the memory available.
fn oom_check(r: &mut UnitReport, weights: u64, available: u64) {
    const MIB: f64 = (1u64 << 20) as f64;
    let rss = r.load.as_ref().map_or(0, |l| l.rss_after_load_bytes);
    let need = rss.max(weights);
    if need == 0 {
        return;
    }
    let (sev, what) = if need as f64 > 0.8 * available as f64 {
        ("problem", "too close to the memory available: loading may fail or swap")
    } else {
        ("info", "fits")
    };
    let resident =
        if rss > 0 { format!(", worker resident after load {:.0} MiB", rss as f64 / MIB) } else { String::new() };
    r.findings.push(Finding::new(
        "3b",
        sev,
        format!(
            "weights {:.0} MiB{resident}, available {:.0} MiB: {what}",
            weights as f64 / MIB,
            available as f64 / MIB
        ),
    ));
}

/// Outputs of the fp32 reference on the probe texts (tokenized with the reference model's own tokenizer): the first
/// CPU unit that loads fp32 weights.
async fn reference_outputs(model: &ModelFiles, texts: &[String], limits: Limits) -> Option<(String, Vec<Vec<f32>>)> {
    let batch = Batch::encode(&Tokenizer::load(model).ok()?, &model.task, texts.to_vec()).ok()?;
    for unit in [Unit::ORT_CPU, Unit::CANDLE_CPU] {
        let Ok(started) = worker::start(model, unit, 0, &[], None, limits).await else { continue };
        if checks::precision_name(started.report.precision) != "fp32" {
            started.worker.shutdown().await;
            continue;
        }
        let mut w = started.worker;
        let out = w.predict(&batch).await.ok().map(|p| p.vectors);
        w.shutdown().await;
        if let Some(out) = out {
            return Some((unit.to_string(), out));
        }
    }
    None
}

fn unit_dir(root: &Path, unit: Unit) -> PathBuf {
    root.join(unit.to_string().replace([':', '[', ']'], "_"))
}

/// Removes ANSI escape sequences (workers log in colour).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Records a failed step in the report: a crash or hang, a load error or a failed prediction.
fn record_failure(r: &mut UnitReport, failure: Failure, during: &str) {
    match failure {
        Failure::Spawn(e) => r.findings.push(Finding::new("predict", "problem", e)),
        Failure::LoadFailed { kind, reason } => {
            let branch = analyze::load_error_branch(&kind, &reason).to_string();
            r.findings.push(Finding::new(&branch, "problem", format!("load failed ({kind}): {reason}")));
            r.load_error = Some(LoadError { kind, reason, branch });
        }
        Failure::Died { phase, exit, hung } => {
            let how = match (&exit.signal, exit.code, hung) {
                (_, _, true) => "hung".to_string(),
                (Some(s), _, _) => s.clone(),
                (None, Some(c), _) => format!("exit code {c}"),
                _ => "ended".into(),
            };
            r.findings.push(Finding::new("crash", "problem", format!("{how} while {during}")));
            r.crash = Some(Crash {
                phase: phase.into(),
                during: during.into(),
                signal: exit.signal,
                exit_code: exit.code,
                hung,
                stderr_tail: strip_ansi(&exit.stderr_tail),
            });
        }
        Failure::PredictFailed(message) => r.findings.push(Finding::new(
            "predict",
            "problem",
            format!("a prediction failed while {during}: {message}"),
        )),
    }
}

/// Diagnoses one unit: returns its report and its outputs on the probe set.
async fn diagnose_unit(
    plan: &Plan<'_>,
    unit: Unit,
    availability: Availability,
    progress: &mut Progress,
) -> (UnitReport, Option<Vec<Vec<f32>>>) {
    let name = unit.to_string();
    let mut r = UnitReport::new(name.clone());
    match availability {
        Availability::Usable => {}
        Availability::NotCompiled(why) => {
            r.availability = "not_compiled".into();
            r.availability_reason = Some(why);
            return (r, None);
        }
        Availability::Unusable(why) => {
            r.availability = "unusable".into();
            r.availability_reason = Some(why);
            return (r, None);
        }
    }
    let dir = unit_dir(&plan.cache_root, unit);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::create_dir_all(&dir);
    progress.phase(&name, "cold load");
    let started = match worker::start(plan.model, unit, 0, plan.rules, Some(&dir), plan.limits).await {
        Ok(s) => s,
        Err(f) => {
            let during = match &f {
                Failure::Died { phase: "warming_up", .. } => "warming up",
                _ => "loading the model",
            };
            record_failure(&mut r, f, during);
            return (r, None);
        }
    };
    let Started { mut worker, report: session, warmup, rss_bytes, timing } = started;
    let cold_hit = cache_note(&session.notes);
    r.session = Some(report::SessionInfo {
        unit: session.unit.to_string(),
        runtime: session.runtime.clone(),
        model_file: session.model_file.clone(),
        precision: checks::precision_name(session.precision),
        hidden_size: session.hidden_size,
        notes: session.notes.clone(),
    });
    if session.unit != unit {
        r.findings.push(Finding::new("2c", "problem", format!("asked for {unit}, the worker ran {}", session.unit)));
    }
    #[cfg(feature = "ort")]
    let provider = bulkhead_ort::provider_name(unit.device);
    #[cfg(not(feature = "ort"))]
    let provider = "";
    let placement = analyze::placement(&session, provider);
    if placement.fallback_nodes > 0 {
        let ops: Vec<String> = placement.fallback_op_types.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        r.findings.push(Finding::new(
            "1b",
            "warning",
            format!(
                "{} of {} nodes fell back to the CPU: {}",
                placement.fallback_nodes,
                placement.total_nodes,
                ops.join(", ")
            ),
        ));
    }
    r.placement = Some(placement);
    let cache = if cold_hit.is_some() { "bulkhead-graph" } else { "none" };
    r.load = Some(LoadReport {
        cold: timing,
        cached: None,
        cache: cache.into(),
        cold_cache_hit: cold_hit,
        cached_cache_hit: None,
        cache_dir: (cache != "none").then(|| bulkhead_core::install::cache_dir().display().to_string()),
        rss_after_load_bytes: rss_bytes,
        warmup: warmup.iter().map(|w| WarmupRow { batch: w.batch, seq: w.seq, ms: w.ms }).collect(),
    });

    let mut probe_out = None;
    let measured = measure(plan, &mut worker, &mut r, &mut probe_out, progress).await;
    if let Err((f, during)) = measured {
        record_failure(&mut r, f, &during);
        return (r, probe_out);
    }
    worker.shutdown().await;
    r.findings.extend(analyze::warmup_mismatch(&r));

    progress.phase(&name, "cached load");
    match worker::start(plan.model, unit, 1, plan.rules, Some(&dir), plan.limits).await {
        Ok(s) => {
            let hit = cache_note(&s.report.notes);
            if let Some(l) = r.load.as_mut() {
                l.cached = Some(s.timing);
                l.cached_cache_hit = hit;
            }
            s.worker.shutdown().await;
        }
        Err(f) => record_failure(&mut r, f, "loading the model a second time"),
    }
    load_findings(&mut r);
    (r, probe_out)
}

/// `Some(hit)` when the session notes say whether the compiled-model (graph) cache was hit.
fn cache_note(notes: &[String]) -> Option<bool> {
    notes.iter().find_map(|n| {
        if n.contains("cache hit") {
            Some(true)
        } else if n.contains("cold build") {
            Some(false)
        } else {
            None
        }
    })
}

/// Slow first load (2a): cold against cached.
fn load_findings(r: &mut UnitReport) {
    let Some(l) = &r.load else { return };
    let Some(cached) = &l.cached else { return };
    let msg = format!(
        "cold load {:.0} ms (session {:.0} ms), cached load {:.0} ms (session {:.0} ms); compiled-model cache: {}{}",
        l.cold.total_ms,
        l.cold.session_ms,
        cached.total_ms,
        cached.session_ms,
        l.cache,
        match l.cached_cache_hit {
            Some(true) => ", hit on the second load",
            Some(false) => ", missed on the second load",
            None => "",
        }
    );
    let slow_first = l.cold.session_ms > 2.0 * cached.session_ms + 500.0;
    r.findings.push(Finding::new("2a", if slow_first { "warning" } else { "info" }, msg));
}

type Step = Result<(), (Failure, String)>;

/// The measurements on a ready worker: latency per batch size, input lengths, probe outputs, memory.
async fn measure(
    plan: &Plan<'_>,
    worker: &mut Worker,
    r: &mut UnitReport,
    probe_out: &mut Option<Vec<Vec<f32>>>,
    progress: &mut Progress,
) -> Step {
    let name = r.unit.clone();
    let total = plan.batches.len() * (plan.iterations + 1);
    progress.phase(&name, "latency per batch size");
    let mut done = 0;
    for (batch, b) in &plan.batches {
        let during = |i: usize| format!("predicting (batch {batch}, prediction {})", i + 1);
        let first = worker.predict(b).await.map_err(|f| (f, during(0)))?;
        let (mut walls, mut engine) = (vec![], vec![]);
        for i in 0..plan.iterations {
            let p = worker.predict(b).await.map_err(|f| (f, during(i + 1)))?;
            walls.push(p.wall_ms);
            engine.push(p.timing.infer_ms + p.timing.post_ms);
            done += 1;
            progress.tick(done, total);
        }
        r.latency.push(analyze::latency_row(*batch, b.seq(), first.wall_ms, &walls, &engine));
    }

    if !plan.lengths.is_empty() {
        progress.phase(&name, "input lengths");
        let repeats = (plan.iterations / 4).clamp(3, 10);
        let mut rows = vec![];
        for (i, (len, b)) in plan.lengths.iter().enumerate() {
            let during = || format!("predicting (input length {len})");
            let first = worker.predict(b).await.map_err(|f| (f, during()))?.wall_ms;
            let mut walls = vec![];
            for _ in 0..repeats {
                walls.push(worker.predict(b).await.map_err(|f| (f, during()))?.wall_ms);
            }
            let p50 = analyze::percentile(&walls, 0.5);
            rows.push(ShapeRow { seq: *len, first_ms: first, p50_ms: p50, spike: analyze::is_spike(first, p50) });
            progress.tick(i + 1, plan.lengths.len());
        }
        let (len0, b0) = &plan.lengths[0];
        let revisit =
            worker.predict(b0).await.map_err(|f| (f, format!("predicting (input length {len0} again)")))?.wall_ms;
        let shapes = analyze::shapes(rows, *len0, revisit);
        if let Some(rec) = &shapes.recommendation {
            r.findings.push(Finding::new("2b", "warning", rec.clone()));
        } else {
            r.findings.push(Finding::new(
                "2b",
                "info",
                format!(
                    "no latency spikes across input lengths {}..{} tokens ({:.3} ms per token): dynamic shapes are fine here",
                    plan.lengths[0].0,
                    plan.lengths.last().map_or(0, |l| l.0),
                    shapes.ms_per_token
                ),
            ));
        }
        r.shapes = Some(shapes);
    }

    if let Some(probes) = &plan.probes {
        progress.phase(&name, "probe outputs");
        let p = worker.predict(probes).await.map_err(|f| (f, "predicting the probe set".into()))?;
        *probe_out = Some(p.vectors);
    }

    if !plan.singles.is_empty() {
        progress.phase(&name, &format!("memory over {} predictions", plan.predictions));
        let mut rss = Vec::with_capacity(plan.predictions);
        for i in 0..plan.predictions {
            let b = &plan.singles[i % plan.singles.len()];
            let p = worker
                .predict(b)
                .await
                .map_err(|f| (f, format!("predicting (prediction {} of the memory run)", i + 1)))?;
            rss.push(p.rss_bytes);
            progress.tick(i + 1, plan.predictions);
        }
        r.memory = Some(analyze::memory(rss, 1, plan.budget_mb));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_is_stripped_from_stderr_tails() {
        assert_eq!(strip_ansi("\x1b[33m WARN\x1b[0m fault injection"), " WARN fault injection");
        assert_eq!(strip_ansi("plain\nlines"), "plain\nlines");
    }

    #[test]
    fn probes_are_fixed_and_varied() {
        let p = accuracy_probes();
        assert_eq!(p.len(), 16);
        assert!(p.iter().any(|t| !t.is_ascii()) && p.iter().any(|t| t.len() > 200));
    }
}
