//! The HTTP server of bulkhead.
//!
//! Routes (see `../shared/interface.md`): OpenAI `/v1/embeddings` and `/v1/models`, TEI `/embed`, KServe v2
//! health / metadata / ready / infer, `/health`, `/units`, `/metrics`, `/openapi.json`.
//!
//! Requests are tokenized in the handler, queued per model in a [`batcher`] that forms batches while the workers are
//! busy, and computed by a [`Backend`] (the supervisor of worker processes in production). Every inference response
//! carries `x-bulkhead-unit` and `Server-Timing`. Errors map to status codes in one place ([`error`]).
#![deny(missing_docs)]

pub mod backend;
pub mod batcher;
pub mod config;
pub mod error;
pub mod metrics;
mod openapi;
mod routes;
pub mod state;

pub use backend::{Backend, BackendError, BackendOutput};
pub use config::ServeConfig;
pub use routes::app;
pub use state::{AppState, LoadedModel, ModelEntry, ModelKind};

/// Serves `state` on `listener` until `shutdown` completes, then finishes the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: std::sync::Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state)).with_graceful_shutdown(shutdown).await
}
