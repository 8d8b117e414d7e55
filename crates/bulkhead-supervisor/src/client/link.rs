//! Worker links: a worker process (own process group, stderr tail, handshake check, kill-and-wait on drop, exit
//! status turned into a typed [`WorkerExit`] with its cause) or an in-process worker thread, behind one interface
//! of [`Request`]s in and [`WorkerEvent`]s out. A link delivers its events straight into an [`EventSink`]: the
//! supervisor's actor gives every link a sink on its own channel, so no task relays them.

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead_core::{ModelFiles, Unit};
use bulkhead_embed::Engines;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, ChildStdout};
use tokio::sync::mpsc;

use super::ceiling::{allocation_failed, MemoryCeiling, WorkerCeiling};
use super::exit::{signal_name, DeathFacts, ExitCause, KillReason, WorkerExit};
use super::proc::OomWatch;
use crate::faults::{self, FaultRule, WorkerFaults};
use crate::protocol::{
    read_frame_async, write_frame_async, FrameError, LoadFailureKind, Request, Response, CRATE_VERSION,
    PROTOCOL_VERSION,
};
use crate::worker::{signals, Runner, WorkerArgs};

/// Bytes of stderr kept per worker.
pub const STDERR_TAIL_BYTES: usize = 8 << 10;

/// What a worker link reports.
#[derive(Debug)]
pub enum WorkerEvent {
    /// A protocol message (the first one is always a checked `Hello`).
    Message(Response),
    /// The worker is gone; always the last event.
    Exited(WorkerExit),
}

/// Where a link delivers its events: a channel that many links may share, each event tagged with its link's key.
#[derive(Debug, Clone)]
pub struct EventSink {
    key: u64,
    tx: mpsc::UnboundedSender<(u64, WorkerEvent)>,
}

impl EventSink {
    /// Events of one link, tagged `key`, into `tx`.
    pub fn new(key: u64, tx: mpsc::UnboundedSender<(u64, WorkerEvent)>) -> EventSink {
        EventSink { key, tx }
    }

    /// A sink with a channel of its own (key 0) and the channel's receiver: one link read step by step.
    pub fn channel() -> (EventSink, mpsc::UnboundedReceiver<(u64, WorkerEvent)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (EventSink { key: 0, tx }, rx)
    }

    /// Delivers one event; false once nobody listens.
    fn send(&self, event: WorkerEvent) -> bool {
        self.tx.send((self.key, event)).is_ok()
    }
}

/// The program that runs workers: `program args... worker-args...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerCommand {
    /// The executable (default: this executable).
    pub program: PathBuf,
    /// Arguments before the worker arguments (default: `["worker"]`).
    pub args: Vec<String>,
}

impl Default for WorkerCommand {
    fn default() -> Self {
        WorkerCommand {
            program: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("bulkhead")),
            args: vec!["worker".into()],
        }
    }
}

/// Everything needed to start one worker process.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// The program.
    pub command: WorkerCommand,
    /// The model.
    pub model: ModelFiles,
    /// The unit to load it on.
    pub unit: Unit,
    /// Which lifetime of this unit the worker is (for fault rules).
    pub generation: u32,
    /// Fault rules (`BULKHEAD_FAULTS`), handed to the worker explicitly.
    pub faults: Vec<FaultRule>,
    /// Intra-op threads of the worker's engine (`None`: the engine's default).
    pub threads: Option<usize>,
    /// Warm-up iterations per shape (`crate::worker::WARMUP_ITERATIONS` by default; 1 for a quick replacement).
    pub warmup_iterations: usize,
    /// A memory ceiling for the worker process (`--worker-memory-mb`), or none.
    pub memory: Option<MemoryCeiling>,
}

/// Tail ring buffer of a worker's stderr.
#[derive(Debug, Default)]
struct Tail(VecDeque<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend(bytes);
        let excess = self.0.len().saturating_sub(STDERR_TAIL_BYTES);
        self.0.drain(..excess);
    }
    fn text(&self) -> String {
        let (a, b) = self.0.as_slices();
        String::from_utf8_lossy(&[a, b].concat()).into_owned()
    }
}

/// What the link's tasks share: whether the process still runs, why the supervisor killed it, its stderr tail.
#[derive(Debug, Default)]
struct Shared {
    alive: AtomicBool,
    killed: Mutex<Option<KillReason>>,
    tail: Mutex<Tail>,
}

impl Shared {
    fn kill(&self, pid: Option<u32>, reason: KillReason) {
        self.killed.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(reason);
        kill_group(pid, &self.alive);
    }
    fn tail(&self) -> String {
        self.tail.lock().unwrap_or_else(|e| e.into_inner()).text()
    }
}

