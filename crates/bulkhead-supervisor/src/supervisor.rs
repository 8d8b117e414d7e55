//! The per-model supervisor: walks the chain, keeps one warmed-up worker serving, and turns every crash, hang and
//! leak into a retry, a restart, a quarantine or a recycle — never into a lost request.
//!
//! One actor task owns all state (workers, queue, unit records); callers talk to it through a channel, and a
//! snapshot of the `/units` view is published after every event, so reading it never waits on the actor.
//!
//! Policy, in order of the issue:
//! * **Retry**: work in flight on a worker that dies is put back at the front of the queue. Only the prediction the
//!   worker was executing (the oldest in flight: a worker runs one at a time) gets a *strike*; a batch of several
//!   requests with a strike is split into its requests, so the next crash tells which one is to blame. A request
//!   with `poison_crashes` (2) strikes is answered with a poison error naming the crashes.
//! * **Restart** on the same unit with exponential backoff; a leaky bucket of crashes (3, one forgiven per 5
//!   minutes) puts the unit in **quarantine** (persisted), and the next unit of the chain takes over. A quarantined
//!   unit is re-probed after an exponentially growing delay; if it serves again it takes over from later units.
//! * **Watchdog**: a prediction running longer than its deadline (from the warm-up latency × a factor, with a
//!   floor) gets the worker SIGKILLed; that is a crash (a hang).
//! * **Recycling** after N predictions or on memory growth: the replacement is started and warmed up while the old
//!   worker keeps serving, then the old one drains; when two copies would not fit in memory, it drains first.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead_core::{
    Availability, Chain, ModelFiles, NamedTensor, NodePlacement, Precision, SessionReport, TensorSpec, Unit,
};
use bulkhead_embed::{Engines, StageTiming};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::faults::FaultRule;
use crate::history::{model_digest, unix_now, History};
use crate::process::{WorkerCommand, WorkerEvent, WorkerExit, WorkerLink};
use crate::protocol::{Request, Response, WarmupShape, CRATE_VERSION, PROTOCOL_VERSION};
use crate::worker::rss_bytes;

/// Where workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// One child process per worker (the default): crashes are contained.
    Process,
    /// A thread of this process: no crash isolation, no watchdog kill; for libraries and to measure the overhead.
    None,
}

impl FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "process" => Ok(Isolation::Process),
            "none" | "in-process" => Ok(Isolation::None),
            other => Err(format!("unknown isolation `{other}`; valid: process, none")),
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isolation::Process => "process",
            Isolation::None => "none",
        })
    }
}

/// Supervisor settings (defaults documented on each field).
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Worker processes or threads (default: processes).
    pub isolation: Isolation,
    /// The program that runs `worker` (default: this executable).
    pub worker_command: WorkerCommand,
    /// Fault rules passed to every worker (from `BULKHEAD_FAULTS`).
    pub faults: Vec<FaultRule>,
    /// Where the crash history is persisted (`None`: in memory only).
    pub state_dir: Option<PathBuf>,
    /// Predictions sent to one worker before earlier ones are answered (pipelining; default 2).
    pub max_inflight: usize,
    /// Crashes in the leaky bucket that quarantine a unit (default 3, as Chrome's GPU process).
    pub quarantine_crashes: u32,
    /// One crash is forgiven per this period (default 5 minutes).
    pub forgive_every: Duration,
    /// Workers a request may crash before it is answered as poison (default 2).
    pub poison_crashes: u32,
    /// First restart delay after a crash; doubles per consecutive crash (default 100 ms).
    pub restart_backoff: Duration,
    /// Longest restart delay (default 10 s).
    pub restart_backoff_max: Duration,
    /// First re-probe delay of a quarantined unit; doubles per quarantine (default 10 minutes).
    pub reprobe_after: Duration,
    /// Longest re-probe delay (default 6 hours).
    pub reprobe_max: Duration,
    /// A worker that is not ready after this long is killed (a load hang; default 300 s).
    pub load_timeout: Duration,
    /// Fixed prediction deadline; `None` derives it from warm-up (default).
    pub predict_timeout: Option<Duration>,
    /// Deadline = this factor × the warm-up latency scaled to the batch (default 20).
    pub timeout_factor: f64,
    /// Smallest derived deadline (default 5 s).
    pub timeout_floor: Duration,
    /// Recycle a worker after this many predictions.
    pub recycle_after: Option<u64>,
    /// Recycle a worker whose resident memory exceeds this many bytes.
    pub recycle_rss_bytes: Option<u64>,
    /// Recycle a worker whose resident memory grew by this many bytes since warm-up.
    pub recycle_growth_bytes: Option<u64>,
    /// An idle serving worker is probed with a real forward pass this often, so health means "answers now".
    pub health_probe_every: Duration,
    /// `healthy()` requires a real forward pass within this window (default 60 s).
    pub health_window: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            isolation: Isolation::Process,
            worker_command: WorkerCommand::default(),
            faults: vec![],
            state_dir: None,
            max_inflight: 2,
            quarantine_crashes: 3,
            forgive_every: Duration::from_secs(300),
            poison_crashes: 2,
            restart_backoff: Duration::from_millis(100),
            restart_backoff_max: Duration::from_secs(10),
            reprobe_after: Duration::from_secs(600),
            reprobe_max: Duration::from_secs(6 * 3600),
            load_timeout: Duration::from_secs(300),
            predict_timeout: None,
            timeout_factor: 20.0,
            timeout_floor: Duration::from_secs(5),
            recycle_after: None,
            recycle_rss_bytes: None,
            recycle_growth_bytes: None,
            health_probe_every: Duration::from_secs(20),
            health_window: Duration::from_secs(60),
        }
    }
}

/// One request: token rows (unpadded) and, for fault rules and diagnostics, the texts.
#[derive(Debug, Clone, Default)]
pub struct Job {
    /// Token ids per input.
    pub rows: Vec<Vec<i64>>,
    /// The original texts (may be empty).
    pub texts: Vec<String>,
    /// How many leading tokens of every row are a prompt (0: none); pooling leaves them out when the model's
    /// pooling excludes prompts.
    pub prompt_tokens: usize,
}

/// The answer to one [`Job`] (or to one [`Supervisor::infer`]).
#[derive(Debug, Clone)]
pub struct JobAnswer {
    /// One vector per row (embedding models).
    pub vectors: Vec<Vec<f32>>,
    /// Every graph output (tensor models).
    pub outputs: Vec<NamedTensor>,
    /// The unit that computed them.
    pub unit: Unit,
    /// `queue_ms`: time in the supervisor and the pipes; `infer_ms`/`post_ms`: the worker's.
    pub timing: StageTiming,
    /// Workers this request was retried after (0 normally).
    pub retries: u32,
}

/// Why a job was not answered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PredictError {
    /// The request crashed `poison_crashes` workers.
    #[error("{0}")]
    Poison(String),
    /// No unit of the chain can serve.
    #[error("{0}")]
    Unavailable(String),
    /// The engine returned an error for this input.
    #[error("{0}")]
    Failed(String),
    /// The supervisor is shutting down.
    #[error("the model is shutting down")]
    ShuttingDown,
}

