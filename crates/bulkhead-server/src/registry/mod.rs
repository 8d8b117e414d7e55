//! Models on demand: every model the server knows, by name, each available (its files known), loading, loaded,
//! draining or failed.
//!
//! - A request for a model that is not loaded starts its load and waits in its queue (bounded by
//!   `--queue-timeout-s`); concurrent requests for it wait for that same load.
//! - Before a load, while `--max-loaded-models` or `--memory-budget-mb` (the measured resident memory of the
//!   loaded models' workers; an estimate from the weights for a model never loaded yet) would be exceeded, the least
//!   recently used unpinned model is drained (its in-flight requests finish) and unloaded; when nothing can be
//!   freed the request gets a 503 with the reason.
//! - An unpinned model idle for its keep-alive (`--keep-alive`, or the last request's `keep_alive`) is unloaded.
//! - A model whose load failed answers with that failure until its files change.
//!
//! In-flight requests are counted by the model entry's reference count: a route holds its `Arc<ModelEntry>` for
//! the request's life, so a draining model is stopped only once the registry holds the last reference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bulkhead_core::{ModelFiles, ModelTask};
use tokio::sync::watch;

use crate::api::models::{Keep, ModelState};
use crate::backend::BoxFuture;
use crate::batcher::Batcher;
use crate::config::ServeConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::model::{LoadedModel, ModelEntry};

mod metrics;
mod room;

pub use metrics::render_metrics;
use room::{backend_resident, fingerprint, plan_room, resident, weights_bytes};

/// What a model that has never been loaded is assumed to take beyond its weights (the runtime, its arenas),
/// until it has been measured once.
const RUNTIME_ESTIMATE_BYTES: u64 = 64 << 20;

/// How often idle models are checked against their keep-alive and the loaded ones measured.
const TICK: Duration = Duration::from_millis(200);

/// Loads models for the registry: the binary's side (supervisors, warm-up, the first request).
pub trait ModelLoader: Send + Sync + 'static {
    /// Reads a model's files again (a model whose files changed since its load failed).
    fn open(&self, name: &str, source: &Path) -> Result<ModelFiles, String>;
    /// Starts a model's workers, waits for a warmed-up unit and proves the path with a first request; the error is
    /// one line saying what is wrong.
    fn load(&self, name: String, files: ModelFiles) -> BoxFuture<'static, Result<LoadedModel, String>>;
}

/// A model the server may load on demand.
pub struct Candidate {
    /// The name clients use.
    pub name: String,
    /// Its folder or file.
    pub source: PathBuf,
    /// Its files, or why they cannot be used (the model is listed as failed).
    pub files: Result<ModelFiles, String>,
}

/// The limits of models on demand.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Models loaded at once (`--max-loaded-models`).
    pub max_loaded: Option<usize>,
    /// Resident memory of all loaded models' workers (`--memory-budget-mb`).
    pub memory_budget_bytes: Option<u64>,
    /// How long an idle unpinned model stays loaded (`--keep-alive`).
    pub keep_alive: Keep,
    /// How long a request waits for its model to load (`--queue-timeout-s`).
    pub load_wait: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_loaded: None,
            memory_budget_bytes: None,
            keep_alive: Keep::For(Duration::from_secs(300)),
            load_wait: Duration::from_secs(30),
        }
    }
}

/// Counters and measurements of one model.
#[derive(Debug, Clone, Default)]
pub struct ModelStats {
    /// Loads that succeeded.
    pub loads: u64,
    /// Loads that failed.
    pub load_failures: u64,
    /// Unloads (for any reason).
    pub unloads: u64,
    /// Unloads to make room for another model.
    pub evictions: u64,
    /// How long the last load took.
    pub last_load: Option<Duration>,
    /// Resident memory of its workers, last measured while it was loaded.
    pub resident_bytes: Option<u64>,
    /// Unix seconds of its last load.
    pub loaded_at: Option<u64>,
}

