//! Table-driven tests of every policy, driving the core with events and a simulated clock: no process, no sleep.
//!
//! [`Sim`] plays the actor and the workers: it executes the core's effects (a spawn becomes a simulated worker,
//! a `Send` lands in that worker's inbox), answers what it is told to, and checks on every effect that a request
//! is answered exactly once.

mod crashes;
mod hangs;
mod recycling;
mod replicas;
mod retry;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bulkhead_core::{Device, EngineKind, Precision, RowKind, SessionReport, Unit};
use bulkhead_embed::StageTiming;

use super::{
    Answered, Core, CrashBook, Effect, Event, ExitCause, Job, KillReason, Now, PredictError, ProcStat, RequestId,
    Sample, StartError, Submitted, UnitInit, WaiterId, WorkerExit, WorkerId,
};
use crate::payload::{Answer, Payload};
use crate::protocol::{Request, Response, Signature, WarmupShape};
use crate::supervisor::config::{Isolation, SupervisorConfig};
use crate::supervisor::view::{ModelUnits, UnitState, UnitView};

pub(super) const ORT: Unit = Unit::ORT_CPU;
pub(super) const CANDLE: Unit = Unit::CANDLE_CPU;
pub(super) const CUDA: Unit = Unit { engine: EngineKind::Ort, device: Device::Cuda };

/// A simulated worker.
#[derive(Debug, Default)]
pub(super) struct SimWorker {
    pub unit: Option<Unit>,
    /// Spawned with the short warm-up of a replacement.
    pub quick: bool,
    /// Runs sent and not answered, oldest first.
    pub inbox: VecDeque<(u64, Payload, Vec<String>)>,
    pub shutdown_sent: bool,
    /// It said `Ready`.
    pub ready: bool,
    pub killed: Option<KillReason>,
    pub exited: bool,
    /// Predictions answered (what a fault rule's `after` counts).
    pub answered: u64,
}

/// The core plus a simulated actor, workers and clock.
pub(super) struct Sim {
    pub core: Core,
    t0: Instant,
    pub clock: Duration,
    unix0: f64,
    next_request: u64,
    next_waiter: u64,
    pub workers: BTreeMap<WorkerId, SimWorker>,
    /// Units whose spawns fail (the unit cannot run here).
    pub unavailable: Vec<Unit>,
    pub answers: BTreeMap<RequestId, Result<Answered, PredictError>>,
    pub ready: BTreeMap<WaiterId, Result<Unit, StartError>>,
    pub saves: usize,
    pub stopped: bool,
    /// Health probes are answered at once (the hang tests turn this off).
    pub answer_probes: bool,
}

/// The default settings of the tests: the shipped defaults.
pub(super) fn cfg() -> SupervisorConfig {
    SupervisorConfig::default()
}

impl Sim {
    pub fn new(chain: &[Unit], cfg: SupervisorConfig) -> Sim {
        Sim::build(chain, cfg, CrashBook::default(), &[])
    }

    pub fn with_history(chain: &[Unit], cfg: SupervisorConfig, history: CrashBook) -> Sim {
        Sim::build(chain, cfg, history, &[])
    }

    /// A chain where `unavailable` units cannot run (their spawns fail).
    pub fn with_unavailable(chain: &[Unit], cfg: SupervisorConfig, unavailable: &[Unit]) -> Sim {
        Sim::build(chain, cfg, CrashBook::default(), unavailable)
    }

    fn build(chain: &[Unit], cfg: SupervisorConfig, history: CrashBook, unavailable: &[Unit]) -> Sim {
        let t0 = Instant::now();
        let unix0 = 1_800_000_000.0;
        let units = chain.iter().map(|&unit| UnitInit { unit, runtime: format!("{:?} 1.0", unit.engine) }).collect();
        let core = Core::new("m", "digest", units, history, cfg, Now { at: t0, unix: unix0 });
        let mut sim = Sim {
            core,
            t0,
            clock: Duration::ZERO,
            unix0,
            next_request: 0,
            next_waiter: 0,
            workers: BTreeMap::new(),
            unavailable: unavailable.to_vec(),
            answers: BTreeMap::new(),
            ready: BTreeMap::new(),
            saves: 0,
            stopped: false,
            answer_probes: true,
        };
        sim.tick();
        sim
    }

