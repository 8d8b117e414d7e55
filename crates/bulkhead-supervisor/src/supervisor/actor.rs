//! The actor: the one task per model that runs the loop around the policy core. It turns commands, worker events
//! and a 25 ms tick (with `/proc` samples) into [`Event`]s, and executes the [`Effect`]s the core returns: spawn
//! and talk to worker links, kill, write the history, answer callers, publish the view. No policy lives here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead_core::{Availability, ModelFiles, Unit};
use bulkhead_embed::Engines;
use tokio::sync::{mpsc, oneshot};

use super::config::{Isolation, SupervisorConfig};
use super::policy::{Core, Effect, Event, Health, Now, Publish, RequestId, Sample, Submitted, WaiterId, WorkerId};
use super::view::ModelUnits;
use super::{Answered, Job, PredictError, StartError};
use crate::client::ceiling::is_worker_group;
use crate::client::proc::{mem_available, read_stat, Cgroup};
use crate::client::{EventSink, WorkerEvent, WorkerLink, WorkerSpec};
use crate::history::{save_book, unix_now};

/// How often the tick runs (watchdog, timers, draining, probes, samples).
const TICK: Duration = Duration::from_millis(25);
/// How often `MemAvailable` is read.
const MEMINFO_EVERY: Duration = Duration::from_secs(1);

/// The time of both clocks: the only place the supervisor reads them for the policy core.
pub(super) fn now() -> Now {
    Now { at: Instant::now(), unix: unix_now() }
}

/// A command from a [`Supervisor`](super::Supervisor) handle.
pub(super) enum Cmd {
    Predict(Vec<(Job, oneshot::Sender<Result<Answered, PredictError>>)>, Instant),
    WaitReady(oneshot::Sender<Result<Unit, StartError>>),
    Shutdown(oneshot::Sender<()>),
}

/// What the handles read without waiting on the actor.
pub(super) struct Published {
    pub view: Mutex<ModelUnits>,
    pub health: Mutex<Health>,
    pub signature: Mutex<crate::protocol::Signature>,
}

pub(super) struct Actor {
    pub core: Core,
    pub model: ModelFiles,
    pub engines: Arc<Engines>,
    pub cfg: SupervisorConfig,
    pub published: Arc<Published>,
    /// Where the crash records are written (`None`: kept in memory).
    history_file: Option<PathBuf>,
    links: HashMap<WorkerId, WorkerLink>,
    replies: HashMap<RequestId, oneshot::Sender<Result<Answered, PredictError>>>,
    waiters: HashMap<WaiterId, oneshot::Sender<Result<Unit, StartError>>>,
    stop_waiters: Vec<oneshot::Sender<()>>,
    /// Every link's sink feeds this channel, tagged with its worker's id: the loop reads worker events here.
    events_tx: mpsc::UnboundedSender<(u64, WorkerEvent)>,
    next_request: u64,
    next_waiter: u64,
    last_meminfo: Option<Instant>,
    stopped: bool,
}

impl Actor {
    pub fn new(
        core: Core,
        model: ModelFiles,
        engines: Arc<Engines>,
        cfg: SupervisorConfig,
        published: Arc<Published>,
        history_file: Option<PathBuf>,
        events_tx: mpsc::UnboundedSender<(u64, WorkerEvent)>,
    ) -> Actor {
        Actor {
            core,
            model,
            engines,
            cfg,
            published,
            history_file,
            links: HashMap::new(),
            replies: HashMap::new(),
            waiters: HashMap::new(),
            stop_waiters: vec![],
            events_tx,
            next_request: 0,
            next_waiter: 0,
            last_meminfo: None,
            stopped: false,
        }
    }