/// One live worker (process or thread). Its events (ending with exactly one `Exited`) go to the [`EventSink`] it
/// was started with.
pub struct WorkerLink {
    /// Process id (`None` in-process).
    pub pid: Option<u32>,
    requests: mpsc::UnboundedSender<Request>,
    shared: Arc<Shared>,
}

impl WorkerLink {
    /// Spawns a worker process for `unit` with the engine's default threads.
    pub fn spawn(
        cmd: &WorkerCommand,
        model: &ModelFiles,
        unit: Unit,
        generation: u32,
        rules: &[FaultRule],
        events: EventSink,
    ) -> std::io::Result<WorkerLink> {
        let spec = WorkerSpec {
            command: cmd.clone(),
            model: model.clone(),
            unit,
            generation,
            faults: rules.to_vec(),
            threads: None,
            warmup_iterations: crate::worker::WARMUP_ITERATIONS,
            memory: None,
        };
        WorkerLink::start(&spec, events)
    }

    /// Spawns the worker process `spec` describes; its events go to `events`.
    pub fn start(spec: &WorkerSpec, events: EventSink) -> std::io::Result<WorkerLink> {
        let args = WorkerArgs {
            unit: spec.unit,
            model: spec.model.clone(),
            generation: spec.generation,
            parent_pid: Some(std::process::id()),
            threads: spec.threads,
            warmup_iterations: spec.warmup_iterations,
        };
        let mut cmd = tokio::process::Command::new(&spec.command.program);
        cmd.args(&spec.command.args)
            .args(args.to_args())
            .env(faults::FAULTS_ENV, faults::to_env_value(&spec.faults))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(t) = spec.threads {
            // candle's CPU kernels run on rayon's pool.
            cmd.env("RAYON_NUM_THREADS", t.to_string());
        }
        let mut ceiling = spec.memory.as_ref().map(WorkerCeiling::prepare);
        if let Some(c) = &ceiling {
            c.apply(&mut cmd);
        }
        let spawned = cmd.spawn();
        if let Some(c) = &mut ceiling {
            c.spawned();
        }
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                if let Some(c) = ceiling {
                    tokio::spawn(c.remove());
                }
                return Err(e);
            }
        };
        let pid = child.id();
        let (mut stdin, stdout, stderr) = (
            child.stdin.take().expect("piped"),
            child.stdout.take().expect("piped"),
            child.stderr.take().expect("piped"),
        );
        let (req_tx, mut req_rx) = mpsc::unbounded_channel::<Request>();
        let shared = Arc::new(Shared { alive: AtomicBool::new(true), ..Shared::default() });
        tokio::spawn(async move {
            while let Some(req) = req_rx.recv().await {
                if write_frame_async(&mut stdin, &req).await.is_err() {
                    break;
                }
            }
        });
        let label = format!("{}#{}", spec.unit, spec.generation);
        let stderr_task = tokio::spawn(read_stderr(stderr, shared.clone(), label));
        let reaper = Reaper { child, pid, ceiling, shared: shared.clone(), events };
        tokio::spawn(reaper.run(stdout, stderr_task));
        Ok(WorkerLink { pid, requests: req_tx, shared })
    }

    /// Runs the worker on a thread of this process (`--isolation none`): same messages, no fault injection, no
    /// crash containment.
    pub fn in_process(engines: Arc<Engines>, model: &ModelFiles, unit: Unit, events: EventSink) -> WorkerLink {
        let (req_tx, mut req_rx) = mpsc::unbounded_channel::<Request>();
        let shared = Arc::new(Shared { alive: AtomicBool::new(true), ..Shared::default() });
        let model = model.clone();
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new().name(format!("bulkhead-{unit}")).spawn(move || {
            let send = |m: Response| events.send(WorkerEvent::Message(m));
            send(Response::Hello {
                protocol: PROTOCOL_VERSION,
                version: CRATE_VERSION.into(),
                pid: std::process::id(),
            });
            let iterations = crate::worker::WARMUP_ITERATIONS;
            let loaded = Runner::load(&engines, &model, &unit, WorkerFaults::default(), iterations, |r| {
                send(Response::Loaded { report: r.clone() });
            });
            let code = match loaded {
                Err(f) => {
                    send(f.message());
                    crate::worker::EXIT_LOAD_FAILED
                }
                Ok((mut runner, warmup)) => {
                    send(runner.ready(warmup, 0));
                    while let Some(Request::Run { id, payload, texts, .. }) = req_rx.blocking_recv() {
                        if !send(runner.run(id, &payload, &texts)) {
                            break;
                        }
                    }
                    0
                }
            };
            thread_shared.alive.store(false, Ordering::SeqCst);
            let facts = DeathFacts { code: Some(code), ..DeathFacts::default() };
            events.send(WorkerEvent::Exited(WorkerExit {
                code: Some(code),
                cause: facts.cause(),
                ..WorkerExit::default()
            }));
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start an in-process worker thread: {e}");
        }
        WorkerLink { pid: None, requests: req_tx, shared }
    }

    /// Queues a request (a dead worker's requests are dropped; its `Exited` event follows).
    pub fn send(&self, req: Request) {
        let _ = self.requests.send(req);
    }

    /// SIGKILLs the worker's process group, recording why (the first reason wins).
    pub fn kill(&self, reason: KillReason) {
        self.shared.kill(self.pid, reason);
    }

    /// The current stderr tail.
    pub fn stderr_tail(&self) -> String {
        self.shared.tail()
    }
}

