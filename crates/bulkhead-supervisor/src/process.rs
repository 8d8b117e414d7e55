//! Worker links: a worker process (own process group, stderr tail, kill-and-wait on drop, exit status turned into a
//! typed [`WorkerExit`]) or an in-process worker thread, behind one interface of [`Request`]s in and
//! [`WorkerEvent`]s out.

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead_core::{ModelFiles, Unit};
use bulkhead_embed::Engines;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::faults::{self, FaultRule, WorkerFaults};
use crate::protocol::{read_frame_async, write_frame_async, FrameError, Request, Response};
use crate::worker::{Core, WorkerArgs};

/// Bytes of stderr kept per worker.
pub const STDERR_TAIL_BYTES: usize = 8 << 10;

/// How a worker ended: a value, never a panic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerExit {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal name (`SIGSEGV`, `SIGABRT`, `SIGKILL`...), when a signal killed it.
    pub signal: Option<String>,
    /// The last bytes of its stderr.
    pub stderr_tail: String,
    /// Why the supervisor killed it, when it did (`watchdog: ...`, `recycled`, `protocol error: ...`).
    pub killed_by_supervisor: Option<String>,
}

impl WorkerExit {
    /// `signal SIGSEGV` or `exit code 70`: the short form shown in `/units`.
    pub fn summary(&self) -> String {
        let mut s = match (&self.signal, self.code) {
            (Some(sig), _) => format!("signal {sig}"),
            (None, Some(c)) => format!("exit code {c}"),
            (None, None) => "ended".to_string(),
        };
        if let Some(why) = &self.killed_by_supervisor {
            s.push_str(&format!(" (killed by the supervisor: {why})"));
        }
        s
    }
}

impl std::fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary())
    }
}

/// The name of a signal number.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

/// What a worker link reports.
#[derive(Debug)]
pub enum WorkerEvent {
    /// A protocol message.
    Message(Response),
    /// The worker is gone.
    Exited(WorkerExit),
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

/// One live worker (process or thread).
pub struct WorkerLink {
    /// Process id (`None` in-process).
    pub pid: Option<u32>,
    requests: mpsc::UnboundedSender<Request>,
    /// Events from the worker; ends with exactly one `Exited`.
    pub events: mpsc::UnboundedReceiver<WorkerEvent>,
    alive: Arc<AtomicBool>,
    kill_reason: Arc<Mutex<Option<String>>>,
    tail: Arc<Mutex<Tail>>,
}

impl WorkerLink {
    /// Spawns a worker process for `unit`.
    pub fn spawn(
        cmd: &WorkerCommand,
        model: &ModelFiles,
        unit: Unit,
        generation: u32,
        rules: &[FaultRule],
    ) -> std::io::Result<WorkerLink> {
        let args = WorkerArgs { unit, model: model.clone(), generation, parent_pid: Some(std::process::id()) };
        let mut child = tokio::process::Command::new(&cmd.program)
            .args(&cmd.args)
            .args(args.to_args())
            .env(faults::FAULTS_ENV, faults::to_env_value(rules))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id();
        let (mut stdin, mut stdout, mut stderr) = (
            child.stdin.take().expect("piped"),
            child.stdout.take().expect("piped"),
            child.stderr.take().expect("piped"),
        );
        let (req_tx, mut req_rx) = mpsc::unbounded_channel::<Request>();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let alive = Arc::new(AtomicBool::new(true));
        let kill_reason = Arc::new(Mutex::new(None));
        let tail = Arc::new(Mutex::new(Tail::default()));

        tokio::spawn(async move {
            while let Some(req) = req_rx.recv().await {
                if write_frame_async(&mut stdin, &req).await.is_err() {
                    break;
                }
            }
        });
        let stderr_task = {
            let tail = tail.clone();
            let label = format!("{unit}#{generation}");
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = stderr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    for line in String::from_utf8_lossy(&buf[..n]).lines() {
                        tracing::debug!(target: "bulkhead::worker", "[{label}] {line}");
                    }
                    tail.lock().unwrap_or_else(|e| e.into_inner()).push(&buf[..n]);
                }
            })
        };
        {
            let (alive, kill_reason, tail) = (alive.clone(), kill_reason.clone(), tail.clone());
            tokio::spawn(async move {
                let mut protocol_error = None;
                loop {
                    match read_frame_async::<Response>(&mut stdout).await {
                        Ok(msg) => {
                            let _ = ev_tx.send(WorkerEvent::Message(msg));
                        }
                        Err(FrameError::Closed) => break,
                        Err(e) => {
                            protocol_error = Some(e.to_string());
                            break;
                        }
                    }
                }
                if let Some(e) = protocol_error {
                    kill_group(pid, &alive);
                    kill_reason.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(format!("protocol error: {e}"));
                }
                // The pipe closed: the worker is exiting (or closed fd 1 itself; give it a moment, then kill).
                let status = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
                    Ok(s) => s,
                    Err(_) => {
                        kill_group(pid, &alive);
                        child.wait().await
                    }
                };
                alive.store(false, Ordering::SeqCst);
                let _ = tokio::time::timeout(Duration::from_secs(2), stderr_task).await;
                let mut exit = WorkerExit {
                    stderr_tail: tail.lock().unwrap_or_else(|e| e.into_inner()).text(),
                    killed_by_supervisor: kill_reason.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                    ..WorkerExit::default()
                };
                match status {
                    Ok(s) => {
                        exit.code = s.code();
                        exit.signal = s.signal().map(signal_name);
                    }
                    Err(e) => exit.stderr_tail.push_str(&format!("\n(wait failed: {e})")),
                }
                let _ = ev_tx.send(WorkerEvent::Exited(exit));
            });
        }
        Ok(WorkerLink { pid, requests: req_tx, events: ev_rx, alive, kill_reason, tail })
    }

    /// Runs the worker on a thread of this process (`--isolation none`): same messages, no fault injection.
    pub fn in_process(engines: Arc<Engines>, model: &ModelFiles, unit: Unit) -> WorkerLink {
        let (req_tx, mut req_rx) = mpsc::unbounded_channel::<Request>();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let alive = Arc::new(AtomicBool::new(true));
        let model = model.clone();
        let alive2 = alive.clone();
        let spawned = std::thread::Builder::new().name(format!("bulkhead-{unit}")).spawn(move || {
            let send = |m: Response| ev_tx.send(WorkerEvent::Message(m)).is_ok();
            send(Response::Hello {
                protocol: crate::protocol::PROTOCOL_VERSION,
                version: crate::protocol::CRATE_VERSION.into(),
                pid: std::process::id(),
            });
            let loaded = Core::load(&engines, &model, &unit, WorkerFaults::default(), |r| {
                send(Response::Loaded { report: r.clone() });
            });
            let code = match loaded {
                Err(f) => {
                    send(Response::LoadFailed { reason: f.reason, kind: f.kind });
                    crate::worker::EXIT_LOAD_FAILED
                }
                Ok((mut core, warmup)) => {
                    send(core.ready(warmup, 0));
                    while let Some(answer) = req_rx.blocking_recv().and_then(|req| core.answer(req)) {
                        if !send(answer) {
                            break;
                        }
                    }
                    0
                }
            };
            alive2.store(false, Ordering::SeqCst);
            let _ = ev_tx.send(WorkerEvent::Exited(WorkerExit { code: Some(code), ..WorkerExit::default() }));
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start an in-process worker thread: {e}");
        }
        WorkerLink {
            pid: None,
            requests: req_tx,
            events: ev_rx,
            alive,
            kill_reason: Arc::new(Mutex::new(None)),
            tail: Arc::new(Mutex::new(Tail::default())),
        }
    }

    /// Queues a request (a dead worker's requests are dropped; its `Exited` event follows).
    pub fn send(&self, req: Request) {
        let _ = self.requests.send(req);
    }

    /// SIGKILLs the worker's process group, recording why.
    pub fn kill(&self, why: &str) {
        self.kill_reason.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(|| why.to_string());
        kill_group(self.pid, &self.alive);
    }

    /// The current stderr tail.
    pub fn stderr_tail(&self) -> String {
        self.tail.lock().unwrap_or_else(|e| e.into_inner()).text()
    }
}