    pub fn now(&self) -> Now {
        Now { at: self.t0 + self.clock, unix: self.unix0 + self.clock.as_secs_f64() }
    }

    /// Feeds one event and executes its effects, as the actor does.
    pub fn feed(&mut self, event: Event) {
        let mut pending = vec![event];
        while let Some(event) = pending.pop() {
            for effect in self.core.handle(self.now(), event) {
                if let Some(e) = self.execute(effect) {
                    pending.push(e);
                }
            }
        }
    }

    fn execute(&mut self, effect: Effect) -> Option<Event> {
        match effect {
            Effect::Spawn { worker, unit, quick, .. } => {
                if self.unavailable.contains(&unit) {
                    return Some(Event::SpawnFailed { worker, reason: format!("{unit} cannot run here") });
                }
                self.workers.insert(worker, SimWorker { unit: Some(unit), quick, ..SimWorker::default() });
                return Some(Event::Spawned { worker, pid: Some(10_000 + worker.0 as u32) });
            }
            Effect::Send { worker, request } => {
                let w = self.workers.get_mut(&worker).expect("sent to a worker that was spawned");
                assert!(!w.exited, "a request sent to a dead worker");
                match request {
                    Request::Run { id, payload: Payload::Probe, .. } if self.answer_probes => {
                        w.answered += 1;
                        let answer = Answer::Vectors(vec![vec![0.0]]);
                        let msg = Response::Answered { id, answer, timing: StageTiming::default(), rss_bytes: 0 };
                        return Some(Event::Message { worker, msg });
                    }
                    Request::Run { id, payload, texts, .. } => w.inbox.push_back((id, payload, texts)),
                    Request::Shutdown => w.shutdown_sent = true,
                }
            }
            Effect::Kill { worker, reason } => {
                let w = self.workers.get_mut(&worker).expect("killed a worker that was spawned");
                w.killed.get_or_insert(reason);
            }
            Effect::SaveHistory => self.saves += 1,
            Effect::Answer { request, result } => {
                let previous = self.answers.insert(request, result);
                assert!(previous.is_none(), "request {request:?} answered twice");
            }
            Effect::Ready { waiter, result } => {
                assert!(self.ready.insert(waiter, result).is_none(), "waiter answered twice");
            }
            Effect::Publish(_) => {}
            Effect::Stopped => self.stopped = true,
        }
        None
    }

    /// Advances the clock by `ms` in ticks of 25 ms (as the actor's timer does).
    pub fn advance(&mut self, ms: u64) {
        let mut left = ms;
        while left > 0 {
            let step = left.min(25);
            self.clock += Duration::from_millis(step);
            left -= step;
            self.tick();
        }
    }

    pub fn tick(&mut self) {
        self.feed(Event::Tick { samples: vec![], mem_available: None });
    }

    /// A tick carrying `/proc` samples (stopped, resident bytes; no CPU used).
    pub fn sample(&mut self, samples: &[(WorkerId, bool, u64)], mem_available: Option<u64>) {
        let samples: Vec<_> = samples.iter().map(|&(w, stopped, rss)| (w, stopped, rss, 0)).collect();
        self.sample_cpu(&samples, mem_available);
    }

    /// A tick carrying `/proc` samples (stopped, resident bytes, CPU ticks used so far).
    pub fn sample_cpu(&mut self, samples: &[(WorkerId, bool, u64, u64)], mem_available: Option<u64>) {
        let samples = samples
            .iter()
            .map(|&(worker, stopped, rss_bytes, cpu_ticks)| Sample {
                worker,
                stat: ProcStat { stopped, rss_bytes, cpu_ticks, data_bytes: 0 },
            })
            .collect();
        self.feed(Event::Tick { samples, mem_available });
    }

    /// Workers alive (spawned, not exited), oldest first.
    pub fn alive(&self) -> Vec<WorkerId> {
        self.workers.iter().filter(|(_, w)| !w.exited).map(|(&id, _)| id).collect()
    }

