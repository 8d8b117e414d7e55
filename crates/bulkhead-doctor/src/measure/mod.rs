//! Measuring: each unit of the chain in its own worker process (availability, a cold load in a private, empty
//! compiled-model cache and a cached load, node placement, latency per batch size, latency across input lengths,
//! resident memory over N predictions, outputs on a fixed probe set), then the accuracy of every unit against the
//! most exact one (fp32 on the CPU), the verdicts and the recommended chain.
//!
//! A speech-to-text model is measured on a synthetic clip instead ([`speech`]), a segmentation model on a
//! synthetic image ([`segment`]); their outputs are compared with the first unit of the chain that produced them.
//!
//! * [`worker`]: one measurement worker over the supervisor crate's worker client;
//! * [`latency`]: the timed predictions of one batch size (shared with the bench);
//! * [`speech`], [`segment`]: the transcriptions, and the encoder and click predictions (shared with the bench);
//! * [`vision`]: an image-text model's vision tower on synthetic images (shared with the bench);
//! * [`unit`]: everything measured on one unit, and how a failed step becomes a finding.

pub mod latency;
pub mod segment;
pub mod speech;
pub mod unit;
pub mod vision;
pub mod worker;

use std::path::PathBuf;

use bulkhead_core::{Chain, ModelFiles, ModelTask, Precision, Row, Unit};
use bulkhead_embed::{probe_texts, Engines, Tokenizer, Truncation};
use bulkhead_supervisor::{FaultRule, Payload};

use crate::progress::Progress;
use crate::report::{self, Branch, Finding, ModelKind, Report, Settings, Severity, UnitReport};
use crate::{analyze, checks, media, Error};
pub use worker::Limits;
use worker::{Start, Worker};

/// What to measure, and how much.
#[derive(Debug, Clone)]
pub struct Options {
    /// The units to diagnose, in order.
    pub chain: Chain,
    /// Batch sizes of the latency and throughput table.
    pub batch_sizes: Vec<usize>,
    /// Timed predictions per batch size (after a first, untimed one); a segmentation model: new images through the
    /// image encoder.
    pub iterations: usize,
    /// Predictions of the memory run: a speech-to-text model's timed transcriptions, a segmentation model's clicks.
    pub predictions: usize,
    /// Input lengths (tokens, batch 1) of the dynamic-shape sweep; lengths above the model's maximum are dropped.
    pub seq_lengths: Vec<usize>,
    /// Resident-memory growth allowed before a worker should be recycled.
    pub memory_budget_mb: u64,
    /// Deadlines of the workers' steps.
    pub limits: Limits,
    /// `BULKHEAD_FAULTS` rules handed to the workers.
    pub faults: Vec<FaultRule>,
    /// A memory ceiling for each measured worker (`--worker-memory-mb`), or none.
    pub worker_memory: Option<bulkhead_supervisor::MemoryCeiling>,
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

/// A batch to measure: what the worker is sent (token rows for an embedding model, token pairs for a reranker or
/// classifier), the texts it came from (fault rules match on them) and its padded length.
#[derive(Debug, Clone)]
pub struct Batch {
    pub payload: Payload,
    pub texts: Vec<String>,
}

impl Batch {
    /// The padded length: the longest row.
    pub fn seq(&self) -> usize {
        match &self.payload {
            Payload::Rows(rows) => rows.iter().map(Row::len).max().unwrap_or(0),
            Payload::Tensors(_) | Payload::Segment(_) | Payload::Audio(_) | Payload::Probe => 0,
        }
    }

    /// How many inputs.
    pub fn len(&self) -> usize {
        self.payload.rows()
    }

