//! The engine side of a worker: load the model on a unit, warm it up with the live input preparation, and answer
//! [`Payload`]s. Shared by worker processes and the in-process mode (`--isolation none`).

use std::time::Instant;

use bulkhead_core::{GraphSession, ModelFiles, NamedTensor, Row, RowKind, SessionReport, TensorSpec, Unit};
use bulkhead_embed::{
    warmup_pairs, warmup_rows, warmup_texts, Embedder, Engines, Scorer, StageTiming, Tokenizer, Towers,
};

use super::speech::SpeechRunner;
use crate::faults::WorkerFaults;
use crate::payload::{Answer, Payload, PayloadKind};
use crate::protocol::{LoadFailureKind, Response, RunError, Signature, WarmupShape};

/// Iterations per warm-up shape (the first one pays one-time costs; the median is recorded). A replacement of a
/// worker that served already runs one (`--warmup-iterations 1`): the first iteration of each shape is what makes
/// the worker ready, the others only refine the measurement.
pub const WARMUP_ITERATIONS: usize = 3;

/// Why loading failed: what `LoadFailed` carries.
#[derive(Debug, Clone)]
pub(crate) struct LoadFailure {
    pub kind: LoadFailureKind,
    pub reason: String,
}

impl LoadFailure {
    pub(crate) fn new(kind: LoadFailureKind, reason: impl Into<String>) -> LoadFailure {
        LoadFailure { kind, reason: reason.into() }
    }

    /// The protocol message.
    pub fn message(self) -> Response {
        Response::LoadFailed { kind: self.kind, reason: self.reason }
    }
}

/// What a worker runs: an embedding pipeline, or a plain graph (a tensor model).
enum Model {
    Embed {
        embedder: Embedder,
        /// The one-row warm-up input, in the live tokenizer's ids: what a health probe runs.
        probe: Vec<Vec<i64>>,
    },
    /// A cross-encoder (reranker or classifier): typed pair rows in, logits out.
    Score {
        scorer: Scorer,
        /// The one-row warm-up input (a query and a probe sentence): what a health probe runs.
        probe: Vec<Row>,
    },
    /// A two-tower image-text model (CLIP, SigLIP): token rows through the text tower, images through the vision
    /// tower, both sessions in this one worker (one model, one supervision).
    Towers {
        towers: Towers,
        /// One token row and one blank image: what a health probe runs (both towers).
        probe: (Vec<Row>, Vec<Row>),
    },
    Graph {
        session: Box<dyn GraphSession>,
        /// Zeros of every input's shape (dynamic dimensions 1): warm-up and health probes.
        warm: Vec<NamedTensor>,
    },
    /// A SAM2 segmentation model (`segment.rs`): its two graphs and the image-embedding cache.
    Segment(Box<bulkhead_segment::Sam2>),
    /// A speech model: audio in, a transcript out.
    Speech(Box<SpeechRunner>),
}

/// A loaded, warmed-up model.
pub(crate) struct Runner {
    model: Model,
    faults: WorkerFaults,
    served: u64,
}