/// The state of a unit, as `/units` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitState {
    /// Not running; may be started (a fallback, or not reached yet).
    Standby,
    /// A worker is loading the model.
    Loading,
    /// Loaded; the warm-up runs.
    Warming,
    /// Answers requests.
    Serving,
    /// Its worker crashed; a restart is scheduled.
    Crashed,
    /// Crashed too often; skipped until the re-probe.
    Quarantined,
    /// Cannot run here (engine missing, no device, model rejected).
    Unavailable,
}

/// One unit in the `/units` view.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitView {
    /// The unit.
    pub unit: String,
    /// Its state.
    pub state: UnitState,
    /// Why it is unavailable / quarantined / crashed.
    pub reason: Option<String>,
    /// Runtime and version.
    pub runtime: String,
    /// Worker crashes of this unit for this model (persisted history included).
    pub crashes: u64,
    /// Crashes by exit (`SIGSEGV`, `SIGABRT`, `SIGKILL`, `exit 70`...) since this process started.
    pub crashes_by_exit: BTreeMap<String, u64>,
    /// The leaky-bucket level (quarantine at `quarantine_crashes`).
    pub crash_level: f64,
    /// The last worker exit: `signal SIGSEGV`, `exit code 70`...
    pub last_exit: Option<String>,
    /// The tail of that worker's stderr.
    pub stderr_tail: Option<String>,
    /// Predictions answered by this unit.
    pub predictions: u64,
    /// Resident memory of its current worker.
    pub resident_bytes: u64,
    /// Resident memory of its current worker right after warm-up.
    pub resident_after_warmup_bytes: u64,
    /// Workers recycled (predictions or memory).
    pub recycles: u64,
    /// Workers restarted after a crash.
    pub restarts: u64,
    /// Worker lifetimes started (the next generation number).
    pub generations: u32,
    /// Current worker pid.
    pub pid: Option<u32>,
    /// Quarantined until (Unix seconds).
    pub quarantined_until: Option<f64>,
    /// Load and warm-up time of the current worker.
    pub load_ms: Option<f64>,
    /// Warm-up time of the current worker.
    pub warmup_ms: Option<f64>,
    /// Warm-up latency per shape.
    pub warmup: Vec<WarmupShape>,
    /// Precision of the weights as loaded.
    pub precision: Option<Precision>,
    /// Node placement per execution provider.
    pub placement: Vec<NodePlacement>,
    /// The current prediction deadline (watchdog), ms, for a single short row.
    pub deadline_ms: Option<f64>,
}

/// The `/units` view of one model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelUnits {
    /// The model name.
    pub model: String,
    /// The chain, in order.
    pub chain: Vec<String>,
    /// The unit serving now.
    pub serving: Option<String>,
    /// Process or none.
    pub isolation: Isolation,
    /// Requests waiting in the supervisor.
    pub queued: usize,
    /// Per unit.
    pub units: Vec<UnitView>,
    /// A tensor model's graph inputs, once a worker has loaded it (empty for embedding models).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<TensorSpec>,
    /// A tensor model's graph outputs, once a worker has loaded it (empty for embedding models).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<TensorSpec>,
}

/// Why the supervisor could not start serving.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no unit of the chain can serve {model}: {reasons}")]
pub struct StartError {
    /// The model.
    pub model: String,
    /// `unit: reason; unit: reason`.
    pub reasons: String,
}

enum Cmd {
    Predict(Vec<PendingJob>),
    WaitReady(oneshot::Sender<Result<Unit, StartError>>),
    Shutdown(oneshot::Sender<()>),
}

struct PendingJob {
    rows: Vec<Vec<i64>>,
    texts: Vec<String>,
    prompt_tokens: usize,
    /// A tensor model's inputs (`Some(vec![])`: its warm-up inputs, for health probes); never batched with others.
    tensors: Option<Vec<NamedTensor>>,
    strikes: Vec<String>,
    retries: u32,
    enqueued: Instant,
    reply: Option<oneshot::Sender<Result<JobAnswer, PredictError>>>,
}

impl PendingJob {
    fn answer(&mut self, r: Result<JobAnswer, PredictError>) {
        if let Some(tx) = self.reply.take() {
            let _ = tx.send(r);
        }
    }
}

/// A unit of dispatch: one or more jobs sent as one prediction.
struct Work {
    jobs: Vec<PendingJob>,
    /// A health probe (no caller waits).
    probe: bool,
}

impl Work {
    fn rows(&self) -> Vec<Vec<i64>> {
        self.jobs.iter().flat_map(|j| j.rows.iter().cloned()).collect()
    }
    fn texts(&self) -> Vec<String> {
        self.jobs.iter().flat_map(|j| j.texts.iter().cloned()).collect()
    }
    /// Per row; empty when no job has a prompt.
    fn prompt_tokens(&self) -> Vec<usize> {
        if self.jobs.iter().all(|j| j.prompt_tokens == 0) {
            return vec![];
        }
        self.jobs.iter().flat_map(|j| std::iter::repeat_n(j.prompt_tokens, j.rows.len())).collect()
    }
    fn shape(&self) -> (usize, usize) {
        if let Some(t) = self.jobs.first().and_then(|j| j.tensors.as_ref()) {
            return t.first().map_or((1, 1), NamedTensor::rows_and_width);
        }
        let rows = self.jobs.iter().map(|j| j.rows.len()).sum();
        let seq = self.jobs.iter().flat_map(|j| j.rows.iter().map(Vec::len)).max().unwrap_or(0);
        (rows, seq)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Spawned; waiting for Hello / Loaded / Ready.
    Starting,
    /// Accepts predictions.
    Serving,
    /// Takes no new predictions; stops when its in-flight ones are answered.
    Draining,
    /// Shutdown sent; waiting for its exit.
    Stopping,
}

struct InFlight {
    id: u64,
    work: Work,
    sent: Instant,
}

struct Worker {
    id: u64,
    unit_idx: usize,
    generation: u32,
    link: WorkerLink,
    phase: Phase,
    hello: bool,
    load_failed: Option<(String, String)>,
    spawned: Instant,
    loaded_at: Option<Instant>,
    inflight: VecDeque<InFlight>,
    head_since: Instant,
    served: u64,
    rss_ready: u64,
    rss: u64,
    /// A replacement is being warmed up for this worker (or it drains first).
    recycling: Option<String>,
    /// Draining before its replacement starts (memory would not fit two).
    drain_first: bool,
    stop_deadline: Option<Instant>,
    /// Milliseconds per padded token at warm-up (the worst shape), for the watchdog.
    ms_per_token: f64,
    warm_fixed_ms: f64,
    last_ok: Instant,
}

struct UnitSlot {
    unit: Unit,
    runtime: String,
    state: UnitState,
    reason: Option<String>,
    generation: u32,
    crashes_by_exit: BTreeMap<String, u64>,
    last_exit: Option<WorkerExit>,
    restarts: u64,
    recycles: u64,
    predictions: u64,
    consecutive_crashes: u32,
    restart_at: Option<Instant>,
    reprobe_at: Option<Instant>,
    report: Option<SessionReport>,
    warmup: Vec<WarmupShape>,
    load_ms: Option<f64>,
    warmup_ms: Option<f64>,
    rss: u64,
    rss_ready: u64,
    pid: Option<u32>,
    deadline_ms: Option<f64>,
}

/// Supervises the workers of one model. Cheap to share (`Arc`); every method takes `&self`.
pub struct Supervisor {
    model: String,
    tx: mpsc::UnboundedSender<Cmd>,
    view: Arc<Mutex<ModelUnits>>,
    health: Arc<Mutex<HealthFlags>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct HealthFlags {
    ready: bool,
    last_ok: Option<Instant>,
}

impl Supervisor {
    /// Starts supervising `model` on `chain` (must be called inside a tokio runtime). Returns at once; use
    /// [`Supervisor::wait_ready`] to wait for the first unit to serve.
    pub fn start(model: ModelFiles, chain: &Chain, engines: Arc<Engines>, config: SupervisorConfig) -> Supervisor {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let units: Vec<UnitSlot> = chain
            .units()
            .iter()
            .map(|&unit| UnitSlot {
                unit,
                runtime: engines.runtime(&unit),
                state: UnitState::Standby,
                reason: None,
                generation: 0,
                crashes_by_exit: BTreeMap::new(),
                last_exit: None,
                restarts: 0,
                recycles: 0,
                predictions: 0,
                consecutive_crashes: 0,
                restart_at: None,
                reprobe_at: None,
                report: None,
                warmup: vec![],
                load_ms: None,
                warmup_ms: None,
                rss: 0,
                rss_ready: 0,
                pid: None,
                deadline_ms: None,
            })
            .collect();
        let weights = model.onnx.clone().or_else(|| model.safetensors.clone()).unwrap_or_else(|| model.source.clone());
        let digest = model_digest(&weights);
        let history = match &config.state_dir {
            Some(dir) => History::load(dir),
            None => History::in_memory(),
        };
        if !config.faults.is_empty() {
            crate::faults::log_active(&config.faults, &format!("the supervisor of {}", model.name));
        }
        let view = Arc::new(Mutex::new(ModelUnits {
            model: model.name.clone(),
            chain: chain.units().iter().map(Unit::to_string).collect(),
            serving: None,
            isolation: config.isolation,
            queued: 0,
            units: vec![],
            inputs: vec![],
            outputs: vec![],
        }));
        let health = Arc::new(Mutex::new(HealthFlags::default()));
        let name = model.name.clone();
        let mut actor = Actor {
            model,
            engines,
            cfg: config,
            digest,
            history,
            units,
            workers: vec![],
            queue: VecDeque::new(),
            next_worker: 0,
            next_req: 0,
            ev_tx,
            view: view.clone(),
            health: health.clone(),
            waiters: vec![],
            shutdown: None,
        };
        actor.restore_quarantines();
        tokio::spawn(actor.run(rx, ev_rx));
        Supervisor { model: name, tx, view, health }
    }