impl Drop for WorkerLink {
    fn drop(&mut self) {
        // Kill-and-wait: the reaper task waits for the status; the group kill also ends grandchildren.
        kill_group(self.pid, &self.shared.alive);
    }
}

async fn read_stderr(mut stderr: ChildStderr, shared: Arc<Shared>, label: String) {
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        for line in String::from_utf8_lossy(&buf[..n]).lines() {
            tracing::debug!(target: "bulkhead::worker", "[{label}] {line}");
        }
        shared.tail.lock().unwrap_or_else(|e| e.into_inner()).push(&buf[..n]);
    }
}

/// Checks the first frame: a `Hello` of this protocol and this build. `Err` carries what to report.
fn check_hello(msg: &Response) -> Result<(), KillReason> {
    match msg {
        Response::Hello { protocol, version, .. } if *protocol == PROTOCOL_VERSION && version == CRATE_VERSION => {
            Ok(())
        }
        Response::Hello { protocol, version, .. } => Err(KillReason::Handshake(format!(
            "handshake: the worker speaks protocol {protocol} of bulkhead {version}, expected protocol \
             {PROTOCOL_VERSION} of {CRATE_VERSION} (is the worker command the same build?)"
        ))),
        other => Err(KillReason::Protocol(format!("protocol error: the first message was not Hello but {other:?}"))),
    }
}

/// What waits for a worker process: it reads its frames, then reaps it and sends its typed exit.
struct Reaper {
    child: Child,
    pid: Option<u32>,
    /// The worker's memory ceiling (its cgroup is removed once it is reaped).
    ceiling: Option<WorkerCeiling>,
    shared: Arc<Shared>,
    events: EventSink,
}

impl Reaper {
    /// Reads frames until the pipe closes, then waits for the process and sends its typed exit.
    async fn run(self, stdout: ChildStdout, stderr_task: tokio::task::JoinHandle<()>) {
        let Reaper { child, pid, ceiling, shared, events } = self;
        let exit = reap(child, pid, stdout, stderr_task, &shared, &events, ceiling.as_ref()).await;
        if let Some(c) = ceiling {
            c.remove().await;
        }
        events.send(WorkerEvent::Exited(exit));
    }
}

async fn reap(
    mut child: Child,
    pid: Option<u32>,
    mut stdout: ChildStdout,
    stderr_task: tokio::task::JoinHandle<()>,
    shared: &Shared,
    events: &EventSink,
    ceiling: Option<&WorkerCeiling>,
) -> WorkerExit {
    let mut oom: Option<OomWatch> = None;
    let mut greeted = false;
    loop {
        match read_frame_async::<Response>(&mut stdout).await {
            Ok(msg) if !greeted => {
                greeted = true;
                if let Err(reason) = check_hello(&msg) {
                    // Reported as a load failure of the unit: a worker of another build cannot serve here.
                    events.send(WorkerEvent::Message(Response::LoadFailed {
                        kind: LoadFailureKind::Setup,
                        reason: reason.to_string(),
                    }));
                    shared.kill(pid, reason);
                    break;
                }
                // The worker has exec'd and settled in its cgroup: remember its OOM-kill count now.
                oom = pid.and_then(OomWatch::of);
                events.send(WorkerEvent::Message(msg));
            }
            Ok(msg) => {
                events.send(WorkerEvent::Message(msg));
            }
            Err(FrameError::Closed) => break,
            Err(e) => {
                shared.kill(pid, KillReason::Protocol(format!("protocol error: {e}")));
                break;
            }
        }
    }
    // The pipe closed: the worker is exiting (or closed fd 1 itself; give it a moment, then kill).
    let status = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(s) => s,
        Err(_) => {
            kill_group(pid, &shared.alive);
            child.wait().await
        }
    };
    shared.alive.store(false, Ordering::SeqCst);
    let _ = tokio::time::timeout(Duration::from_secs(2), stderr_task).await;
    let stderr_tail = shared.tail();
    let mut facts = DeathFacts {
        killed: shared.killed.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        sender: signals::sender_of(&stderr_tail),
        ..DeathFacts::default()
    };
    let mut exit = WorkerExit { stderr_tail, ..WorkerExit::default() };
    match status {
        Ok(s) => {
            facts.code = s.code();
            facts.signal = s.signal();
            exit.code = s.code();
            exit.signal = s.signal().map(signal_name);
        }
        Err(e) => exit.stderr_tail.push_str(&format!("\n(wait failed: {e})")),
    }
    facts.oom_killed = facts.signal == Some(libc::SIGKILL)
        && (ceiling.is_some_and(WorkerCeiling::oom_killed) || oom.as_ref().is_some_and(OomWatch::fired));
    facts.alloc_failed = allocation_failed(&exit.stderr_tail);
    exit.cause = facts.cause();
    if exit.cause == ExitCause::OutOfMemory {
        let by = ceiling.map_or("the machine's memory", WorkerCeiling::mechanism);
        tracing::debug!("out of memory ({by}); OOM kill read from {:?}", oom.as_ref().and_then(OomWatch::cgroup));
    }
    exit
}

