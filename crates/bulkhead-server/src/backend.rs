//! The seam between the HTTP layer and whatever computes embeddings: in production the supervisor of worker
//! processes ([`bulkhead_supervisor::Supervisor`]), in either isolation mode.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bulkhead_core::NamedTensor;
pub use bulkhead_supervisor::{Answered as BackendOutput, PredictError as BackendError};
use bulkhead_supervisor::{Job, ModelUnits, Supervisor};

/// A boxed future (the trait is object-safe without extra crates).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the server needs from a model's compute side.
pub trait Backend: Send + Sync + 'static {
    /// Runs a batch of jobs (one per request, each a [`Payload`](bulkhead_supervisor::Payload); texts are passed
    /// along for diagnostics and fault rules); one result per job, so that a poison request fails alone.
    fn predict(&self, jobs: Vec<Job>) -> BoxFuture<'_, Vec<Result<BackendOutput, BackendError>>>;
    /// Runs a tensor model on named inputs (one request, never batched). Backends of embedding models only keep
    /// the default, which refuses.
    fn infer(&self, inputs: Vec<NamedTensor>) -> BoxFuture<'_, Result<BackendOutput, BackendError>> {
        let _ = inputs;
        Box::pin(async { Err(BackendError::Failed("this backend runs only embedding models".into())) })
    }
    /// The `/units` view of this model: chain and per-unit state.
    fn units(&self) -> ModelUnits;
    /// True when a unit answered a real forward pass within `window`.
    fn healthy(&self, window: Duration) -> bool;
    /// True once a unit is serving (after warm-up).
    fn ready(&self) -> bool;
    /// Stops the workers (after in-flight work).
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

impl Backend for Supervisor {
    fn predict(&self, jobs: Vec<Job>) -> BoxFuture<'_, Vec<Result<BackendOutput, BackendError>>> {
        Box::pin(Supervisor::predict(self, jobs))
    }

    fn infer(&self, inputs: Vec<NamedTensor>) -> BoxFuture<'_, Result<BackendOutput, BackendError>> {
        Box::pin(Supervisor::infer(self, inputs))
    }

    fn units(&self) -> ModelUnits {
        Supervisor::units(self)
    }

    fn healthy(&self, window: Duration) -> bool {
        self.is_healthy(window)
    }

    fn ready(&self) -> bool {
        self.is_ready()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(Supervisor::shutdown(self))
    }
}