    /// Waits until a unit serves (after load and warm-up); the error lists every unit's reason.
    pub async fn wait_ready(&self) -> Result<Unit, StartError> {
        let (tx, rx) = oneshot::channel();
        let gone = || StartError { model: self.model.clone(), reasons: "the supervisor stopped".into() };
        self.tx.send(Cmd::WaitReady(tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Runs jobs (one batch of requests); one result per job, in order. A job is retried on a fresh worker or the
    /// next unit when its worker dies; only a poison job or an unservable chain gives an error.
    pub async fn predict(&self, jobs: Vec<Job>) -> Vec<Result<JobAnswer, PredictError>> {
        let now = Instant::now();
        let mut receivers = Vec::with_capacity(jobs.len());
        let pending: Vec<PendingJob> = jobs
            .into_iter()
            .map(|j| {
                let (tx, rx) = oneshot::channel();
                receivers.push(rx);
                PendingJob {
                    rows: j.rows,
                    texts: j.texts,
                    prompt_tokens: j.prompt_tokens,
                    tensors: None,
                    strikes: vec![],
                    retries: 0,
                    enqueued: now,
                    reply: Some(tx),
                }
            })
            .collect();
        if self.tx.send(Cmd::Predict(pending)).is_err() {
            return receivers.iter().map(|_| Err(PredictError::ShuttingDown)).collect();
        }
        let mut out = Vec::with_capacity(receivers.len());
        for rx in receivers {
            out.push(rx.await.unwrap_or(Err(PredictError::ShuttingDown)));
        }
        out
    }

    /// Runs a tensor model (an ONNX graph without a tokenizer) on named `inputs`: the same retry, fallback, poison
    /// and watchdog rules as embeddings; never batched with other requests. No inputs runs the worker's warm-up
    /// inputs (zeros of every input's shape), as health probes do.
    pub async fn infer(&self, inputs: Vec<NamedTensor>) -> Result<JobAnswer, PredictError> {
        let (tx, rx) = oneshot::channel();
        let job = PendingJob {
            rows: vec![],
            texts: vec![],
            prompt_tokens: 0,
            tensors: Some(inputs),
            strikes: vec![],
            retries: 0,
            enqueued: Instant::now(),
            reply: Some(tx),
        };
        if self.tx.send(Cmd::Predict(vec![job])).is_err() {
            return Err(PredictError::ShuttingDown);
        }
        rx.await.unwrap_or(Err(PredictError::ShuttingDown))
    }

    /// A tensor model's graph inputs and outputs, known once a worker has loaded it (empty for embedding models).
    pub fn signature(&self) -> (Vec<TensorSpec>, Vec<TensorSpec>) {
        let v = self.view.lock().unwrap_or_else(|e| e.into_inner());
        (v.inputs.clone(), v.outputs.clone())
    }

    /// Embeds one request's rows.
    pub async fn embed(&self, rows: Vec<Vec<i64>>, texts: Vec<String>) -> Result<JobAnswer, PredictError> {
        self.predict(vec![Job { rows, texts, prompt_tokens: 0 }]).await.pop().unwrap_or(Err(PredictError::ShuttingDown))
    }

    /// The `/units` view (a snapshot; never blocks on the actor).
    pub fn units(&self) -> ModelUnits {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// True once a unit serves (after warm-up).
    pub fn is_ready(&self) -> bool {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).ready
    }

    /// True when a unit serves and answered a real forward pass within `window`.
    pub fn is_healthy(&self, window: Duration) -> bool {
        let h = *self.health.lock().unwrap_or_else(|e| e.into_inner());
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

struct Actor {
    model: ModelFiles,
    engines: Arc<Engines>,
    cfg: SupervisorConfig,
    digest: String,
    history: History,
    units: Vec<UnitSlot>,
    workers: Vec<Worker>,
    queue: VecDeque<Work>,
    next_worker: u64,
    next_req: u64,
    ev_tx: mpsc::UnboundedSender<(u64, WorkerEvent)>,
    view: Arc<Mutex<ModelUnits>>,
    health: Arc<Mutex<HealthFlags>>,
    waiters: Vec<oneshot::Sender<Result<Unit, StartError>>>,
    shutdown: Option<(oneshot::Sender<()>, Instant)>,
}

const TICK: Duration = Duration::from_millis(25);
const DRAIN_KILL_AFTER: Duration = Duration::from_secs(10);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

impl Actor {
    async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
        mut events: mpsc::UnboundedReceiver<(u64, WorkerEvent)>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.reconcile();
        self.publish();
        let mut cmds_open = true;
        loop {
            // Requests and answers (the per-request hot path) refresh only the counters of the view; every other
            // event, and the 25 ms tick, rebuilds it whole.
            let mut hot = false;
            tokio::select! {
                cmd = cmds.recv(), if cmds_open => match cmd {
                    Some(c) => {
                        hot = matches!(c, Cmd::Predict(_));
                        self.on_cmd(c);
                    }
                    None => {
                        // Every handle dropped: stop the workers.
                        cmds_open = false;
                        self.begin_shutdown(None);
                    }
                },
                Some((id, ev)) = events.recv() => {
                    hot = matches!(
                        ev,
                        WorkerEvent::Message(
                            Response::Predicted { .. } | Response::Inferred { .. } | Response::Failed { .. }
                        )
                    );
                    self.on_event(id, ev);
                }
                _ = tick.tick() => self.on_tick(),
            }
            if self.finish_shutdown_if_done() {
                self.publish();
                return;
            }
            self.reconcile();
            self.dispatch();
            if hot {
                self.publish_counters();
            } else {
                self.publish();
            }
        }
    }

    // ---- commands -------------------------------------------------------------------------------------------

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Predict(mut jobs) => {
                if self.shutdown.is_some() {
                    jobs.iter_mut().for_each(|j| j.answer(Err(PredictError::ShuttingDown)));
                    return;
                }
                if jobs.is_empty() {
                    return;
                }
                if let Some(reason) = self.dead_end() {
                    jobs.iter_mut().for_each(|j| j.answer(Err(PredictError::Unavailable(reason.clone()))));
                    return;
                }
                self.queue.push_back(Work { jobs, probe: false });
            }
            Cmd::WaitReady(tx) => {
                if let Some(w) = self.workers.iter().find(|w| w.phase == Phase::Serving) {
                    let _ = tx.send(Ok(self.units[w.unit_idx].unit));
                } else if let Some(reason) = self.dead_end() {
                    let _ = tx.send(Err(StartError { model: self.model.name.clone(), reasons: reason }));
                } else {
                    self.waiters.push(tx);
                }
            }
            Cmd::Shutdown(tx) => self.begin_shutdown(Some(tx)),
        }
    }

    fn begin_shutdown(&mut self, tx: Option<oneshot::Sender<()>>) {
        if self.shutdown.is_none() {
            tracing::info!(model = %self.model.name, "stopping: finishing queued and in-flight requests");
            let (done, _) = oneshot::channel();
            self.shutdown = Some((tx.unwrap_or(done), Instant::now()));
        } else if let Some(tx) = tx {
            // A second caller: answer when the first completes (approximation: at once after it).
            let _ = tx.send(());
        }
    }

    fn finish_shutdown_if_done(&mut self) -> bool {
        let Some((_, since)) = &self.shutdown else { return false };
        let busy = !self.queue.is_empty() || self.workers.iter().any(|w| !w.inflight.is_empty());
        let serving = self.workers.iter().any(|w| w.phase == Phase::Serving);
        if busy && serving && since.elapsed() < SHUTDOWN_GRACE {
            return false;
        }
        // Fail what is left, stop every worker.
        while let Some(mut w) = self.queue.pop_front() {
            w.jobs.iter_mut().for_each(|j| j.answer(Err(PredictError::ShuttingDown)));
        }
        for w in &mut self.workers {
            for mut f in w.inflight.drain(..) {
                f.work.jobs.iter_mut().for_each(|j| j.answer(Err(PredictError::ShuttingDown)));
            }
            w.link.send(Request::Shutdown);
        }
        let workers = std::mem::take(&mut self.workers);
        let mut links: Vec<WorkerLink> = workers.into_iter().map(|w| w.link).collect();
        for u in &mut self.units {
            if matches!(u.state, UnitState::Serving | UnitState::Loading | UnitState::Warming) {
                u.state = UnitState::Standby;
                u.pid = None;
            }
        }
        {
            let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
            h.ready = false;
        }
        let (tx, _) = self.shutdown.take().expect("checked above");
        tokio::spawn(async move {
            // Give clean exits a moment, then the links' Drop kills the process groups.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            for l in &mut links {
                loop {
                    match tokio::time::timeout_at(deadline, l.events.recv()).await {
                        Ok(Some(WorkerEvent::Exited(_))) | Ok(None) | Err(_) => break,
                        Ok(Some(_)) => {}
                    }
                }
            }
            drop(links);
            let _ = tx.send(());
        });
        true
    }

    // ---- chain walk ---------------------------------------------------------------------------------------------

    /// Marks persisted quarantines at start-up.
    fn restore_quarantines(&mut self) {
        let now = unix_now();
        for u in &mut self.units {
            if let Some(rec) = self.history.get(&self.digest, &u.unit.to_string(), &u.runtime) {
                if let Some(until) = rec.quarantined_until.filter(|&t| t > now) {
                    u.state = UnitState::Quarantined;
                    u.reason = Some(format!(
                        "quarantined by the crash history ({} crashes, last: {}) until {}; clear it with \
                         `bulkhead units --clear-history`",
                        rec.total_crashes,
                        rec.crashes.last().map(|c| c.exit.as_str()).unwrap_or("?"),
                        fmt_unix(until)
                    ));
                    u.reprobe_at = Some(Instant::now() + Duration::from_secs_f64(until - now));
                    tracing::warn!(unit = %u.unit, model = %self.model.name, "{}", u.reason.as_deref().unwrap_or(""));
                }
            }
        }
    }

    /// The unit that should serve: the first of the chain that is neither unavailable nor quarantined.
    fn desired(&self) -> Option<usize> {
        self.units.iter().position(|u| !matches!(u.state, UnitState::Unavailable | UnitState::Quarantined))
    }

    /// `Some(reasons)` when no unit can serve now and none is starting (requests would wait forever).
    fn dead_end(&self) -> Option<String> {
        if self.desired().is_some() || self.workers.iter().any(|w| w.phase != Phase::Stopping) {
            return None;
        }
        Some(
            self.units
                .iter()
                .map(|u| format!("{}: {}", u.unit, u.reason.as_deref().unwrap_or("not started")))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    fn reconcile(&mut self) {
        if self.shutdown.is_some() {
            return;
        }
        let now = Instant::now();
        // Quarantined units whose re-probe time came are tried again.
        for u in &mut self.units {
            if u.state == UnitState::Quarantined && u.reprobe_at.is_some_and(|t| t <= now) {
                tracing::info!(unit = %u.unit, "re-probing the quarantined unit");
                u.state = UnitState::Standby;
                u.reprobe_at = None;
            }
        }
        loop {
            let Some(idx) = self.desired() else {
                self.fail_everything_if_dead_end();
                return;
            };
            let has_worker = self.workers.iter().any(|w| {
                w.unit_idx == idx && matches!(w.phase, Phase::Starting | Phase::Serving) && w.recycling.is_none()
            });
            let blocked_by_drain = self.workers.iter().any(|w| w.unit_idx == idx && w.drain_first);
            if has_worker || blocked_by_drain {
                break;
            }
            if self.units[idx].restart_at.is_some_and(|t| t > now) {
                break;
            }
            // A worker being recycled on this unit still serves; its replacement is started below.
            if self.start_worker(idx) {
                break;
            }
            // start_worker marked the unit unavailable: walk on.
        }
        // Serving workers on later units than a serving earlier one are drained (a re-probed unit took over).
        if let Some(best) = self.workers.iter().filter(|w| w.phase == Phase::Serving).map(|w| w.unit_idx).min() {
            for w in &mut self.workers {
                if w.phase == Phase::Serving && w.unit_idx > best {
                    tracing::info!(unit = %self.units[w.unit_idx].unit, "a preferred unit serves again; draining this one");
                    w.phase = Phase::Draining;
                }
            }
        }
    }

    fn fail_everything_if_dead_end(&mut self) {
        if let Some(reason) = self.dead_end() {
            let msg = format!("no unit of the chain can serve {}: {reason}", self.model.name);
            while let Some(mut w) = self.queue.pop_front() {
                w.jobs.iter_mut().for_each(|j| j.answer(Err(PredictError::Unavailable(msg.clone()))));
            }
            for tx in self.waiters.drain(..) {
                let _ = tx.send(Err(StartError { model: self.model.name.clone(), reasons: reason.clone() }));
            }
        }
    }

    /// Starts a worker on unit `idx`; false (and the unit marked unavailable) when it cannot run here.
    fn start_worker(&mut self, idx: usize) -> bool {
        let unit = self.units[idx].unit;
        if let reason @ (Availability::NotCompiled(_) | Availability::Unusable(_)) = self.engines.availability(&unit) {
            let reason = match reason {
                Availability::NotCompiled(r) | Availability::Unusable(r) => r,
                Availability::Usable => unreachable!(),
            };
            tracing::warn!(unit = %unit, model = %self.model.name, "skipping {unit}: {reason}");
            let u = &mut self.units[idx];
            u.state = UnitState::Unavailable;
            u.reason = Some(reason);
            return false;
        }
        let generation = self.units[idx].generation;
        let link = match self.cfg.isolation {
            Isolation::Process => {
                match WorkerLink::spawn(&self.cfg.worker_command, &self.model, unit, generation, &self.cfg.faults) {
                    Ok(l) => l,
                    Err(e) => {
                        let reason = format!(
                            "cannot start a worker process ({}): {e}",
                            self.cfg.worker_command.program.display()
                        );
                        tracing::error!(unit = %unit, "{reason}");
                        let u = &mut self.units[idx];
                        u.state = UnitState::Unavailable;
                        u.reason = Some(reason);
                        return false;
                    }
                }
            }
            Isolation::None => WorkerLink::in_process(self.engines.clone(), &self.model, unit),
        };
        let id = self.next_worker;
        self.next_worker += 1;
        let mut link = link;
        let (_, dummy) = mpsc::unbounded_channel();
        let mut events = std::mem::replace(&mut link.events, dummy);
        let ev_tx = self.ev_tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if ev_tx.send((id, ev)).is_err() {
                    break;
                }
            }
        });
        tracing::info!(unit = %unit, generation, model = %self.model.name, pid = ?link.pid, "loading {} on {unit}", self.model.name);
        let u = &mut self.units[idx];
        u.generation += 1;
        u.pid = link.pid;
        u.restart_at = None;
        if u.state != UnitState::Serving {
            u.state = UnitState::Loading;
        }
        let now = Instant::now();
        self.workers.push(Worker {
            id,
            unit_idx: idx,
            generation,
            link,
            phase: Phase::Starting,
            hello: false,
            load_failed: None,
            spawned: now,
            loaded_at: None,
            inflight: VecDeque::new(),
            head_since: now,
            served: 0,
            rss_ready: 0,
            rss: 0,
            recycling: None,
            drain_first: false,
            stop_deadline: None,
            ms_per_token: 0.0,
            warm_fixed_ms: 0.0,
            last_ok: now,
        });
        true
    }