    pub async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
        mut events: mpsc::UnboundedReceiver<(u64, WorkerEvent)>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.feed(Event::Tick { samples: vec![], mem_available: mem_available() });
        let mut cmds_open = true;
        while !self.stopped {
            let event = tokio::select! {
                cmd = cmds.recv(), if cmds_open => match cmd {
                    Some(c) => self.command(c),
                    None => {
                        // Every handle dropped: stop the workers.
                        cmds_open = false;
                        Event::Shutdown
                    }
                },
                Some((id, ev)) = events.recv() => match (WorkerId(id), ev) {
                    (id, WorkerEvent::Message(msg)) => Event::Message { worker: id, msg },
                    (id, WorkerEvent::Exited(exit)) => {
                        self.links.remove(&id);
                        Event::Exited { worker: id, exit }
                    }
                },
                _ = tick.tick() => self.sample(),
            };
            self.feed(event);
        }
        self.finish(events).await;
    }

    /// Turns a command into an event (keeping the reply channels here, by id).
    fn command(&mut self, cmd: Cmd) -> Event {
        match cmd {
            Cmd::Predict(jobs, enqueued) => Event::Submit(
                jobs.into_iter()
                    .map(|(job, reply)| {
                        let id = RequestId(self.next_request);
                        self.next_request += 1;
                        self.replies.insert(id, reply);
                        Submitted { id, job, enqueued }
                    })
                    .collect(),
            ),
            Cmd::WaitReady(reply) => {
                let id = WaiterId(self.next_waiter);
                self.next_waiter += 1;
                self.waiters.insert(id, reply);
                Event::WaitReady(id)
            }
            Cmd::Shutdown(reply) => {
                self.stop_waiters.push(reply);
                Event::Shutdown
            }
        }
    }

    /// The tick's samples: `/proc/PID/stat` of every worker process and, once a second, the memory a new worker
    /// could use: `MemAvailable`, or less where the workers' memory cgroups (a container's limit) leave less.
    fn sample(&mut self) -> Event {
        let samples = self
            .links
            .iter()
            .filter_map(|(&worker, link)| Some(Sample { worker, stat: read_stat(link.pid?)? }))
            .collect();
        let now = Instant::now();
        let mem = if self.last_meminfo.is_none_or(|t| now - t >= MEMINFO_EVERY) {
            self.last_meminfo = Some(now);
            let cgroups = self.links.values().filter_map(|l| {
                let group = Cgroup::of(l.pid?)?;
                // A worker's own ceiling group bounds that worker alone: a new worker gets a fresh one.
                let group = if is_worker_group(group.dir()) { group.parent()? } else { group };
                group.headroom()
            });
            match (mem_available(), cgroups.min()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        } else {
            None
        };
        Event::Tick { samples, mem_available: mem }
    }

    /// Hands one event to the core and executes its effects (which may produce more events: spawn results).
    fn feed(&mut self, event: Event) {
        let mut pending = vec![event];
        let mut publish = None;
        while let Some(event) = pending.pop() {
            for effect in self.core.handle(now(), event) {
                match effect {
                    Effect::Publish(p) => {
                        publish = Some(match (publish, p) {
                            (Some(Publish::Full), _) | (_, Publish::Full) => Publish::Full,
                            _ => Publish::Counters,
                        });
                        if p == Publish::Full {
                            // Published at once: a waiter woken next may read the view.
                            self.publish(Publish::Full);
                        }
                    }
                    other => {
                        if let Some(follow_up) = self.execute(other) {
                            pending.push(follow_up);
                        }
                    }
                }
            }
        }
        if publish == Some(Publish::Counters) {
            self.publish(Publish::Counters);
        }
        *self.published.health.lock().unwrap_or_else(|e| e.into_inner()) = self.core.health();
    }

    fn publish(&self, what: Publish) {
        let mut view = self.published.view.lock().unwrap_or_else(|e| e.into_inner());
        match what {
            Publish::Full => {
                *view = self.core.view(now(), self.cfg.isolation);
                let sig = self.core.signature();
                if !sig.inputs.is_empty() || !sig.outputs.is_empty() {
                    *self.published.signature.lock().unwrap_or_else(|e| e.into_inner()) = sig.clone();
                }
            }
            Publish::Counters => self.core.counters(&mut view),
        }
    }

    /// Executes one effect; a spawn reports back as an event.
    fn execute(&mut self, effect: Effect) -> Option<Event> {
        match effect {
            Effect::Spawn { worker, unit, generation, threads, quick } => {
                let iterations = if quick { 1 } else { crate::worker::WARMUP_ITERATIONS };
                Some(self.spawn(worker, unit, generation, threads, iterations))
            }
            Effect::Send { worker, request } => {
                if let Some(link) = self.links.get(&worker) {
                    link.send(request);
                }
                None
            }
            Effect::Kill { worker, reason } => {
                if let Some(link) = self.links.get(&worker) {
                    link.kill(reason);
                }
                None
            }
            Effect::SaveHistory => {
                if let Some(path) = &self.history_file {
                    save_book(path, self.core.history());
                }
                None
            }
            Effect::Answer { request, result } => {
                if let Some(reply) = self.replies.remove(&request) {
                    let _ = reply.send(result);
                }
                None
            }
            Effect::Ready { waiter, result } => {
                if let Some(reply) = self.waiters.remove(&waiter) {
                    let _ = reply.send(result);
                }
                None
            }
            Effect::Publish(p) => {
                self.publish(p);
                None
            }
            Effect::Stopped => {
                self.stopped = true;
                None
            }
        }
    }

    /// Starts a worker: checks that the unit can run here, spawns the process (or thread), and forwards its events.
    fn spawn(
        &mut self,
        worker: WorkerId,
        unit: Unit,
        generation: u32,
        threads: Option<usize>,
        iterations: usize,
    ) -> Event {
        if let Availability::NotCompiled(reason) | Availability::Unusable(reason) = self.engines.availability(&unit) {
            return Event::SpawnFailed { worker, reason };
        }
        // The link feeds the loop's channel itself, tagged with the worker's id: no task in between.
        let sink = EventSink::new(worker.0, self.events_tx.clone());
        let link = match self.cfg.isolation {
            Isolation::Process => {
                let spec = WorkerSpec {
                    command: self.cfg.worker_command.clone(),
                    model: self.model.clone(),
                    unit,
                    generation,
                    faults: self.cfg.faults.clone(),
                    threads,
                    warmup_iterations: iterations,
                    memory: self.cfg.worker_memory.clone(),
                };
                match WorkerLink::start(&spec, sink) {
                    Ok(l) => l,
                    Err(e) => {
                        let reason = format!(
                            "cannot start a worker process ({}): {e}",
                            self.cfg.worker_command.program.display()
                        );
                        tracing::error!(%unit, "{reason}");
                        return Event::SpawnFailed { worker, reason };
                    }
                }
            }
            Isolation::None => WorkerLink::in_process(self.engines.clone(), &self.model, unit, sink),
        };
        let pid = link.pid;
        tracing::debug!(%unit, generation, ?pid, "worker process started");
        self.links.insert(worker, link);
        Event::Spawned { worker, pid }
    }

    /// After the core stopped: gives the workers a moment to exit cleanly, then drops the links (which kill what is
    /// left), and answers whoever asked for the shutdown.
    async fn finish(mut self, mut events: mpsc::UnboundedReceiver<(u64, WorkerEvent)>) {
        for (_, reply) in self.waiters.drain() {
            let reasons = "the supervisor stopped".to_string();
            let _ = reply.send(Err(StartError { model: self.model.name.clone(), reasons }));
        }
        for (_, reply) in self.replies.drain() {
            let _ = reply.send(Err(PredictError::ShuttingDown));
        }
        let mut links = std::mem::take(&mut self.links);
        let stop_waiters = std::mem::take(&mut self.stop_waiters);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while !links.is_empty() {
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Ok(Some((id, WorkerEvent::Exited(_)))) => {
                        links.remove(&WorkerId(id));
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            // What is left is killed; its reaper still removes its memory cgroup before reporting the exit.
            let mut left: std::collections::HashSet<u64> = links.keys().map(|id| id.0).collect();
            drop(links);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while !left.is_empty() {
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Ok(Some((id, WorkerEvent::Exited(_)))) => {
                        left.remove(&id);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            for reply in stop_waiters {
                let _ = reply.send(());
            }
        });
    }
}