fn kill_group(pid: Option<u32>, alive: &AtomicBool) {
    if let Some(pid) = pid {
        if alive.load(Ordering::SeqCst) && pid > 0 {
            // SAFETY: kill(2) with a negative pid signals the process group the worker leads.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut t = Tail::default();
        t.push(&vec![b'a'; STDERR_TAIL_BYTES]);
        t.push(b"END");
        assert_eq!(t.0.len(), STDERR_TAIL_BYTES);
        assert!(t.text().ends_with("aEND"));
    }

    pub(crate) fn any_model() -> ModelFiles {
        serde_json::from_value(serde_json::json!({
            "name": "m", "source": "/m", "config": null, "tokenizer": null, "safetensors": null, "onnx": "/m/model.onnx",
            "pooling": "mean", "normalize": true, "max_seq_length": 256, "pad_token_id": 0,
            "architecture": null, "model_type": null
        }))
        .unwrap()
    }

    /// A stand-in worker: `sh -c SCRIPT` (it ignores the worker arguments).
    fn sh(script: &str) -> WorkerCommand {
        WorkerCommand { program: "/bin/sh".into(), args: vec!["-c".into(), script.into(), "sh".into()] }
    }

    /// Starts `cmd` as a worker with a sink of its own.
    fn spawn(cmd: &WorkerCommand) -> (WorkerLink, mpsc::UnboundedReceiver<(u64, WorkerEvent)>) {
        let (sink, events) = EventSink::channel();
        (WorkerLink::spawn(cmd, &any_model(), Unit::ORT_CPU, 0, &[], sink).unwrap(), events)
    }

    async fn exit_of(
        (link, mut events): (WorkerLink, mpsc::UnboundedReceiver<(u64, WorkerEvent)>),
    ) -> (Vec<Response>, WorkerExit) {
        let mut messages = vec![];
        loop {
            match events.recv().await {
                Some((_, WorkerEvent::Message(m))) => messages.push(m),
                Some((_, WorkerEvent::Exited(exit))) => {
                    drop(link);
                    return (messages, exit);
                }
                None => panic!("the link ended without an exit"),
            }
        }
    }

    #[tokio::test]
    async fn a_dead_process_becomes_a_typed_exit_with_its_cause() {
        let (_, exit) = exit_of(spawn(&sh("echo boom >&2; kill -SEGV $$"))).await;
        assert_eq!(exit.signal.as_deref(), Some("SIGSEGV"), "{exit:?}");
        assert!(exit.stderr_tail.contains("boom"), "{exit:?}");
        // The shell installed no marker: a SIGSEGV without one is the worker's own crash.
        assert_eq!(exit.cause, ExitCause::Crash);

        let link = spawn(&sh("exec sleep 30"));
        link.0.kill(KillReason::Watchdog("watchdog: test".into()));
        let (_, exit) = exit_of(link).await;
        assert_eq!(exit.signal.as_deref(), Some("SIGKILL"));
        assert_eq!(exit.cause.label(), "hang", "{exit:?}");

        let link = spawn(&sh("exec sleep 30"));
        let pid = link.0.pid.unwrap() as i32;
        // SAFETY: signalling the child started above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let (_, exit) = exit_of(link).await;
        assert_eq!(exit.cause, ExitCause::External { sender: None }, "a kill -9 from outside: {exit:?}");
    }

    #[tokio::test]
    async fn a_peer_that_does_not_say_hello_is_refused() {
        // Four bytes of length and garbage: not a Hello frame.
        let (messages, exit) = exit_of(spawn(&sh("printf '\\003\\000\\000\\000abc'; exec sleep 30"))).await;
        assert!(messages.is_empty(), "{messages:?}");
        assert_eq!(exit.cause.label(), "killed", "{exit:?}");
        assert!(exit.summary().contains("protocol error"), "{exit:?}");
    }
}
