//! The HTTP server of bulkhead.
//!
//! Routes (see the README's table): OpenAI `/v1/embeddings` and `/v1/models` (with `/v1/models/{name}/load` and
//! `/unload`), TEI `/embed`, `/embed_sparse`, `/tokenize`, `/decode`, `/info`, `/similarity`, Ollama `/api/embed`,
//! `/api/embeddings`, `/api/tags`, `/api/show`, `/api/ps`, `/api/version`, KServe v2 health / metadata / ready /
//! infer, `/health`, `/units`, `/metrics`, `/openapi.json`.
//!
//! * [`api`]: the request and response types of every route (the wire format), from which the OpenAPI document is
//!   derived;
//! * `router`: the router, assembled in one place: every route, authentication, the per-request deadline, request
//!   metrics, and the OpenAPI document rendered from the same handlers;
//! * `routes`: the handlers, and what they share (`routes/common.rs`: the typed JSON extractor, the one path into a
//!   model, through its [`batcher`] to its [`Backend`], and the headers of every inference response);
//! * [`error`]: every error and its HTTP status, in one table;
//! * [`http`]: the listener: header and keep-alive timeouts, the connection limit, graceful shutdown;
//! * [`batcher`]: forms batches while the workers are busy, cut into forward passes of similar length by
//!   [`grouping`]; [`metrics`]: every metric name in one enum;
//! * [`trace`]: OpenTelemetry spans per request (the server span and one per stage), W3C `traceparent` honoured,
//!   exported over OTLP/HTTP by one thread behind a bounded queue (`--otlp-endpoint`).
//! * [`segmenter`]: a segmentation model's preprocessor and its prepared images by `image_id`.
//! * [`registry`]: the served models and their lifecycles: loaded at start (pinned) or on demand, unloaded when idle
//!   or to make room under `--max-loaded-models` / `--memory-budget-mb`.
//!
//! Requests are tokenized in the handler, queued per model in the batcher, and computed by a [`Backend`] (the
//! supervisor of worker processes in production).
//!
//! # Architecture invariants
//!
//! * **Handlers never touch the supervisor.** Only `backend.rs` names the supervisor crate: it re-exports the job
//!   and answer types the batcher sends and receives, and converts the supervisor's view into the `/units` wire type
//!   the server owns ([`api::units`]), which `/metrics` reads field by field. *Checked by `tests/invariants.rs`.*
//! * **One path into a model.** Every route that takes rows (embeddings, reranking, classification, KServe on
//!   those models) reaches its model through `routes/common.rs` (`submit_rows`, through the model's [`batcher`]);
//!   the unbatched requests (KServe tensors, segmentation jobs, audio) through `submit_tensors`, `submit_segment`
//!   and `submit_audio`, which share one `submit_one`. Errors are mapped and stage metrics recorded there, once; no
//!   other handler file names the batcher or the backend. *Checked by `tests/invariants.rs`.*
//! * **No import cycle between modules**: the router is assembled in one place (`router.rs`) and renders the
//!   OpenAPI document there; handlers share helpers through `routes/common.rs`. *Checked by `tests/invariants.rs`.*
//! * A request body is parsed once, straight into its `api` type (malformed JSON 400, wrong shape 422, by the
//!   parser), and never on an async runtime thread when it is large (one low-priority thread, `bulk.rs`); every
//!   error response is an [`error::ApiError`] whose status comes from one table.
//! * Short requests never wait behind long ones in the [`batcher`] (a slot of their own; long ones held aside take
//!   the next free slot), and the supervisor keeps a worker free of long work while they arrive.
//! * Every inference response carries `x-bulkhead-unit`, `x-bulkhead-precision` (when the unit reported it) and
//!   `Server-Timing`, taken from the answer itself; no response reads the `/units` view.
//! * Every connection is bounded in time and in number; every request by the deadline; no input panics a handler.
//! * A handler gets its model from the [`registry`] and holds the `Arc` for the request's life; nothing else keeps
//!   a model entry, so its reference count is the model's in-flight count (a draining model stops at one).
#![deny(missing_docs)]

pub mod api;
pub mod backend;
pub mod batcher;
mod bulk;
pub mod config;
pub mod error;
pub mod grouping;
pub mod http;
pub mod metrics;
mod model;
mod openapi;
pub mod registry;
mod router;
mod routes;
pub mod segmenter;
mod speech;
pub mod state;
pub mod trace;

pub use backend::{Backend, BackendError, BackendOutput};
pub use config::ServeConfig;
pub use http::{raise_open_files_limit, ConnectionLimits};
pub use registry::{Candidate, Limits, ModelLoader};
pub use router::app;
pub use state::{AppState, LoadedModel, ModelEntry, ModelKind, OnDemand, SpeechInfo, SpeechLanguages};
pub use trace::{TraceConfig, TraceParent};

/// Serves `state` on `listener` with its connection limits until `shutdown` completes, then finishes the requests
/// in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: std::sync::Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.config.connections;
    http::serve(listener, app(state.clone()), limits, state.metrics.clone(), shutdown).await
}
