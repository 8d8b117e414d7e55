//! The HTTP server of bulkhead.
//!
//! Routes (see the README's table): OpenAI `/v1/embeddings` and `/v1/models`, TEI `/embed`, KServe v2 health /
//! metadata / ready / infer, `/health`, `/units`, `/metrics`, `/openapi.json`.
//!
//! * [`api`]: the request and response types of every route (the wire format), from which the OpenAPI document is
//!   derived;
//! * `routes`: the handlers, the typed JSON extractor, authentication, the per-request deadline, and the two
//!   adapters through which handlers reach a model ([`Backend`] via the [`batcher`]);
//! * [`error`]: every error and its HTTP status, in one table;
//! * [`http`]: the listener: header and keep-alive timeouts, the connection limit, graceful shutdown;
//! * [`batcher`]: forms batches while the workers are busy; [`metrics`]: every metric name in one enum.
//!
//! Requests are tokenized in the handler, queued per model in the batcher, and computed by a [`Backend`] (the
//! supervisor of worker processes in production). Every inference response carries `x-bulkhead-unit` and
//! `Server-Timing`.
#![deny(missing_docs)]

pub mod api;
pub mod backend;
pub mod batcher;
pub mod config;
pub mod error;
pub mod http;
pub mod metrics;
mod openapi;
mod routes;
pub mod state;

pub use backend::{Backend, BackendError, BackendOutput};
pub use config::ServeConfig;
pub use http::{raise_open_files_limit, ConnectionLimits};
pub use routes::app;
pub use state::{AppState, LoadedModel, ModelEntry, ModelKind};

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