/// The median milliseconds of `iterations` runs of `run` (at least one).
pub(super) fn median_ms(iterations: usize, mut run: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    let mut times = vec![];
    for _ in 0..iterations.max(1) {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(bulkhead_core::stats::median(&times))
}

/// Warms a model up on each batch of `shapes` (`iterations` runs each, the median recorded), as live requests run:
/// one [`WarmupShape`] per batch, its `seq` the longest row by `len`. The one warm-up loop of every batched model.
pub(super) fn warm_up<T>(
    shapes: &[Vec<T>],
    iterations: usize,
    len: impl Fn(&T) -> usize,
    mut run: impl FnMut(&[T]) -> Result<(), String>,
) -> Result<Vec<WarmupShape>, LoadFailure> {
    shapes
        .iter()
        .map(|rows| {
            let ms = median_ms(iterations, || run(rows))
                .map_err(|e| LoadFailure::new(LoadFailureKind::Inference, format!("warm-up failed: {e}")))?;
            Ok(WarmupShape { batch: rows.len(), seq: rows.iter().map(&len).max().unwrap_or(0), ms })
        })
        .collect()
}

pub(super) fn engine_failure(e: bulkhead_core::EngineError) -> LoadFailure {
    LoadFailure::new(LoadFailureKind::from(&e), e.to_string())
}

impl Runner {
    /// Loads `model` on `unit` (applying load faults) and warms it up with `iterations` per shape; `on_loaded` is
    /// called between load and warm-up.
    pub fn load(
        engines: &Engines,
        model: &ModelFiles,
        unit: &Unit,
        faults: WorkerFaults,
        iterations: usize,
        on_loaded: impl FnOnce(&SessionReport),
    ) -> Result<(Runner, Vec<WarmupShape>), LoadFailure> {
        faults.at_load().map_err(|r| LoadFailure::new(LoadFailureKind::ModelRejected, r))?;
        if model.is_tensor_model() {
            return Runner::load_graph(engines, model, unit, faults, iterations, on_loaded);
        }
        if model.task == bulkhead_core::ModelTask::Segmentation {
            let (sam2, warmup) = super::segment::load(engines, model, unit, iterations, on_loaded)?;
            return Ok((Runner { model: Model::Segment(Box::new(sam2)), faults, served: 0 }, warmup));
        }
        if model.task.is_speech() {
            let (speech, warmup) = SpeechRunner::load(engines, model, unit, on_loaded)?;
            return Ok((Runner { model: Model::Speech(Box::new(speech)), faults, served: 0 }, warmup));
        }
        let tokenizer = Tokenizer::load(model).map_err(|e| LoadFailure::new(LoadFailureKind::Setup, e.to_string()))?;
        if model.task.takes_images() {
            return super::towers::load(engines, model, unit, &tokenizer, iterations, on_loaded).map(
                |(towers, probe, warmup)| {
                    (Runner { model: Model::Towers { towers, probe }, faults, served: 0 }, warmup)
                },
            );
        }
        if model.task.is_cross_encoder() || model.task.is_sparse() {
            return Runner::load_scorer(engines, model, unit, &tokenizer, faults, iterations, on_loaded);
        }
        let session = engines.load(model, unit).map_err(engine_failure)?;
        let mut embedder = Embedder::new(model, session);
        on_loaded(embedder.report());
        let shapes = warmup_rows(&tokenizer);
        let warmup = warm_up(&shapes, iterations, Vec::len, |rows| {
            embedder.embed_tokens(rows).map(|_| ()).map_err(|e| e.to_string())
        })?;
        let Some(probe) = shapes.into_iter().next() else {
            return Err(LoadFailure::new(LoadFailureKind::Setup, "the tokenizer produced no warm-up rows"));
        };
        Ok((Runner { model: Model::Embed { embedder, probe }, faults, served: 0 }, warmup))
    }

    /// A cross-encoder: load, warm up on (query, probe sentence) pairs in live shapes (a sparse model: on texts).
    fn load_scorer(
        engines: &Engines,
        model: &ModelFiles,
        unit: &Unit,
        tokenizer: &Tokenizer,
        faults: WorkerFaults,
        iterations: usize,
        on_loaded: impl FnOnce(&SessionReport),
    ) -> Result<(Runner, Vec<WarmupShape>), LoadFailure> {
        let session = engines.load(model, unit).map_err(engine_failure)?;
        let mut scorer = Scorer::new(model, session);
        on_loaded(scorer.report());
        // A sparse (SPLADE) model runs the same way on single texts: its rows are texts, its logits the pooled vector.
        let shapes = if model.task.is_sparse() { warmup_texts(tokenizer) } else { warmup_pairs(tokenizer) };
        let warmup =
            warm_up(&shapes, iterations, Row::len, |rows| scorer.score(rows).map(|_| ()).map_err(|e| e.to_string()))?;
        let Some(probe) = shapes.into_iter().next() else {
            return Err(LoadFailure::new(LoadFailureKind::Setup, "the tokenizer produced no warm-up pairs"));
        };
        Ok((Runner { model: Model::Score { scorer, probe }, faults, served: 0 }, warmup))
    }

    /// A tensor model: load the graph, warm up on zeros of every input's shape (what a health probe sends too).
    fn load_graph(
        engines: &Engines,
        model: &ModelFiles,
        unit: &Unit,
        faults: WorkerFaults,
        iterations: usize,
        on_loaded: impl FnOnce(&SessionReport),
    ) -> Result<(Runner, Vec<WarmupShape>), LoadFailure> {
        let mut session = engines.load_graph(model, unit).map_err(engine_failure)?;
        on_loaded(session.report());
        let warm: Vec<NamedTensor> = session.inputs().iter().filter_map(TensorSpec::zeros).collect();
        let ms = median_ms(iterations, || session.run(&warm).map(|_| ()).map_err(|e| e.to_string()))
            .map_err(|e| LoadFailure::new(LoadFailureKind::Inference, format!("warm-up on zero inputs failed: {e}")))?;
        let (batch, seq) = warm.first().map_or((1, 1), NamedTensor::rows_and_width);
        let runner = Runner { model: Model::Graph { session, warm }, faults, served: 0 };
        Ok((runner, vec![WarmupShape { batch, seq, ms }]))
    }

    pub fn report(&self) -> &SessionReport {
        match &self.model {
            Model::Embed { embedder, .. } => embedder.report(),
            Model::Score { scorer, .. } => scorer.report(),
            Model::Towers { towers, .. } => towers.report(),
            Model::Graph { session, .. } => session.report(),
            Model::Segment(sam2) => sam2.report(),
            Model::Speech(speech) => speech.report(),
        }
    }

    /// A tensor model's inputs and outputs (empty for an embedding model).
    pub fn signature(&self) -> Signature {
        match &self.model {
            Model::Embed { .. } | Model::Score { .. } | Model::Segment(_) | Model::Towers { .. } | Model::Speech(_) => {
                Signature::default()
            }
            Model::Graph { session, .. } => {
                Signature { inputs: session.inputs().to_vec(), outputs: session.outputs().to_vec() }
            }
        }
    }

    /// The `Ready` message for this runner.
    pub fn ready(&self, warmup: Vec<WarmupShape>, rss_bytes: u64) -> Response {
        Response::Ready { report: self.report().clone(), warmup, rss_bytes, signature: self.signature() }
    }

    /// Runs one prediction (applying per-prediction faults first: `texts` are what rules with `match` read) and
    /// returns the protocol message.
    pub fn run(&mut self, id: u64, payload: &Payload, texts: &[String]) -> Response {
        self.faults.before_predict(self.served, texts);
        self.served += 1;
        match self.answer(payload) {
            Ok((answer, timing)) => {
                Response::Answered { id, answer, timing, rss_bytes: super::rss_bytes(None).unwrap_or(0) }
            }
            Err(error) => Response::Failed { id, error },
        }
    }

    fn answer(&mut self, payload: &Payload) -> Result<(Answer, StageTiming), RunError> {
        let engine = |e: bulkhead_core::EngineError| RunError::Engine(e.to_string());
        let kind = payload.kind();
        if let Payload::Rows(rows) = payload {
            if let Some(other) = rows.iter().find(|r| PayloadKind::Rows(r.kind()) != kind) {
                return Err(RunError::Unsupported(format!("{} mixed with {}", kind, other.kind())));
            }
        }
        match (&mut self.model, payload) {
            (Model::Embed { embedder, .. }, Payload::Rows(rows)) if kind == PayloadKind::Rows(RowKind::Tokens) => {
                embedder.embed_rows(rows).map(|(v, t)| (Answer::Vectors(v), t)).map_err(engine)
            }
            (Model::Embed { embedder, probe }, Payload::Probe) => {
                embedder.embed_tokens(probe).map(|(v, t)| (Answer::Vectors(v), t)).map_err(engine)
            }
            (Model::Score { scorer, .. }, Payload::Rows(rows)) if kind == PayloadKind::Rows(RowKind::Pair) => {
                scorer.score(rows).map(|(v, t)| (Answer::Scores(v), t)).map_err(engine)
            }
            (Model::Score { scorer, probe }, Payload::Probe) => {
                scorer.score(probe).map(|(v, t)| (Answer::Scores(v), t)).map_err(engine)
            }
            (Model::Towers { towers, .. }, Payload::Rows(rows))
                if matches!(kind, PayloadKind::Rows(RowKind::Tokens | RowKind::Pixels)) =>
            {
                towers.embed_rows(rows).map(|(v, t)| (Answer::Vectors(v), t)).map_err(engine)
            }
            (Model::Towers { towers, probe }, Payload::Probe) => {
                towers.embed_texts(&probe.0).map_err(engine)?;
                towers.embed_images(&probe.1).map(|(v, t)| (Answer::Vectors(v), t)).map_err(engine)
            }
            (Model::Graph { session, warm }, Payload::Tensors(_) | Payload::Probe) => {
                let inputs = match payload {
                    Payload::Tensors(t) => &t[..],
                    _ => &warm[..],
                };
                let t = Instant::now();
                let outputs = session.run(inputs).map_err(engine)?;
                let timing = StageTiming { infer_ms: t.elapsed().as_secs_f64() * 1e3, ..StageTiming::default() };
                Ok((Answer::Tensors(outputs), timing))
            }
            (Model::Segment(sam2), Payload::Segment(job)) => super::segment::run(sam2, job),
            (Model::Segment(sam2), Payload::Probe) => super::segment::probe(sam2),
            (Model::Segment(_), _) => Err(RunError::Unsupported(format!(
                "this is a segmentation model (SAM2): it takes an image and a prompt (POST /v1/segment), not {kind}"
            ))),
            (Model::Speech(speech), Payload::Audio(audio)) => {
                speech.answer(audio).map(|(t, timing)| (Answer::Transcription(t), timing))
            }
            (Model::Speech(speech), Payload::Probe) => {
                speech.probe_answer().map(|(t, timing)| (Answer::Transcription(t), timing))
            }
            (Model::Speech(_), _) => Err(RunError::Unsupported(format!(
                "this is a speech-to-text model: it takes audio, not {kind}; call POST /v1/audio/transcriptions"
            ))),
            (Model::Embed { .. }, _) => {
                Err(RunError::Unsupported(format!("this is an embedding model: it takes token rows, not {}", kind)))
            }
            (Model::Score { .. }, _) => Err(RunError::Unsupported(format!(
                "this is a cross-encoder (a reranker or a classifier): it takes token pairs, not {}",
                kind
            ))),
            (Model::Towers { .. }, _) => Err(RunError::Unsupported(format!(
                "this is an image-text model: it takes token rows and images, not {}",
                kind
            ))),
            (Model::Graph { .. }, _) => Err(RunError::Unsupported(format!(
                "this model is an ONNX graph without a tokenizer: it takes named tensors, not {}",
                kind
            ))),
        }
    }
}
