//! Shared state of the server: the served models, their queues, the settings and the metrics.

use std::sync::Arc;
use std::time::Instant;

use bulkhead_core::ModelTask;

pub use crate::api::models::KeepAlive;
use crate::config::ServeConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;
pub use crate::model::{LoadedModel, ModelEntry, ModelKind};
use crate::registry::{Candidate, Limits, ModelLoader, Registry};
pub use crate::speech::{SpeechInfo, SpeechLanguages};
use crate::trace::Tracer;

/// Everything the handlers share.
pub struct AppState {
    /// Models by name: loaded at start, or on demand.
    pub models: Arc<Registry>,
    /// The model used when a request names none.
    pub default_model: String,
    /// Settings.
    pub config: ServeConfig,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// When the server started.
    pub started: Instant,
    /// Tokenizations running at once on the blocking pool: one per core, so a burst of long texts queues here
    /// instead of taking every blocking thread (see `routes::common::tokenize_off_runtime`).
    pub tokenize_permits: tokio::sync::Semaphore,
    /// The OpenTelemetry exporter (`--otlp-endpoint`), when traces are on.
    pub tracer: Option<Tracer>,
}

/// Models the server loads on demand: [`AppState::on_demand`] takes them.
pub struct OnDemand {
    /// The models it may load (a `--models-dir`'s folders).
    pub candidates: Vec<Candidate>,
    /// What loads them.
    pub loader: Arc<dyn ModelLoader>,
    /// How many, how much memory, how long idle.
    pub limits: Limits,
}

impl AppState {
    /// Builds the state from loaded models (the first is the default), kept loaded while the server runs.
    pub fn new(models: Vec<LoadedModel>, config: ServeConfig) -> Arc<AppState> {
        Self::build(models, None, config)
    }

    /// Builds the state from models loaded at start (pinned; the first is the default) and models loaded on demand
    /// (the first by name is the default when none is pinned). Needs a running Tokio runtime.
    pub fn on_demand(models: Vec<LoadedModel>, on_demand: OnDemand, config: ServeConfig) -> Arc<AppState> {
        Self::build(models, Some(on_demand), config)
    }

    fn build(models: Vec<LoadedModel>, on_demand: Option<OnDemand>, config: ServeConfig) -> Arc<AppState> {
        let metrics = Arc::new(Metrics::new());
        for m in &models {
            metrics.model_loaded(&m.name, std::time::Duration::ZERO);
        }
        let pinned = models.first().map(|m| m.name.clone());
        let (candidates, loader, limits) = match on_demand {
            Some(o) => (o.candidates, Some(o.loader), o.limits),
            None => (vec![], None, Limits::default()),
        };
        let registry = Registry::new(models, candidates, loader, limits, config.clone(), metrics.clone());
        let default_model = pinned.or_else(|| registry.names().into_iter().next()).unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let tokenize_permits = tokio::sync::Semaphore::new(cores);
        let tracer = config.traces.clone().map(|t| Tracer::start(t, metrics.clone()));
        Arc::new(AppState {
            models: registry,
            default_model,
            config,
            metrics,
            started: Instant::now(),
            tokenize_permits,
            tracer,
        })
    }

    /// The model called `name` (or the default one for `None`), loaded first if it is not.
    pub async fn model(&self, name: Option<&str>) -> Result<Arc<ModelEntry>, ApiError> {
        self.model_kept(name, None).await
    }

    /// [`AppState::model`] with the request's `keep_alive` (how long the model stays loaded once idle).
    pub async fn model_kept(
        &self,
        name: Option<&str>,
        keep_alive: Option<&KeepAlive>,
    ) -> Result<Arc<ModelEntry>, ApiError> {
        let keep = keep_alive.map(|k| k.keep().map_err(ApiError::Invalid)).transpose()?.flatten();
        self.models.get(name.unwrap_or(&self.default_model), keep).await
    }

    /// The model called `name`; for `None`, the default model when `wanted` accepts its task, else the first model
    /// it accepts, loaded or not (so a route for rerankers finds the reranker beside an embedding model), else the
    /// default model (which the route then refuses, naming the route to use).
    pub async fn model_for(
        &self,
        name: Option<&str>,
        wanted: impl Fn(&ModelTask) -> bool,
    ) -> Result<Arc<ModelEntry>, ApiError> {
        self.model_for_kept(name, None, wanted).await
    }

    /// [`AppState::model_for`] with the request's `keep_alive`.
    pub async fn model_for_kept(
        &self,
        name: Option<&str>,
        keep_alive: Option<&KeepAlive>,
        wanted: impl Fn(&ModelTask) -> bool,
    ) -> Result<Arc<ModelEntry>, ApiError> {
        if name.is_some() {
            return self.model_kept(name, keep_alive).await;
        }
        let default_fits = self.models.task_of(&self.default_model).is_some_and(|t| wanted(&t));
        let name = if default_fits { None } else { self.models.find_task(&wanted) };
        self.model_kept(name.as_deref(), keep_alive).await
    }
}