    /// The newest live worker.
    pub fn newest(&self) -> WorkerId {
        *self.alive().last().expect("a live worker")
    }

    pub fn spawned(&self) -> usize {
        self.workers.len()
    }

    /// The worker says `Loaded`, then `Ready` (warm-up: 2 ms for 1x16, 100 MiB resident).
    pub fn make_ready(&mut self, w: WorkerId) {
        let unit = self.workers[&w].unit.unwrap();
        let report = SessionReport {
            unit,
            runtime: "test".into(),
            model_file: "model".into(),
            precision: Precision::Fp32,
            placement: vec![],
            hidden_size: 4,
            notes: vec![],
            graph_cache: None,
        };
        self.feed(Event::Message { worker: w, msg: Response::Loaded { report: report.clone() } });
        let warmup = vec![WarmupShape { batch: 1, seq: 16, ms: 2.0 }, WarmupShape { batch: 32, seq: 16, ms: 20.0 }];
        let msg = Response::Ready { report, warmup, rss_bytes: 100 << 20, signature: Signature::default() };
        self.workers.get_mut(&w).unwrap().ready = true;
        self.feed(Event::Message { worker: w, msg });
    }

    /// Starts the newest worker: makes it ready.
    pub fn ready_newest(&mut self) -> WorkerId {
        let w = self.newest();
        self.make_ready(w);
        w
    }

    /// Submits single-row requests as one batch (one job each).
    pub fn submit(&mut self, n: usize) -> Vec<RequestId> {
        self.submit_texts(&vec![""; n])
    }

    /// Submits one single-row request per text, as one batch.
    pub fn submit_texts(&mut self, texts: &[&str]) -> Vec<RequestId> {
        let mut ids = vec![];
        let jobs = texts
            .iter()
            .map(|t| {
                let id = RequestId(self.next_request);
                self.next_request += 1;
                ids.push(id);
                let job = Job::tokens(vec![vec![1; 16]], vec![t.to_string()]);
                Submitted { id, job, enqueued: self.now().at }
            })
            .collect();
        self.feed(Event::Submit(jobs));
        ids
    }