/// One model as `/v1/models` shows it.
#[derive(Clone)]
pub struct ModelInfo {
    /// The name clients use.
    pub name: String,
    /// Its state.
    pub state: ModelState,
    /// Loaded at start and never unloaded for idleness or room.
    pub pinned: bool,
    /// Its files (absent when they could not be read).
    pub files: Option<ModelFiles>,
    /// The loaded model.
    pub entry: Option<Arc<ModelEntry>>,
    /// Why its load failed.
    pub error: Option<String>,
    /// Counters and measurements.
    pub stats: ModelStats,
    /// Unix seconds at which it is unloaded if no request comes (loaded, unpinned, with a finite keep-alive).
    pub expires_at: Option<f64>,
}

enum Phase {
    Available,
    Loading,
    Loaded(Arc<ModelEntry>),
    Draining(Arc<ModelEntry>),
    Failed(String),
}

struct Slot {
    source: PathBuf,
    files: Result<ModelFiles, String>,
    pinned: bool,
    phase: Phase,
    last_used: Instant,
    keep: Keep,
    fingerprint: u64,
    stats: ModelStats,
}

impl Slot {
    fn state(&self) -> ModelState {
        match self.phase {
            Phase::Available => ModelState::Available,
            Phase::Loading => ModelState::Loading,
            Phase::Loaded(_) => ModelState::Loaded,
            Phase::Draining(_) => ModelState::Draining,
            Phase::Failed(_) => ModelState::Failed,
        }
    }

    /// The task of the model, loaded or not (`None` for a tensor model).
    fn task(&self) -> Option<ModelTask> {
        match (&self.phase, &self.files) {
            (Phase::Loaded(e) | Phase::Draining(e), _) => e.task().cloned(),
            (_, Ok(f)) if !f.is_tensor_model() => Some(f.task.clone()),
            _ => None,
        }
    }

    /// What it takes, or is assumed to take, in resident memory.
    fn expected_bytes(&self) -> u64 {
        self.stats.resident_bytes.unwrap_or_else(|| match &self.files {
            Ok(f) => weights_bytes(f) + RUNTIME_ESTIMATE_BYTES,
            Err(_) => 0,
        })
    }
}

/// The served models and their lifecycles.
pub struct Registry {
    slots: Mutex<BTreeMap<String, Slot>>,
    changed: watch::Sender<u64>,
    loader: Option<Arc<dyn ModelLoader>>,
    limits: Limits,
    config: ServeConfig,
    metrics: Arc<Metrics>,
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / (1 << 20) as f64)
}