    // ---- worker events ------------------------------------------------------------------------------------------

    fn on_event(&mut self, id: u64, ev: WorkerEvent) {
        let Some(pos) = self.workers.iter().position(|w| w.id == id) else { return };
        match ev {
            WorkerEvent::Message(msg) => self.on_message(pos, msg),
            WorkerEvent::Exited(exit) => {
                let w = self.workers.remove(pos);
                self.on_exit(w, exit);
            }
        }
    }

    fn on_message(&mut self, pos: usize, msg: Response) {
        let w = &mut self.workers[pos];
        let idx = w.unit_idx;
        match msg {
            Response::Hello { protocol, version, .. } => {
                if protocol != PROTOCOL_VERSION || version != CRATE_VERSION {
                    let why = format!(
                        "handshake: the worker speaks protocol {protocol} of bulkhead {version}, expected protocol \
                         {PROTOCOL_VERSION} of {CRATE_VERSION} (is --worker-command the same build?)"
                    );
                    w.load_failed = Some((why.clone(), "setup".into()));
                    w.link.kill(&why);
                } else {
                    w.hello = true;
                }
            }
            Response::Loaded { report } => {
                w.loaded_at = Some(Instant::now());
                let u = &mut self.units[idx];
                u.load_ms = Some(w.spawned.elapsed().as_secs_f64() * 1e3);
                u.report = Some(report);
                if u.state != UnitState::Serving {
                    u.state = UnitState::Warming;
                }
                tracing::info!(unit = %u.unit, "loaded in {:.0} ms; warming up", u.load_ms.unwrap_or(0.0));
            }
            Response::Ready { report, warmup, rss_bytes, inputs, outputs } => {
                if !w.hello {
                    w.link.kill("protocol error: Ready before Hello");
                    return;
                }
                if !inputs.is_empty() || !outputs.is_empty() {
                    let mut v = self.view.lock().unwrap_or_else(|e| e.into_inner());
                    v.inputs = inputs;
                    v.outputs = outputs;
                }
                let rss = if rss_bytes > 0 { rss_bytes } else { w.link.pid.and_then(rss_bytes_of).unwrap_or(0) };
                w.phase = Phase::Serving;
                w.rss_ready = rss;
                w.rss = rss;
                w.last_ok = Instant::now();
                (w.ms_per_token, w.warm_fixed_ms) = watchdog_model(&warmup);
                let warm_ms = w.loaded_at.map(|t| t.elapsed().as_secs_f64() * 1e3);
                let u = &mut self.units[idx];
                u.state = UnitState::Serving;
                u.reason = None;
                u.report = Some(report);
                u.warmup = warmup;
                u.warmup_ms = warm_ms;
                u.rss = rss;
                u.rss_ready = rss;
                u.pid = w.link.pid;
                u.deadline_ms =
                    Some(Actor::deadline_for(&self.cfg, w.ms_per_token, w.warm_fixed_ms, 1, 16).as_secs_f64() * 1e3);
                tracing::info!(
                    unit = %u.unit, model = %self.model.name,
                    "serving on {} (warm-up {:.0} ms, resident {:.0} MiB)",
                    u.unit, warm_ms.unwrap_or(0.0), rss as f64 / 1048576.0
                );
                // A replacement is ready: the worker it replaces drains now.
                let this_id = w.id;
                for other in &mut self.workers {
                    if other.id != this_id
                        && other.unit_idx == idx
                        && other.recycling.is_some()
                        && other.phase == Phase::Serving
                    {
                        other.phase = Phase::Draining;
                    }
                }
                let unit = self.units[idx].unit;
                {
                    let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
                    h.ready = true;
                    h.last_ok = Some(Instant::now());
                }
                // Whoever waited for readiness reads `/units` next: publish the serving state before waking them.
                self.publish();
                for tx in self.waiters.drain(..) {
                    let _ = tx.send(Ok(unit));
                }
            }
            Response::LoadFailed { reason, kind } => {
                w.load_failed = Some((reason, kind));
            }
            Response::Predicted { id, vectors, timing, rss_bytes } => {
                let Some((mut f, now, unit)) = self.answered(pos, id, rss_bytes) else { return };
                let mut vectors = vectors.into_iter();
                for job in &mut f.work.jobs {
                    let mine: Vec<Vec<f32>> = vectors.by_ref().take(job.rows.len()).collect();
                    let t = job_timing(job, now, &timing);
                    let answer = if mine.len() == job.rows.len() {
                        Ok(JobAnswer { vectors: mine, outputs: vec![], unit, timing: t, retries: job.retries })
                    } else {
                        Err(PredictError::Failed(format!(
                            "the worker returned {} vectors for {} inputs",
                            mine.len(),
                            job.rows.len()
                        )))
                    };
                    job.answer(answer);
                }
                self.check_recycle(pos);
            }
            Response::Inferred { id, outputs, timing, rss_bytes } => {
                let Some((mut f, now, unit)) = self.answered(pos, id, rss_bytes) else { return };
                // Tensor work is never batched: one job, all the outputs.
                if let Some(job) = f.work.jobs.first_mut() {
                    let timing = job_timing(job, now, &timing);
                    job.answer(Ok(JobAnswer { vectors: vec![], outputs, unit, timing, retries: job.retries }));
                }
                self.check_recycle(pos);
            }
            Response::Failed { id, message } => {
                let Some(i) = w.inflight.iter().position(|f| f.id == id) else { return };
                let mut f = w.inflight.remove(i).expect("position is valid");
                w.head_since = Instant::now();
                w.served += 1;
                let unit = self.units[idx].unit;
                for job in &mut f.work.jobs {
                    job.answer(Err(PredictError::Failed(format!("{unit}: {message}"))));
                }
            }
        }
    }

