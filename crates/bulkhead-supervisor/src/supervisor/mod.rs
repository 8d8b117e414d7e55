//! The per-model supervisor: walks the chain, keeps warm workers serving, and turns every crash, hang and leak into
//! a retry, a restart, a quarantine or a recycle — never into a lost request.
//!
//! * [`policy`]: the policy as a state machine without I/O (events in, effects out), tested with tables;
//! * `actor`: the one task per model that runs the loop around the core and executes its effects;
//! * [`config`]: the settings; [`view`]: what `/units` shows.
//!
//! Callers talk to the actor through a channel ([`Supervisor`]); the `/units` view and the health flags are
//! published after every event, so reading them never waits on the actor.

mod actor;
pub mod config;
pub mod policy;
pub mod view;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead_core::{Chain, ModelFiles, NamedTensor, TensorSpec, Unit};
use bulkhead_embed::Engines;
use tokio::sync::{mpsc, oneshot};

use crate::history::{model_digest, History};
use actor::{Actor, Cmd, Published};
pub use config::{Isolation, SupervisorConfig};
pub use policy::{Answered, Job, PredictError, StartError};
use policy::{Core, Health, UnitInit};
pub use view::{CeilingView, ModelUnits, UnitState, UnitView, WorkerState, WorkerView};

/// Supervises the workers of one model. Cheap to share (`Arc`); every method takes `&self`.
pub struct Supervisor {
    model: String,
    wants_texts: bool,
    tx: mpsc::UnboundedSender<Cmd>,
    published: Arc<Published>,
}

impl Supervisor {
    /// Starts supervising `model` on `chain` (must be called inside a tokio runtime). Returns at once; use
    /// [`Supervisor::wait_ready`] to wait for the first unit to serve.
    pub fn start(model: ModelFiles, chain: &Chain, engines: Arc<Engines>, config: SupervisorConfig) -> Supervisor {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let units: Vec<UnitInit> =
            chain.units().iter().map(|&unit| UnitInit { unit, runtime: engines.runtime(&unit) }).collect();
        let weights = model.onnx.clone().or_else(|| model.safetensors.clone()).unwrap_or_else(|| model.source.clone());
        let digest = model_digest(&weights);
        let (history_file, crashes) = match &config.state_dir {
            Some(dir) => History::load(dir),
            None => History::in_memory(),
        }
        .into_parts();
        if !config.faults.is_empty() {
            crate::faults::log_active(&config.faults, &format!("the supervisor of {}", model.name));
        }
        let wants_texts = config.faults.iter().any(|r| r.matches.is_some());
        let now = actor::now();
        let core = Core::new(&model.name, &digest, units, crashes, config.clone(), now);
        let published = Arc::new(Published {
            view: Mutex::new(core.view(now, config.isolation)),
            health: Mutex::new(Health::default()),
            signature: Mutex::new(Default::default()),
        });
        let name = model.name.clone();
        let actor = Actor::new(core, model, engines, config, published.clone(), history_file, ev_tx);
        tokio::spawn(actor.run(rx, ev_rx));
        Supervisor { model: name, wants_texts, tx, published }
    }

    /// Waits until a unit serves (after load and warm-up); the error lists every unit's reason.
    pub async fn wait_ready(&self) -> Result<Unit, StartError> {
        let (tx, rx) = oneshot::channel();
        let gone = || StartError { model: self.model.clone(), reasons: "the supervisor stopped".into() };
        self.tx.send(Cmd::WaitReady(tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Runs jobs (one batch of requests); one result per job, in order. Jobs of one batchable kind share a
    /// prediction; a job is retried on a fresh worker or the next unit when its worker dies; only a poison job, an
    /// unservable chain or an input the model cannot take gives an error.
    pub async fn predict(&self, jobs: Vec<Job>) -> Vec<Result<Answered, PredictError>> {
        let mut receivers = Vec::with_capacity(jobs.len());
        let with_replies: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let (tx, rx) = oneshot::channel();
                receivers.push(rx);
                (job, tx)
            })
            .collect();
        if self.tx.send(Cmd::Predict(with_replies, Instant::now())).is_err() {
            return receivers.iter().map(|_| Err(PredictError::ShuttingDown)).collect();
        }
        let mut out = Vec::with_capacity(receivers.len());
        for rx in receivers {
            out.push(rx.await.unwrap_or(Err(PredictError::ShuttingDown)));
        }
        out
    }

    /// Runs one job.
    pub async fn run(&self, job: Job) -> Result<Answered, PredictError> {
        self.predict(vec![job]).await.pop().unwrap_or(Err(PredictError::ShuttingDown))
    }

    /// Whether jobs should carry their texts: only while a fault rule matches on text (`BULKHEAD_FAULTS` with
    /// `match`), the one reader of texts on the worker's side. Otherwise callers leave [`Job::texts`] empty.
    pub fn wants_texts(&self) -> bool {
        self.wants_texts
    }

    /// Embeds one request's token rows.
    pub async fn embed(&self, rows: Vec<Vec<i64>>, texts: Vec<String>) -> Result<Answered, PredictError> {
        self.run(Job::tokens(rows, texts)).await
    }

    /// Runs a tensor model (an ONNX graph without a tokenizer) on named `inputs`: the same retry, fallback, poison
    /// and watchdog rules as embeddings; never batched with other requests.
    pub async fn infer(&self, inputs: Vec<NamedTensor>) -> Result<Answered, PredictError> {
        self.run(Job::tensors(inputs)).await
    }

    /// Transcribes (or translates) one decoded audio on a speech model: the same retry, fallback, poison and
    /// watchdog rules as every payload; never batched with other requests.
    pub async fn transcribe(&self, audio: crate::audio::AudioRequest) -> Result<Answered, PredictError> {
        self.run(Job::audio(audio)).await
    }

    /// A tensor model's graph inputs and outputs, known once a worker has loaded it (empty for embedding models).
    pub fn signature(&self) -> (Vec<TensorSpec>, Vec<TensorSpec>) {
        let s = self.published.signature.lock().unwrap_or_else(|e| e.into_inner());
        (s.inputs.clone(), s.outputs.clone())
    }

    /// The `/units` view (a snapshot; never blocks on the actor).
    pub fn units(&self) -> ModelUnits {
        self.published.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// True once a unit serves (after warm-up).
    pub fn is_ready(&self) -> bool {
        self.published.health.lock().unwrap_or_else(|e| e.into_inner()).ready
    }

    /// True when a unit serves and answered a real forward pass within `window`.
    pub fn is_healthy(&self, window: Duration) -> bool {
        let h = *self.published.health.lock().unwrap_or_else(|e| e.into_inner());
        h.ready && h.last_ok.is_some_and(|t| t.elapsed() <= window)
    }

    /// Finishes queued and in-flight work, then stops every worker.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}