impl Registry {
    /// The registry of `loaded` models (pinned: loaded at start, the first is the default) and `candidates` loaded
    /// on demand by `loader`. With a loader, a task unloads idle models (a Tokio runtime must be running).
    pub fn new(
        loaded: Vec<LoadedModel>,
        candidates: Vec<Candidate>,
        loader: Option<Arc<dyn ModelLoader>>,
        limits: Limits,
        config: ServeConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Registry> {
        let (changed, _) = watch::channel(0);
        let registry =
            Arc::new(Registry { slots: Mutex::new(BTreeMap::new()), changed, loader, limits, config, metrics });
        {
            let mut slots = registry.lock();
            let now = Instant::now();
            for m in loaded {
                let entry = registry.entry(m);
                let stats = ModelStats { loads: 1, loaded_at: Some(entry.created), ..ModelStats::default() };
                let slot = Slot {
                    source: entry.files.source.clone(),
                    files: Ok(entry.files.clone()),
                    pinned: true,
                    phase: Phase::Loaded(Arc::new(entry)),
                    last_used: now,
                    keep: Keep::Forever,
                    fingerprint: 0,
                    stats,
                };
                let name = match &slot.phase {
                    Phase::Loaded(e) => e.name.clone(),
                    _ => unreachable!("just built as loaded"),
                };
                slots.insert(name, slot);
            }
            for c in candidates {
                if slots.contains_key(&c.name) {
                    continue;
                }
                let phase = match &c.files {
                    Ok(_) => Phase::Available,
                    Err(e) => Phase::Failed(e.clone()),
                };
                let fingerprint = fingerprint(&c.source);
                let slot = Slot {
                    source: c.source,
                    files: c.files,
                    pinned: false,
                    phase,
                    last_used: now,
                    keep: registry.limits.keep_alive,
                    fingerprint,
                    stats: ModelStats::default(),
                };
                slots.insert(c.name, slot);
            }
        }
        if registry.loader.is_some() {
            tokio::spawn(reaper(Arc::downgrade(&registry)));
        }
        registry
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn entry(&self, m: LoadedModel) -> ModelEntry {
        let LoadedModel { name, files, kind, backend } = m;
        let batcher = Batcher::spawn(name.clone(), backend.clone(), &self.config, self.metrics.clone());
        ModelEntry { name, files, kind, backend, batcher, created: unix_now() as u64 }
    }

    /// Every model's name.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// True when no model is known.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The loaded models (draining ones included, until they stop).
    pub fn loaded(&self) -> Vec<Arc<ModelEntry>> {
        self.lock()
            .values()
            .filter_map(|s| match &s.phase {
                Phase::Loaded(e) | Phase::Draining(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    /// The task of model `name`, loaded or not (`None` for a tensor model or an unknown name).
    pub fn task_of(&self, name: &str) -> Option<ModelTask> {
        self.lock().get(name).and_then(Slot::task)
    }

    /// Whether model `name` is loaded now.
    pub fn is_loaded(&self, name: &str) -> bool {
        self.lock().get(name).is_some_and(|s| matches!(s.phase, Phase::Loaded(_)))
    }

    /// The name of a model whose task `wanted` accepts: a loaded one first, else an available one.
    pub fn find_task(&self, wanted: impl Fn(&ModelTask) -> bool) -> Option<String> {
        let slots = self.lock();
        let fits = |s: &&Slot| s.task().is_some_and(|t| wanted(&t));
        let loaded = slots.iter().find(|(_, s)| matches!(s.phase, Phase::Loaded(_)) && fits(s));
        loaded.or_else(|| slots.iter().find(|(_, s)| fits(s))).map(|(n, _)| n.clone())
    }

    /// Every model, with its state, counters and measurements.
    pub fn list(&self) -> Vec<ModelInfo> {
        let slots = self.lock();
        let now = Instant::now();
        let wall = unix_now();
        slots
            .iter()
            .map(|(name, s)| {
                let entry = match &s.phase {
                    Phase::Loaded(e) | Phase::Draining(e) => Some(e.clone()),
                    _ => None,
                };
                let expires_at = match (&s.phase, s.keep) {
                    (Phase::Loaded(_), Keep::For(d)) if !s.pinned => {
                        let left = (s.last_used + d).saturating_duration_since(now);
                        Some(wall + left.as_secs_f64())
                    }
                    _ => None,
                };
                let error = match (&s.phase, &s.files) {
                    (Phase::Failed(e), _) => Some(e.clone()),
                    _ => None,
                };
                let mut stats = s.stats.clone();
                if let Some(e) = &entry {
                    stats.resident_bytes = Some(resident(e));
                }
                ModelInfo {
                    name: name.clone(),
                    state: s.state(),
                    pinned: s.pinned,
                    files: s.files.as_ref().ok().cloned(),
                    entry,
                    error,
                    stats,
                    expires_at,
                }
            })
            .collect()
    }

    /// The model called `name`, loading it first when it is not loaded. `keep` is the request's keep-alive (the
    /// default `--keep-alive` when `None`).
    pub async fn get(self: &Arc<Self>, name: &str, keep: Option<Keep>) -> Result<Arc<ModelEntry>, ApiError> {
        let deadline = tokio::time::Instant::now() + self.limits.load_wait;
        loop {
            let mut changed = self.changed.subscribe();
            let reopen = {
                let mut slots = self.lock();
                let Some(slot) = slots.get_mut(name) else {
                    let served = slots.keys().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
                    return Err(ApiError::UnknownModel(name.to_string(), served));
                };
                slot.last_used = Instant::now();
                if !slot.pinned {
                    slot.keep = keep.unwrap_or(self.limits.keep_alive);
                }
                match &slot.phase {
                    Phase::Loaded(e) => return Ok(e.clone()),
                    Phase::Failed(reason) => {
                        if self.loader.is_none() || fingerprint(&slot.source) == slot.fingerprint {
                            return Err(ApiError::Unavailable(format!(
                                "model `{name}` failed to load: {reason} (it is tried again when its files change)"
                            )));
                        }
                        Some(slot.source.clone())
                    }
                    Phase::Available => {
                        self.start_load(&mut slots, name)?;
                        None
                    }
                    Phase::Loading | Phase::Draining(_) => None,
                }
            };
            if let Some(source) = reopen {
                self.reopen(name, &source).await;
                continue;
            }
            if tokio::time::timeout_at(deadline, changed.changed()).await.is_err() {
                return Err(ApiError::Unavailable(format!(
                    "model `{name}` is not loaded yet after {:.0} s (--queue-timeout-s); retry shortly",
                    self.limits.load_wait.as_secs_f64()
                )));
            }
        }
    }

    /// Reads the files of a failed model again (they changed): it becomes available, or fails with the new reason.
    async fn reopen(&self, name: &str, source: &Path) {
        let Some(loader) = self.loader.clone() else { return };
        let (n, src) = (name.to_string(), source.to_path_buf());
        let files = tokio::task::spawn_blocking(move || loader.open(&n, &src))
            .await
            .unwrap_or_else(|e| Err(format!("reading its files stopped: {e}")));
        let mut slots = self.lock();
        if let Some(slot) = slots.get_mut(name) {
            if matches!(slot.phase, Phase::Failed(_)) {
                slot.fingerprint = fingerprint(source);
                slot.phase = match &files {
                    Ok(_) => Phase::Available,
                    Err(e) => Phase::Failed(e.clone()),
                };
                slot.files = files;
                slot.stats.resident_bytes = None;
            }
        }
        drop(slots);
        self.bump();
    }

    /// Loads `name` now (`POST /v1/models/{name}/load`).
    pub async fn load(self: &Arc<Self>, name: &str) -> Result<Duration, ApiError> {
        let t0 = Instant::now();
        self.get(name, None).await?;
        Ok(t0.elapsed())
    }

    /// Drains and unloads `name` (`POST /v1/models/{name}/unload`); a model not loaded stays as it is.
    pub async fn unload(self: &Arc<Self>, name: &str) -> Result<Duration, ApiError> {
        let t0 = Instant::now();
        let deadline = tokio::time::Instant::now() + self.limits.load_wait;
        loop {
            let mut changed = self.changed.subscribe();
            // Some(true): drain it now; Some(false): nothing to unload; None: wait for its load or drain.
            let drain = {
                let mut slots = self.lock();
                let Some(slot) = slots.get_mut(name) else {
                    let served = slots.keys().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
                    return Err(ApiError::UnknownModel(name.to_string(), served));
                };
                match std::mem::replace(&mut slot.phase, Phase::Available) {
                    Phase::Loaded(e) => {
                        slot.phase = Phase::Draining(e);
                        Some(true)
                    }
                    p @ (Phase::Available | Phase::Failed(_)) => {
                        slot.phase = p;
                        Some(false)
                    }
                    p => {
                        slot.phase = p;
                        None
                    }
                }
            };
            match drain {
                Some(true) => {
                    self.bump();
                    self.finish_unload(name, "asked").await;
                    return Ok(t0.elapsed());
                }
                Some(false) => return Ok(t0.elapsed()),
                None => {}
            }
            if tokio::time::timeout_at(deadline, changed.changed()).await.is_err() {
                return Err(ApiError::Unavailable(format!(
                    "model `{name}` is still loading or draining; retry shortly"
                )));
            }
        }
    }

    /// Starts loading `name` (available) after choosing what to unload to make room for it.
    fn start_load(self: &Arc<Self>, slots: &mut BTreeMap<String, Slot>, name: &str) -> Result<(), ApiError> {
        let Some(loader) = self.loader.clone() else {
            return Err(ApiError::Unavailable(format!(
                "model `{name}` is not loaded and this server loads no models on demand"
            )));
        };
        let victims = plan_room(slots, name, &self.limits).map_err(ApiError::Unavailable)?;
        for v in &victims {
            let slot = slots.get_mut(v).expect("a victim is a known model");
            if let Phase::Loaded(e) = std::mem::replace(&mut slot.phase, Phase::Available) {
                slot.phase = Phase::Draining(e);
                slot.stats.evictions += 1;
                self.metrics.model_evicted(v);
                tracing::info!("unloading model {v} to make room for {name}");
            }
        }
        let slot = slots.get_mut(name).expect("the model is known");
        let Ok(files) = slot.files.clone() else {
            return Err(ApiError::Unavailable(format!("model `{name}` has no usable files")));
        };
        slot.phase = Phase::Loading;
        self.bump();
        let (me, name) = (self.clone(), name.to_string());
        tokio::spawn(async move {
            for v in &victims {
                me.finish_unload(v, "evicted").await;
            }
            tracing::info!("loading model {name}");
            let t0 = Instant::now();
            let result = loader.load(name.clone(), files).await;
            if let Ok(m) = &result {
                // Under the budget before it serves: the idle models it does not fit beside are unloaded first.
                me.enforce_budget(backend_resident(m.backend.as_ref())).await;
            }
            me.finish_load(&name, result, t0.elapsed());
        });
        Ok(())
    }

    fn finish_load(&self, name: &str, result: Result<LoadedModel, String>, took: Duration) {
        let entry = result.map(|m| self.entry(m));
        let mut slots = self.lock();
        let Some(slot) = slots.get_mut(name) else { return };
        match entry {
            Ok(entry) => {
                slot.stats.loads += 1;
                slot.stats.last_load = Some(took);
                slot.stats.loaded_at = Some(entry.created);
                slot.stats.resident_bytes = Some(resident(&entry));
                slot.last_used = Instant::now();
                slot.phase = Phase::Loaded(Arc::new(entry));
                self.metrics.model_loaded(name, took);
                tracing::info!("model {name} loaded in {:.2} s", took.as_secs_f64());
            }
            Err(reason) => {
                slot.stats.load_failures += 1;
                slot.fingerprint = fingerprint(&slot.source);
                tracing::warn!("model {name} failed to load: {reason}");
                slot.phase = Phase::Failed(reason);
                self.metrics.model_load_failed(name);
            }
        }
        drop(slots);
        self.bump();
    }

    /// Waits for a draining model's in-flight requests, stops its workers, and marks it available.
    async fn finish_unload(&self, name: &str, why: &str) {
        let entry = match self.lock().get(name).map(|s| &s.phase) {
            Some(Phase::Draining(e)) => e.clone(),
            _ => return,
        };
        // The slot and this function hold the only references once the requests are done.
        while Arc::strong_count(&entry) > 2 || entry.batcher.depth() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let last = resident(&entry);
        entry.backend.shutdown().await;
        drop(entry);
        {
            let mut slots = self.lock();
            if let Some(slot) = slots.get_mut(name) {
                slot.phase = Phase::Available;
                slot.stats.unloads += 1;
                if last > 0 {
                    slot.stats.resident_bytes = Some(last);
                }
            }
        }
        self.metrics.model_unloaded(name, why);
        tracing::info!("model {name} unloaded ({why})");
        self.bump();
    }

    /// Unloads the unpinned models idle past their keep-alive; a model with requests in flight is in use now.
    async fn expire_idle(&self) {
        let expired: Vec<String> = {
            let mut slots = self.lock();
            let now = Instant::now();
            let mut expired = vec![];
            for (name, s) in slots.iter_mut() {
                let Phase::Loaded(e) = &s.phase else { continue };
                if Arc::strong_count(e) > 1 || e.batcher.depth() > 0 {
                    s.last_used = now;
                    continue;
                }
                if let Keep::For(d) = s.keep {
                    if !s.pinned && now.duration_since(s.last_used) >= d {
                        expired.push(name.clone());
                    }
                }
            }
            for name in &expired {
                let slot = slots.get_mut(name).expect("an expired model is known");
                if let Phase::Loaded(e) = std::mem::replace(&mut slot.phase, Phase::Available) {
                    slot.phase = Phase::Draining(e);
                }
            }
            expired
        };
        for name in expired {
            self.finish_unload(&name, "idle").await;
        }
    }

    /// Stops every loaded model (server shutdown).
    pub async fn shutdown(&self) {
        for e in self.loaded() {
            e.backend.shutdown().await;
        }
    }
}

/// Unloads idle models and measures the loaded ones, until the registry is dropped.
async fn reaper(registry: Weak<Registry>) {
    let mut ticks = 0u64;
    loop {
        tokio::time::sleep(TICK).await;
        let Some(r) = registry.upgrade() else { return };
        r.expire_idle().await;
        ticks += 1;
        if ticks.is_multiple_of(5) {
            r.enforce_budget(0).await;
        }
    }
}