    /// The bookkeeping of a successful answer from worker `pos`: takes the in-flight work `id` off the worker and
    /// counts the prediction. `None` for an unknown id.
    fn answered(&mut self, pos: usize, id: u64, rss_bytes: u64) -> Option<(InFlight, Instant, Unit)> {
        let w = &mut self.workers[pos];
        let i = w.inflight.iter().position(|f| f.id == id)?;
        let f = w.inflight.remove(i)?;
        let now = Instant::now();
        w.head_since = now;
        w.served += 1;
        w.last_ok = now;
        if rss_bytes > 0 {
            w.rss = rss_bytes;
        }
        let u = &mut self.units[w.unit_idx];
        u.predictions += 1;
        u.rss = w.rss;
        u.consecutive_crashes = 0;
        self.health.lock().unwrap_or_else(|e| e.into_inner()).last_ok = Some(now);
        Some((f, now, u.unit))
    }

    fn check_recycle(&mut self, pos: usize) {
        let w = &self.workers[pos];
        if w.phase != Phase::Serving {
            return;
        }
        if w.recycling.is_some() {
            // While the replacement warms up the old worker keeps serving, but a leak must stay bounded: past
            // 1.5x the limit it stops taking predictions and requests wait for the replacement.
            let hard = self.cfg.recycle_rss_bytes.is_some_and(|b| w.rss > b + b / 2)
                || self.cfg.recycle_growth_bytes.is_some_and(|b| w.rss.saturating_sub(w.rss_ready) > b + b / 2);
            if hard {
                tracing::warn!(unit = %self.units[w.unit_idx].unit, "memory past 1.5x the recycle limit while the replacement warms up; pausing this worker");
                self.workers[pos].phase = Phase::Draining;
            }
            return;
        }
        let why = if self.cfg.recycle_after.is_some_and(|n| w.served >= n) {
            Some(format!("served {} predictions", w.served))
        } else if self.cfg.recycle_rss_bytes.is_some_and(|b| w.rss > b) {
            Some(format!("resident memory {} MiB over the limit", w.rss >> 20))
        } else if self.cfg.recycle_growth_bytes.is_some_and(|b| w.rss.saturating_sub(w.rss_ready) > b) {
            Some(format!("resident memory grew {} MiB since warm-up", w.rss.saturating_sub(w.rss_ready) >> 20))
        } else {
            None
        };
        let Some(why) = why else { return };
        // Two copies must fit: the replacement needs about what the old one had after warm-up.
        let fits = match available_memory() {
            Some(avail) => avail > w.rss_ready.max(w.rss / 2) * 3 / 2,
            None => true,
        };
        let unit = self.units[w.unit_idx].unit;
        tracing::info!(unit = %unit, "recycling the worker ({why}){}", if fits { "" } else { "; draining first: two copies would not fit in memory" });
        let idx = w.unit_idx;
        let w = &mut self.workers[pos];
        w.recycling = Some(why);
        if !fits || self.cfg.isolation == Isolation::None {
            w.drain_first = true;
            w.phase = Phase::Draining;
        }
        self.units[idx].recycles += 1;
    }