    /// Whether the batch has no inputs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How texts become a batch for the model: token rows for an embedding model; for a reranker, each text as the
/// document of a pair with one fixed query (as a rerank request sends them); for a classifier, each text alone.
#[derive(Clone, Copy)]
pub struct Encoder<'t> {
    tokenizer: &'t Tokenizer,
    task: &'t ModelTask,
}

/// The query of every pair a reranker is measured with.
pub const RERANK_QUERY: &str = "Which compute unit really computed this answer?";

impl<'t> Encoder<'t> {
    /// The encoder of `model`, with its tokenizer.
    pub fn new(tokenizer: &'t Tokenizer, model: &'t ModelFiles) -> Encoder<'t> {
        Encoder { tokenizer, task: &model.task }
    }

    /// `texts` as one batch.
    pub fn encode(&self, texts: Vec<String>) -> Result<Batch, Error> {
        let payload = match self.task {
            // A segmentation model has no tokenizer, so it never gets an encoder; an image-text model is measured
            // on its text tower.
            ModelTask::Embedding | ModelTask::Segmentation | ModelTask::ImageText => {
                Payload::Rows(self.tokenizer.encode(&texts)?.into_iter().map(Row::tokens).collect())
            }
            // A sparse (SPLADE) model takes single texts, as a classifier does.
            ModelTask::Rerank { .. } | ModelTask::Classify { .. } | ModelTask::SparseEmbedding(_) => {
                let query = matches!(self.task, ModelTask::Rerank { .. }).then_some(RERANK_QUERY);
                let pairs: Vec<(&str, Option<&str>)> = texts
                    .iter()
                    .map(|t| match query {
                        Some(q) => (q, Some(t.as_str())),
                        None => (t.as_str(), None),
                    })
                    .collect();
                Payload::Rows(self.tokenizer.encode_pairs(&pairs, Truncation::Right)?.rows)
            }
            ModelTask::SpeechToText => return Err(Error::NotText(self.task.noun())),
        };
        Ok(Batch { payload, texts })
    }

    /// `n` inputs cycling through the warm-up sentences (the shapes the worker warmed up with).
    pub fn of_probes(&self, n: usize) -> Result<Batch, Error> {
        self.encode(probe_texts().into_iter().cycle().take(n).collect())
    }

    /// One row of exactly `ids` (a single text, so one segment: type ids all 0 for a pair model).
    fn row(&self, ids: Vec<i64>, text: String) -> Batch {
        let payload = match self.task {
            ModelTask::Embedding | ModelTask::ImageText => Payload::Rows(vec![Row::tokens(ids)]),
            _ => Payload::Rows(vec![Row::Pair { type_ids: vec![0; ids.len()], ids }]),
        };
        Batch { payload, texts: vec![text] }
    }

    fn max_len(&self) -> usize {
        self.tokenizer.max_len()
    }
}

/// What every unit is sent, by the kind of model.
pub enum Inputs {
    /// Texts, as the plan's batches (none without a tokenizer: only loads are measured).
    Text,
    /// A synthetic clip to transcribe.
    Speech(speech::Clip),
    /// A synthetic image to segment.
    Segment(segment::Scene),
}

impl Inputs {
    /// The inputs of `model`; why none, when a segmentation model's preprocessor gives no input size.
    pub fn of(model: &ModelFiles) -> Result<Inputs, String> {
        Ok(match model.task {
            ModelTask::SpeechToText => Inputs::Speech(speech::Clip::for_model(model)),
            ModelTask::Segmentation => Inputs::Segment(segment::Scene::for_model(model)?),
            _ => Inputs::Text,
        })
    }

    /// The report's kind.
    pub fn kind(&self) -> ModelKind {
        match self {
            Inputs::Text => ModelKind::Text,
            Inputs::Speech(_) => ModelKind::Speech,
            Inputs::Segment(_) => ModelKind::Segmentation,
        }
    }
}

/// What a unit produced that is compared with the other units': a text model's outputs on the probe set, or a
/// segmentation model's masks of the fixed prompt (a speech model's token ids are in its report).
pub enum Outputs {
    Vectors(Vec<Vec<f32>>),
    Masks(Box<bulkhead_segment::Masks>),
}

