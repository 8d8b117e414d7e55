//! The seam between the HTTP layer and whatever computes embeddings: in production the supervisor of worker
//! processes ([`bulkhead_supervisor::Supervisor`]), in either isolation mode.

use std::future::Future;
use std::pin::Pin;

use bulkhead_core::Unit;
use bulkhead_embed::StageTiming;

/// The result of one batch.
#[derive(Debug, Clone)]
pub struct BackendOutput {
    /// One vector per row.
    pub vectors: Vec<Vec<f32>>,
    /// The unit that computed them.
    pub unit: Unit,
    /// infer / post timing of the batch.
    pub timing: StageTiming,
}

/// Why a batch failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The batch crashed workers repeatedly: a poison request.
    #[error("{0}")]
    Poison(String),
    /// No unit can serve now.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

/// A boxed future (the trait is object-safe without extra crates).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the server needs from a model's compute side.
pub trait Backend: Send + Sync + 'static {
    /// Embeds token rows (texts are passed along for diagnostics and fault rules).
    fn predict(&self, rows: Vec<Vec<i64>>, texts: Vec<String>) -> BoxFuture<'_, Result<BackendOutput, BackendError>>;
    /// The `/units` view of this model: chain and per-unit state.
    fn units(&self) -> serde_json::Value;
    /// True when a unit answered a real forward pass recently or can answer now.
    fn healthy(&self) -> bool;
    /// True once a unit is serving (after warm-up).
    fn ready(&self) -> bool;
    /// Stops the workers (after in-flight work).
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}
