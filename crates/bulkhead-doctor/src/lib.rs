//! `bulkhead doctor` and `bulkhead bench` as a library: measure a model on every compute unit of a chain, each in
//! its own worker process, and turn the measurements into a typed report that renderers print.
//!
//! The flow is one way, as in a searcher and its printers: [`measure`] drives workers through the supervisor
//! crate's [`WorkerClient`](bulkhead_supervisor::WorkerClient) and fills a [`report::Report`]; [`analyze`] decides
//! each unit's verdict and the recommended chain from the numbers alone; [`render`] prints a finished report as
//! tables, one HTML page or JSON, and measures nothing. [`bench`] reuses the measurement of one batch size.
//!
//! Models that take audio or images are measured as they are served: a speech-to-text model transcribes a
//! synthetic clip ([`measure::speech`]), a segmentation model encodes a synthetic image and answers clicks on its
//! cached embedding ([`measure::segment`]); [`media`] draws their conclusions (real-time factor, agreement with the
//! first unit, memory growing per transcription or click) and the report carries them in their own sections. An
//! image-text model (CLIP, SigLIP) is measured on its text tower as a text model is, and on its vision tower with
//! synthetic images preprocessed as the server preprocesses them ([`measure::vision`], conclusions in [`vision`]).
//!
//! * [`report`]: the JSON schema `bulkhead.doctor/1` (docs/doctor.md), the boundary types; internal values (the
//!   protocol's load-failure kind, the worker client's steps) are converted at the edge, so the schema never moves
//!   with the protocol;
//! * [`checks`]: static checks of the model's files and of the machine;
//! * [`progress`]: progress on stderr.
//!
//! # Architecture invariants
//!
//! * **Measurement, report, renderers, one way.** [`measure`] fills a [`report::Report`]; [`analyze`] decides from
//!   the report's numbers alone; [`render`] reads a finished report and measures nothing, so `--from-json` prints
//!   exactly what a fresh run prints.
//! * **A unit's failure is a finding, never the doctor's end:** every worker runs in its own process through
//!   `WorkerClient`, every step has a deadline, and a crash, hang, load failure or failed prediction becomes a
//!   `Finding` with its `Branch`.
//! * **The schema is a boundary type.** [`report`] is `bulkhead.doctor/1` as docs/doctor.md documents it (the
//!   binary's doctor test checks both ways); the protocol's and the worker client's types (`LoadFailureKind`,
//!   `Step`) are converted at the edge into the report's own enums, so a protocol change never changes the JSON.
//!   Shared vocabulary is the core's: a weight precision is a [`bulkhead_core::Precision`], a quantized folder's
//!   accuracy comes from [`bulkhead_core::quantized::Manifest`], and agreement from [`bulkhead_core::stats`].
//! * **Classification reads types.** A load failure's branch comes from its `LoadFailureKind` alone: the engine
//!   adapter that knows its engine's errors decides `format_too_new`, `unsupported` or `model_rejected`; the
//!   compiled-model cache outcome comes from `SessionReport::graph_cache`.
//! * **Every branch code is defined in docs/doctor.md**, and every `Branch` variant maps to one code.

pub mod analyze;
pub mod bench;
pub mod checks;
pub mod measure;
pub mod media;
pub mod progress;
pub mod render;
pub mod report;
pub mod vision;

pub use measure::{accuracy_probes, diagnose, Batch, Limits, Options};
pub use report::{Branch, Finding, Report, Severity, Verdict};

/// Why a diagnosis or a bench could not produce a report (a unit that fails is a finding, never an error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The probe texts could not be tokenized.
    #[error("cannot tokenize the probe texts: {0}")]
    Tokenize(#[from] bulkhead_embed::EmbedError),
    /// The async runtime that drives the workers could not be created.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// Texts asked of a model that takes none (a speech-to-text model is measured on audio instead).
    #[error("{0} takes no text")]
    NotText(&'static str),
    /// The synthetic input of a model that takes images could not be made (a segmentation model's preprocessor
    /// gives no fixed input size; an image-text model's preprocessor does not make its vision tower's input).
    #[error("cannot make the synthetic input: {0}")]
    Inputs(String),
    /// A saved report that is not one.
    #[error("not a `{schema}` report: {0}", schema = report::SCHEMA)]
    NotAReport(String),
}