/// Everything a unit's diagnosis needs.
pub struct Plan<'a> {
    pub model: &'a ModelFiles,
    pub options: &'a Options,
    pub batches: Vec<(usize, Batch)>,
    /// One row per input length (batch 1), for the dynamic-shape sweep.
    pub lengths: Vec<(usize, Batch)>,
    pub probes: Option<Batch>,
    /// Single-input batches of the warm-up sentences, for the memory run.
    pub singles: Vec<Batch>,
    /// Where each unit's private compiled-model cache lives during the run.
    pub cache_root: PathBuf,
    /// What the units are sent.
    pub inputs: Inputs,
    /// An image-text model's synthetic images, for its vision tower (beside its texts).
    pub vision: Option<vision::Images>,
}

impl<'a> Plan<'a> {
    /// The batches of every measurement, from the model's tokenizer (none without one: only loads are measured).
    fn new(
        model: &'a ModelFiles,
        tokenizer: Option<&Tokenizer>,
        inputs: Inputs,
        options: &'a Options,
    ) -> Result<Plan<'a>, Error> {
        let encoder = tokenizer.filter(|_| matches!(inputs, Inputs::Text)).map(|t| Encoder::new(t, model));
        let mut plan = Plan {
            model,
            options,
            batches: vec![],
            lengths: vec![],
            probes: None,
            singles: vec![],
            cache_root: std::env::temp_dir().join(format!("bulkhead-doctor-{}", std::process::id())),
            inputs,
            vision: None,
        };
        if let Some(e) = encoder {
            for &b in &options.batch_sizes {
                plan.batches.push((b, e.of_probes(b)?));
            }
            plan.lengths = length_sweep(e, &options.seq_lengths)?;
            for text in probe_texts() {
                plan.singles.push(e.encode(vec![text])?);
            }
            plan.probes = Some(e.encode(accuracy_probes())?);
        }
        Ok(plan)
    }
}

/// Rows of exact token lengths, cut from one long text (keeping the final special token).
fn length_sweep(encoder: Encoder<'_>, lengths: &[usize]) -> Result<Vec<(usize, Batch)>, Error> {
    let text = "bulkhead measures every compute unit of the chain before it trusts one. ".repeat(64);
    let ids = encoder.tokenizer.encode(std::slice::from_ref(&text))?.remove(0);
    let mut out = vec![];
    for &len in lengths {
        if len < 2 || len > ids.len() || len > encoder.max_len() {
            continue;
        }
        let mut row = ids[..len - 1].to_vec();
        row.push(*ids.last().unwrap_or(&0));
        out.push((len, encoder.row(row, text.clone())));
    }
    Ok(out)
}