    fn on_exit(&mut self, mut w: Worker, exit: WorkerExit) {
        let idx = w.unit_idx;
        let unit = self.units[idx].unit;
        let planned = w.phase == Phase::Stopping;
        // Work in flight goes back to the queue front, in order; only the head (the prediction the worker was
        // running) gets a strike.
        let mut back: Vec<Work> = vec![];
        let label = format!("{unit}#{} {}", w.generation, exit.summary());
        for (i, mut f) in w.inflight.drain(..).enumerate() {
            if f.work.probe {
                continue;
            }
            if i == 0 && !planned {
                for j in &mut f.work.jobs {
                    j.strikes.push(label.clone());
                }
                if f.work.jobs.len() > 1 {
                    // Split so that the next crash tells which request is to blame.
                    back.extend(f.work.jobs.into_iter().map(|j| Work { jobs: vec![j], probe: false }));
                    continue;
                }
            }
            back.push(f.work);
        }
        for mut work in back.into_iter().rev() {
            for j in &mut work.jobs {
                j.retries += 1;
            }
            let poisoned = work.jobs.len() == 1 && work.jobs[0].strikes.len() >= self.cfg.poison_crashes as usize;
            if poisoned {
                let j = &mut work.jobs[0];
                let msg = format!(
                    "this request crashed {} workers ({}); it is treated as a poison request and not retried",
                    j.strikes.len(),
                    j.strikes.join("; ")
                );
                tracing::error!(unit = %unit, "{msg}");
                j.answer(Err(PredictError::Poison(msg)));
            } else {
                self.queue.push_front(work);
            }
        }

        let u = &mut self.units[idx];
        u.pid = None;
        if planned {
            // A planned stop (recycle, shutdown, a preferred unit took over).
            if !self.workers.iter().any(|o| o.unit_idx == idx && o.phase == Phase::Serving)
                && u.state == UnitState::Serving
            {
                u.state = UnitState::Standby;
            }
            tracing::debug!(unit = %unit, "worker #{} stopped ({})", w.generation, exit.summary());
            self.update_ready();
            return;
        }
        if let Some((reason, kind)) = w.load_failed.take().filter(|_| w.phase == Phase::Starting) {
            tracing::warn!(unit = %unit, model = %self.model.name, "skipping {unit}: {reason} ({kind})");
            u.state = UnitState::Unavailable;
            u.reason = Some(reason);
            u.last_exit = Some(exit);
            self.update_ready();
            return;
        }
        // A crash: while loading, while serving, or a watchdog kill.
        let key = exit.signal.clone().unwrap_or_else(|| match exit.code {
            Some(c) => format!("exit {c}"),
            None => "unknown".into(),
        });
        *u.crashes_by_exit.entry(key).or_default() += 1;
        let when = if w.phase == Phase::Starting { "while loading" } else { "while serving" };
        let summary = exit.summary();
        let tail = exit.stderr_tail.trim_end().lines().rev().take(3).collect::<Vec<_>>();
        tracing::error!(
            unit = %unit, model = %self.model.name, generation = w.generation,
            "worker crashed {when}: {summary}; stderr tail: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
        u.last_exit = Some(exit);
        u.consecutive_crashes += 1;
        let runtime = u.runtime.clone();
        let unit_s = unit.to_string();
        let level = self.history.record_crash(
            (&self.model.name, &self.digest, &unit_s, &runtime),
            &summary,
            self.cfg.forgive_every,
        );
        let u = &mut self.units[idx];
        if level + 1e-9 >= self.cfg.quarantine_crashes as f64 {
            let rec = self.history.entry(&self.model.name, &self.digest, &unit_s, &runtime);
            rec.quarantines += 1;
            let delay =
                self.cfg.reprobe_after.saturating_mul(1u32 << (rec.quarantines - 1).min(16)).min(self.cfg.reprobe_max);
            rec.quarantined_until = Some(unix_now() + delay.as_secs_f64());
            let total = rec.total_crashes;
            self.history.save();
            u.state = UnitState::Quarantined;
            u.reprobe_at = Some(Instant::now() + delay);
            u.reason = Some(format!(
                "quarantined after {:.0} crashes in the window (last: {summary}); re-probed in {}s",
                level.round(),
                delay.as_secs()
            ));
            let _ = total;
            tracing::error!(unit = %unit, model = %self.model.name, "{}", u.reason.as_deref().unwrap_or(""));
            // The other workers of the unit (a recycling replacement) go too.
            for o in &mut self.workers {
                if o.unit_idx == idx {
                    o.phase = Phase::Stopping;
                    o.link.kill("the unit was quarantined");
                }
            }
        } else {
            let backoff = self
                .cfg
                .restart_backoff
                .saturating_mul(1u32 << (u.consecutive_crashes.saturating_sub(1)).min(16))
                .min(self.cfg.restart_backoff_max);
            u.state = UnitState::Crashed;
            u.reason = Some(format!("worker crashed {when}: {summary}; restarting in {} ms", backoff.as_millis()));
            u.restart_at = Some(Instant::now() + backoff);
            u.restarts += 1;
            // A serving replacement (or an older worker still draining) may keep serving meanwhile.
            if self.workers.iter().any(|o| o.unit_idx == idx && o.phase == Phase::Serving) {
                u.state = UnitState::Serving;
            }
        }
        self.update_ready();
    }

    fn update_ready(&mut self) {
        let ready = self.workers.iter().any(|w| w.phase == Phase::Serving);
        self.health.lock().unwrap_or_else(|e| e.into_inner()).ready = ready;
    }

    // ---- timers -------------------------------------------------------------------------------------------------

    /// The watchdog deadline of a `rows` x `seq` prediction.
    fn deadline_for(cfg: &SupervisorConfig, ms_per_token: f64, fixed_ms: f64, rows: usize, seq: usize) -> Duration {
        if let Some(d) = cfg.predict_timeout {
            return d;
        }
        let est_ms = fixed_ms + ms_per_token * (rows.max(1) * seq.max(1)) as f64;
        Duration::from_secs_f64(est_ms * cfg.timeout_factor / 1e3).max(cfg.timeout_floor)
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let mut kills = vec![];
        for (i, w) in self.workers.iter().enumerate() {
            match w.phase {
                Phase::Starting if now - w.spawned > self.cfg.load_timeout => {
                    kills.push((
                        i,
                        format!("watchdog: not ready after {} s (load hang)", self.cfg.load_timeout.as_secs()),
                    ));
                }
                Phase::Serving | Phase::Draining => {
                    if let Some(head) = w.inflight.front() {
                        let (rows, seq) = head.work.shape();
                        let deadline = Actor::deadline_for(&self.cfg, w.ms_per_token, w.warm_fixed_ms, rows, seq);
                        let started = w.head_since.max(head.sent);
                        if now - started > deadline {
                            kills.push((
                                i,
                                format!(
                                    "watchdog: a prediction of {rows}x{seq} tokens exceeded its {:.1} s deadline (hang)",
                                    deadline.as_secs_f64()
                                ),
                            ));
                        }
                    }
                }
                Phase::Stopping if w.stop_deadline.is_some_and(|t| now > t) => {
                    kills.push((i, "did not stop after Shutdown".into()));
                }
                _ => {}
            }
        }
        for (i, why) in kills {
            let w = &mut self.workers[i];
            if self.cfg.isolation == Isolation::None {
                // A thread cannot be killed: report and keep waiting.
                tracing::error!("{why} (in-process worker: cannot be killed; use --isolation process)");
                w.head_since = now;
                continue;
            }
            tracing::error!(unit = %self.units[w.unit_idx].unit, "{why}; killing the worker");
            w.link.kill(&why);
            w.stop_deadline = None;
        }
        // Draining workers with nothing in flight stop.
        for w in &mut self.workers {
            if w.phase == Phase::Draining && w.inflight.is_empty() {
                w.phase = Phase::Stopping;
                w.link.send(Request::Shutdown);
                w.stop_deadline = Some(now + DRAIN_KILL_AFTER);
            }
        }
        // Refresh resident memory of serving workers (a leak that grows between predictions shows too).
        for w in &mut self.workers {
            if let Some(pid) = w.link.pid {
                if w.phase == Phase::Serving && w.inflight.is_empty() && now - w.last_ok > Duration::from_secs(1) {
                    if let Some(r) = rss_bytes_of(pid) {
                        w.rss = r;
                        self.units[w.unit_idx].rss = r;
                    }
                }
            }
        }
        // Health probe: an idle serving worker answers a real forward pass now and then.
        if self.queue.is_empty() && self.shutdown.is_none() {
            let probe_due = self
                .workers
                .iter()
                .find(|w| {
                    w.phase == Phase::Serving && w.inflight.is_empty() && now - w.last_ok > self.cfg.health_probe_every
                })
                .map(|w| w.unit_idx);
            if probe_due.is_some() {
                // Embedding models: `[CLS] hello [SEP]`; tensor models: the worker's warm-up inputs.
                let tensor = self.model.is_tensor_model();
                let rows = if tensor { vec![] } else { vec![vec![101, 7592, 102]] };
                self.queue.push_back(Work {
                    jobs: vec![PendingJob {
                        rows,
                        texts: vec![],
                        prompt_tokens: 0,
                        tensors: tensor.then(Vec::new),
                        strikes: vec![],
                        retries: 0,
                        enqueued: now,
                        reply: None,
                    }],
                    probe: true,
                });
            }
        }
    }

    // ---- dispatch -----------------------------------------------------------------------------------------------

    fn dispatch(&mut self) {
        while !self.queue.is_empty() {
            // The preferred serving worker with room (earliest unit of the chain, then the fewest in flight).
            let Some(pos) = self
                .workers
                .iter()
                .enumerate()
                .filter(|(_, w)| w.phase == Phase::Serving && w.inflight.len() < self.cfg.max_inflight.max(1))
                .min_by_key(|(_, w)| (w.unit_idx, w.recycling.is_some(), w.inflight.len()))
                .map(|(i, _)| i)
            else {
                return;
            };
            let work = self.queue.pop_front().expect("not empty");
            let id = self.next_req;
            self.next_req += 1;
            let w = &mut self.workers[pos];
            let now = Instant::now();
            if w.inflight.is_empty() {
                w.head_since = now;
            }
            match work.jobs.first().and_then(|j| j.tensors.clone()) {
                Some(inputs) => w.link.send(Request::Infer { id, inputs }),
                None => w.link.send(Request::Predict {
                    id,
                    rows: work.rows(),
                    texts: work.texts(),
                    prompt_tokens: work.prompt_tokens(),
                }),
            }
            w.inflight.push_back(InFlight { id, work, sent: now });
        }
    }

    // ---- the /units view ----------------------------------------------------------------------------------------

    /// Refreshes the per-request counters of the published view (predictions, memory, recycles, queue).
    fn publish_counters(&self) {
        let mut v = self.view.lock().unwrap_or_else(|e| e.into_inner());
        if v.units.len() != self.units.len() {
            drop(v);
            return self.publish();
        }
        for (view, u) in v.units.iter_mut().zip(&self.units) {
            view.predictions = u.predictions;
            view.resident_bytes = u.rss;
            view.recycles = u.recycles;
        }
        v.queued = self.queue.iter().map(|w| w.jobs.len()).sum();
    }

    fn publish(&self) {
        let now = unix_now();
        let units = self
            .units
            .iter()
            .map(|u| {
                let rec = self.history.get(&self.digest, &u.unit.to_string(), &u.runtime);
                UnitView {
                    unit: u.unit.to_string(),
                    state: u.state,
                    reason: u.reason.clone(),
                    runtime: u.runtime.clone(),
                    crashes: rec.map(|r| r.total_crashes).unwrap_or(0),
                    crashes_by_exit: u.crashes_by_exit.clone(),
                    crash_level: rec
                        .map(|r| (r.bucket(now, self.cfg.forgive_every) * 100.0).round() / 100.0)
                        .unwrap_or(0.0),
                    last_exit: u.last_exit.as_ref().map(WorkerExit::summary),
                    stderr_tail: u.last_exit.as_ref().map(|e| e.stderr_tail.clone()).filter(|t| !t.is_empty()),
                    predictions: u.predictions,
                    resident_bytes: u.rss,
                    resident_after_warmup_bytes: u.rss_ready,
                    recycles: u.recycles,
                    restarts: u.restarts,
                    generations: u.generation,
                    pid: u.pid,
                    quarantined_until: rec
                        .and_then(|r| r.quarantined_until)
                        .filter(|&t| t > now && u.state == UnitState::Quarantined),
                    load_ms: u.load_ms,
                    warmup_ms: u.warmup_ms,
                    warmup: u.warmup.clone(),
                    precision: u.report.as_ref().map(|r| r.precision),
                    placement: u.report.as_ref().map(|r| r.placement.clone()).unwrap_or_default(),
                    deadline_ms: u.deadline_ms,
                }
            })
            .collect();
        let serving = self
            .workers
            .iter()
            .filter(|w| w.phase == Phase::Serving)
            .map(|w| w.unit_idx)
            .min()
            .map(|i| self.units[i].unit.to_string());
        let mut v = self.view.lock().unwrap_or_else(|e| e.into_inner());
        v.serving = serving;
        v.queued = self.queue.iter().map(|w| w.jobs.len()).sum();
        v.units = units;
    }
}

/// A job's stage timing: the worker's `infer`/`post`, and everything else since it was queued as `queue`.
fn job_timing(job: &PendingJob, now: Instant, worker: &StageTiming) -> StageTiming {
    let total_ms = (now - job.enqueued).as_secs_f64() * 1e3;
    StageTiming {
        tokenize_ms: 0.0,
        queue_ms: (total_ms - worker.infer_ms - worker.post_ms).max(0.0),
        infer_ms: worker.infer_ms,
        post_ms: worker.post_ms,
    }
}

/// (ms per padded token, fixed ms) from the warm-up shapes: the worst per-token cost, no fixed part (the floor
/// covers small batches).
fn watchdog_model(warmup: &[WarmupShape]) -> (f64, f64) {
    let per_token = warmup.iter().map(|s| s.ms / (s.batch.max(1) * s.seq.max(1)) as f64).fold(0.0f64, f64::max);
    (per_token, 0.0)
}

fn rss_bytes_of(pid: u32) -> Option<u64> {
    rss_bytes(Some(pid))
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn fmt_unix(t: f64) -> String {
    let secs = (t - unix_now()).max(0.0);
    format!("{:.0} s from now", secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_parses() {
        assert_eq!("process".parse::<Isolation>().unwrap(), Isolation::Process);
        assert_eq!("NONE".parse::<Isolation>().unwrap(), Isolation::None);
        assert!("thread".parse::<Isolation>().unwrap_err().contains("valid: process, none"));
    }

    #[test]
    fn watchdog_deadline_scales_with_the_batch_and_has_a_floor() {
        let warm = vec![WarmupShape { batch: 1, seq: 10, ms: 4.0 }, WarmupShape { batch: 32, seq: 16, ms: 60.0 }];
        let (per_token, fixed) = watchdog_model(&warm);
        assert!((per_token - 0.4).abs() < 1e-9);
        assert_eq!(fixed, 0.0);
        let cfg = SupervisorConfig { timeout_floor: Duration::from_millis(100), ..SupervisorConfig::default() };
        let a = Actor::deadline_for(&cfg, per_token, fixed, 1, 10);
        let b = Actor::deadline_for(&cfg, per_token, fixed, 64, 256);
        assert_eq!(a, Duration::from_millis(100));
        assert!(b > Duration::from_secs(100), "{b:?}");
        let fixed_cfg = SupervisorConfig { predict_timeout: Some(Duration::from_secs(3)), ..cfg };
        assert_eq!(Actor::deadline_for(&fixed_cfg, per_token, fixed, 64, 256), Duration::from_secs(3));
    }
}