    pub fn submit_job(&mut self, job: Job) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.feed(Event::Submit(vec![Submitted { id, job, enqueued: self.now().at }]));
        id
    }

    pub fn wait_ready(&mut self) -> WaiterId {
        let id = WaiterId(self.next_waiter);
        self.next_waiter += 1;
        self.feed(Event::WaitReady(id));
        id
    }

    /// Answers the oldest run of worker `w` (one vector per row). Returns false when it holds nothing.
    pub fn answer_next(&mut self, w: WorkerId) -> bool {
        self.answer_next_with(w, 0)
    }

    /// Answers the oldest run of worker `w`, reporting `rss` bytes resident (0: not reported).
    pub fn answer_next_with(&mut self, w: WorkerId, rss: u64) -> bool {
        let sw = self.workers.get_mut(&w).unwrap();
        let Some((id, payload, _)) = sw.inbox.pop_front() else { return false };
        sw.answered += 1;
        let answer = match payload {
            Payload::Rows(rows) if rows.iter().any(|r| r.kind() == RowKind::Pair) => {
                Answer::Scores(rows.iter().map(|_| vec![0.5]).collect())
            }
            Payload::Rows(rows) => Answer::Vectors(rows.iter().map(|r| vec![r.len() as f32]).collect()),
            Payload::Probe => Answer::Vectors(vec![vec![0.0]]),
            Payload::Tensors(t) => Answer::Tensors(t),
            Payload::Segment(_) => Answer::Segment(bulkhead_segment::SegmentOutput::NeedImage),
            Payload::Audio(a) => Answer::Transcription(crate::audio::Transcript {
                text: format!("{} samples", a.samples.len()),
                duration_s: a.duration_s(),
                language: a.options.language,
                segments: vec![],
                timing: Default::default(),
            }),
        };
        let msg = Response::Answered { id, answer, timing: StageTiming::default(), rss_bytes: rss };
        self.feed(Event::Message { worker: w, msg });
        true
    }

    /// Answers everything worker `w` holds, repeatedly (pipelined work arrives as earlier work is answered).
    pub fn drain(&mut self, w: WorkerId) {
        while self.answer_next(w) {}
    }

    /// Worker `w` dies with `cause` (a signal for everything but a clean exit).
    pub fn die(&mut self, w: WorkerId, cause: ExitCause) {
        let signal = match &cause {
            ExitCause::Clean => None,
            ExitCause::Crash => Some("SIGSEGV"),
            _ => Some("SIGKILL"),
        };
        let exit = WorkerExit {
            code: signal.is_none().then_some(0),
            signal: signal.map(str::to_string),
            stderr_tail: String::new(),
            cause,
        };
        self.exit(w, exit);
    }

    pub fn exit(&mut self, w: WorkerId, exit: WorkerExit) {
        let sw = self.workers.get_mut(&w).unwrap();
        assert!(!sw.exited, "a worker exits once");
        sw.exited = true;
        sw.inbox.clear();
        self.feed(Event::Exited { worker: w, exit });
    }

    /// Every worker that was killed or told to stop exits (as the real ones do at once).
    pub fn reap(&mut self) {
        let gone: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.exited && (w.killed.is_some() || w.shutdown_sent))
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            let w = &self.workers[&id];
            let cause = match &w.killed {
                Some(reason) => ExitCause::Killed { reason: reason.clone() },
                None => ExitCause::Clean,
            };
            self.die(id, cause);
        }
    }

    pub fn view(&self) -> ModelUnits {
        self.core.view(self.now(), Isolation::Process)
    }

    pub fn unit(&self, unit: Unit) -> UnitView {
        self.view().units.into_iter().find(|u| u.unit == unit.to_string()).expect("a unit of the chain")
    }

    pub fn state(&self, unit: Unit) -> UnitState {
        self.unit(unit).state
    }

    pub fn ok(&self, id: RequestId) -> bool {
        matches!(self.answers.get(&id), Some(Ok(_)))
    }

    pub fn all_ok(&self, ids: &[RequestId]) -> bool {
        ids.iter().all(|&id| self.ok(id))
    }

    pub fn error(&self, id: RequestId) -> Option<&PredictError> {
        self.answers.get(&id).and_then(|r| r.as_ref().err())
    }

    /// Which unit answered request `id`.
    pub fn answered_by(&self, id: RequestId) -> Option<Unit> {
        self.answers.get(&id).and_then(|r| r.as_ref().ok()).map(|a| a.unit)
    }
}

#[test]
fn a_replacement_of_a_unit_that_served_warms_up_quickly() {
    let mut sim = Sim::new(&[ORT], cfg());
    let first = sim.newest();
    assert!(!sim.workers[&first].quick, "the first worker of a unit gets the full warm-up");
    sim.die(first, ExitCause::Crash);
    sim.advance(100);
    assert!(!sim.workers[&sim.newest()].quick, "a unit that never served still gets the full warm-up");
    let w = sim.ready_newest();
    sim.die(w, ExitCause::External { sender: None });
    assert!(sim.workers[&sim.newest()].quick, "a replacement after it served: one iteration per shape");
}

#[test]
fn a_request_is_answered_exactly_once_through_start_serve_and_shutdown() {
    let mut sim = Sim::new(&[ORT], cfg());
    let waiter = sim.wait_ready();
    let w = sim.ready_newest();
    assert!(matches!(sim.ready.get(&waiter), Some(Ok(ORT))));
    let ids = sim.submit(5);
    sim.drain(w);
    assert!(sim.all_ok(&ids));
    let late = sim.submit(1);
    sim.feed(Event::Shutdown);
    assert!(!sim.stopped, "shutdown waits for the queued request");
    sim.drain(w);
    assert!(sim.stopped && sim.ok(late[0]));
    assert!(sim.workers[&w].shutdown_sent);
    let after = sim.submit(1);
    assert_eq!(sim.error(after[0]), Some(&PredictError::ShuttingDown));
}