/// Diagnoses `model` on every unit of the chain. `tokenizer` is the model's, or why it has none (then only loads
/// are measured); `reference` is an fp32 model to compare outputs with when no unit of the chain runs fp32 weights.
pub fn diagnose(
    model: &ModelFiles,
    tokenizer: Result<Tokenizer, String>,
    reference: Option<&ModelFiles>,
    options: &Options,
    engines: &Engines,
) -> Result<Report, Error> {
    // A segmentation model has no tokenizer, and needs none.
    let tokenizer_status = match model.task {
        ModelTask::Segmentation => Ok(()),
        _ => tokenizer.as_ref().map(|_| ()).map_err(Clone::clone),
    };
    let machine = checks::machine();
    let mut model_report = checks::model_report(model, tokenizer_status);
    let inputs = Inputs::of(model).unwrap_or_else(|why| {
        model_report.findings.push(Finding::new(Branch::BrokenFiles, Severity::Problem, why));
        Inputs::Text
    });
    let mut plan = Plan::new(model, tokenizer.as_ref().ok(), inputs, options)?;
    if model.task.takes_images() {
        match vision::Images::for_model(model) {
            Ok(images) => plan.vision = Some(images),
            Err(why) => model_report.findings.push(Finding::new(Branch::BrokenFiles, Severity::Problem, why)),
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut progress = Progress::new("doctor");
    let mut units = vec![];
    let mut outputs: Vec<Option<Outputs>> = vec![];
    for unit in options.chain.units() {
        let availability = engines.availability(unit);
        let (mut r, out) = runtime.block_on(unit::diagnose_unit(&plan, *unit, availability, &mut progress));
        if let (Some(avail), report::Availability::Usable) = (machine.memory_available_bytes, r.availability) {
            unit::memory_at_load(&mut r, checks::unit_weights_bytes(model, unit), avail);
        }
        units.push(r);
        outputs.push(out);
    }
    let reference = match plan.inputs {
        Inputs::Text => {
            let vectors: Vec<Option<Vec<Vec<f32>>>> = outputs
                .into_iter()
                .map(|o| match o {
                    Some(Outputs::Vectors(v)) => Some(v),
                    _ => None,
                })
                .collect();
            let reference = runtime.block_on(choose_reference(&plan, &units, &vectors, reference, &mut progress));
            compare_outputs(&mut units, &vectors, reference.as_ref(), model.task.is_cross_encoder());
            reference
        }
        Inputs::Speech(_) => {
            media::speech_agreement(&mut units);
            None
        }
        Inputs::Segment(_) => {
            let masks: Vec<Option<bulkhead_segment::Masks>> = outputs
                .into_iter()
                .map(|o| match o {
                    Some(Outputs::Masks(m)) => Some(*m),
                    _ => None,
                })
                .collect();
            media::mask_agreement(&mut units, &masks);
            None
        }
    };
    crate::vision::agreement(&mut units);
    progress.finish();
    analyze::verdicts(&mut units);
    let recommendation = analyze::recommend(&units);
    let _ = std::fs::remove_dir_all(&plan.cache_root);
    Ok(Report {
        schema: report::SCHEMA.into(),
        bulkhead_version: env!("CARGO_PKG_VERSION").into(),
        model: model_report,
        machine,
        settings: settings(&plan),
        units,
        reference: reference.map(|(r, _)| r),
        recommendation,
    })
}

fn settings(plan: &Plan) -> Settings {
    let o = plan.options;
    Settings {
        kind: plan.inputs.kind(),
        chain: o.chain.to_string(),
        batch_sizes: o.batch_sizes.clone(),
        iterations: o.iterations,
        predictions: o.predictions,
        seq_lengths: plan.lengths.iter().map(|(l, _)| *l).collect(),
        probes: plan.probes.as_ref().map_or(0, Batch::len),
        memory_budget_mb: o.memory_budget_mb,
        load_timeout_s: o.limits.load.as_secs(),
        predict_timeout_s: o.limits.predict.as_secs(),
        faults: serde_json::to_value(&o.faults).unwrap_or_default(),
    }
}

fn precision_of(u: &UnitReport) -> Precision {
    u.session.as_ref().map_or(Precision::Unknown, |s| s.precision)
}

fn is_cpu(unit: &str) -> bool {
    unit.parse::<Unit>().is_ok_and(|u| u.is_cpu())
}

/// The reference of the accuracy comparison and its outputs: the most exact unit, fp32 on the CPU, of the chain
/// (unless `--reference` names another model), else an extra worker.
async fn choose_reference(
    plan: &Plan<'_>,
    units: &[UnitReport],
    outputs: &[Option<Vec<Vec<f32>>>],
    reference_model: Option<&ModelFiles>,
    progress: &mut Progress,
) -> Option<(report::Reference, Vec<Vec<f32>>)> {
    let in_chain = units
        .iter()
        .zip(outputs)
        .position(|(u, o)| o.is_some() && u.crash.is_none() && precision_of(u) == Precision::Fp32 && is_cpu(&u.unit));
    if let (Some(i), None) = (in_chain, reference_model) {
        let r = report::Reference {
            unit: units[i].unit.clone(),
            model: plan.model.name.clone(),
            precision: Precision::Fp32,
            in_chain: true,
        };
        return Some((r, outputs[i].clone()?));
    }
    let probes = plan.probes.as_ref()?;
    let model = reference_model.unwrap_or(plan.model);
    progress.phase("reference", "fp32 CPU outputs");
    let (unit, out) = reference_outputs(model, &probes.texts, plan.options.limits).await?;
    Some((report::Reference { unit, model: model.name.clone(), precision: Precision::Fp32, in_chain: false }, out))
}

/// Outputs of the fp32 reference on the probe texts (tokenized with the reference model's own tokenizer): the first
/// CPU unit that loads fp32 weights.
async fn reference_outputs(model: &ModelFiles, texts: &[String], limits: Limits) -> Option<(String, Vec<Vec<f32>>)> {
    let tokenizer = Tokenizer::load(model).ok()?;
    let batch = Encoder::new(&tokenizer, model).encode(texts.to_vec()).ok()?;
    for unit in [Unit::ORT_CPU, Unit::CANDLE_CPU] {
        let start = Start { model, unit, generation: 0, faults: &[], cache_dir: None, limits, memory: None };
        let Ok((mut worker, ready)) = Worker::start(start).await else { continue };
        if ready.report.precision != Precision::Fp32 {
            worker.shutdown().await;
            continue;
        }
        let out = worker.predict(&batch).await.ok().map(|p| p.vectors);
        worker.shutdown().await;
        if let Some(out) = out {
            return Some((unit.to_string(), out));
        }
    }
    None
}

/// Each unit's outputs against the reference's (branch 4a), or why accuracy was not measured (4b). A
/// cross-encoder's outputs are one logit per label and probe pair: they are compared per label, as the vector of
/// that label's logits over every probe (the cosine of a single logit with another says nothing).
fn compare_outputs(
    units: &mut [UnitReport],
    outputs: &[Option<Vec<Vec<f32>>>],
    reference: Option<&(report::Reference, Vec<Vec<f32>>)>,
    cross_encoder: bool,
) {
    let Some((reference, want)) = reference else {
        for u in units.iter_mut().filter(|u| u.session.is_some()) {
            u.findings.push(Finding::new(
                Branch::Quantized,
                Severity::Warning,
                "accuracy not measured: no fp32 CPU reference (pass --reference with the fp32 original of this model)",
            ));
        }
        return;
    };
    let label =
        if reference.in_chain { reference.unit.clone() } else { format!("{} ({})", reference.unit, reference.model) };
    for (u, got) in units.iter_mut().zip(outputs) {
        let Some(got) = got else { continue };
        let result = match cross_encoder {
            false => analyze::accuracy(got, want, &label, precision_of(u)),
            true => analyze::accuracy(&transpose(got), &transpose(want), &label, precision_of(u))
                .map(|a| report::Accuracy { probes: got.len(), ..a }),
        };
        match result {
            Ok(a) => u.accuracy = Some(a),
            Err(f) => u.findings.push(f),
        }
    }
}

/// Rows of per-probe outputs as rows of per-output values over the probes (a ragged input keeps what lines up).
fn transpose(rows: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let width = rows.iter().map(Vec::len).min().unwrap_or(0);
    (0..width).map(|j| rows.iter().map(|r| r[j]).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_encoder_outputs_compare_per_label() {
        assert_eq!(
            transpose(&[vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]]),
            vec![vec![1.0, 3.0, 5.0], vec![2.0, 4.0, 6.0]]
        );
        assert!(transpose(&[]).is_empty());
    }

    #[test]
    fn probes_are_fixed_and_varied() {
        let p = accuracy_probes();
        assert_eq!(p.len(), 16);
        assert!(p.iter().any(|t| !t.is_ascii()) && p.iter().any(|t| t.len() > 200));
    }
}