impl Drop for WorkerLink {
    fn drop(&mut self) {
        // Kill-and-wait: the reaper task waits for the status; the group kill also ends grandchildren.
        kill_group(self.pid, &self.alive);
    }
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
    fn signal_names_and_summaries() {
        assert_eq!(signal_name(libc::SIGSEGV), "SIGSEGV");
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
        assert_eq!(signal_name(99), "signal 99");
        let e = WorkerExit { signal: Some("SIGABRT".into()), ..Default::default() };
        assert_eq!(e.summary(), "signal SIGABRT");
        let e = WorkerExit { code: Some(70), killed_by_supervisor: Some("recycled".into()), ..Default::default() };
        assert_eq!(e.to_string(), "exit code 70 (killed by the supervisor: recycled)");
    }

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut t = Tail::default();
        t.push(&vec![b'a'; STDERR_TAIL_BYTES]);
        t.push(b"END");
        assert_eq!(t.0.len(), STDERR_TAIL_BYTES);
        assert!(t.text().ends_with("aEND"));
    }

    #[tokio::test]
    async fn a_dead_process_becomes_a_typed_exit() {
        // `sh -c 'echo boom >&2; kill -SEGV $$'` stands in for a crashing worker (it ignores the worker arguments).
        let cmd = WorkerCommand {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "echo boom >&2; kill -SEGV $$".into(), "sh".into()],
        };
        let model: ModelFiles = serde_json::from_value(serde_json::json!({
            "name": "m", "source": "/m", "config": null, "tokenizer": null, "safetensors": null, "onnx": "/m/model.onnx",
            "pooling": "mean", "normalize": true, "max_seq_length": 256, "pad_token_id": 0,
            "architecture": null, "model_type": null
        }))
        .unwrap();
        let mut link = WorkerLink::spawn(&cmd, &model, Unit::ORT_CPU, 0, &[]).unwrap();
        match link.events.recv().await {
            Some(WorkerEvent::Exited(exit)) => {
                assert_eq!(exit.signal.as_deref(), Some("SIGSEGV"), "{exit:?}");
                assert!(exit.stderr_tail.contains("boom"), "{exit:?}");
            }
            other => panic!("expected an exit, got {other:?}"),
        }
    }
}
