//! How a worker ended, as the policy sees it: [`WorkerExit`] with its [`ExitCause`] and, for a kill, the
//! [`KillReason`]. Plain data: the worker client (`client/exit.rs`) fills it from the exit status, its own kills,
//! the worker's report of a signal's sender and the memory cgroup's OOM counter; the policy decides from it what
//! a death counts toward.

use serde::{Deserialize, Serialize};

/// Why the supervisor (or a client) killed a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "detail")]
pub enum KillReason {
    /// A prediction ran past its deadline while the worker was running: a hang.
    Watchdog(String),
    /// The worker was stopped (SIGSTOP from outside) while it held work: it cannot answer until continued.
    Stopped(String),
    /// Not ready within the load timeout.
    LoadTimeout(String),
    /// Did not exit after `Shutdown`.
    DidNotStop,
    /// Its unit was quarantined while it still ran.
    Quarantine,
    /// It wrote a malformed frame or a message out of order.
    Protocol(String),
    /// It speaks another protocol version or another build.
    Handshake(String),
    /// A client (the doctor, a benchmark) stopped waiting for it.
    Client(String),
}

impl std::fmt::Display for KillReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KillReason::Watchdog(m)
            | KillReason::Stopped(m)
            | KillReason::LoadTimeout(m)
            | KillReason::Protocol(m)
            | KillReason::Handshake(m)
            | KillReason::Client(m) => f.write_str(m),
            KillReason::DidNotStop => f.write_str("did not exit after Shutdown"),
            KillReason::Quarantine => f.write_str("its unit was quarantined"),
        }
    }
}

/// Why a worker died.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "cause")]
pub enum ExitCause {
    /// It exited with code 0 (after `Shutdown`, or when its input closed).
    #[default]
    Clean,
    /// Its own crash: a fault signal it raised or caused (SIGSEGV, SIGABRT, SIGBUS...) or a non-zero exit code.
    Crash,
    /// Killed by the supervisor (or a client), and why.
    Killed {
        /// Why.
        reason: KillReason,
    },
    /// A signal sent by another process (`kill` from outside).
    External {
        /// The sender, when the worker could record it (not for SIGKILL, which cannot be observed).
        sender: Option<u32>,
    },
    /// Out of memory: the kernel's OOM killer (the OOM-kill counter of the worker's memory cgroup grew while it died
    /// of SIGKILL), or an allocation that failed at the worker's `RLIMIT_DATA` ceiling (it aborted or exited saying
    /// so).
    OutOfMemory,
}

impl ExitCause {
    /// A short name: `clean`, `crash`, `hang`, `stopped`, `killed`, `external`, `oom`.
    pub fn label(&self) -> &'static str {
        match self {
            ExitCause::Clean => "clean",
            ExitCause::Crash => "crash",
            ExitCause::Killed { reason: KillReason::Watchdog(_) | KillReason::LoadTimeout(_) } => "hang",
            ExitCause::Killed { reason: KillReason::Stopped(_) } => "stopped",
            ExitCause::Killed { .. } => "killed",
            ExitCause::External { .. } => "external",
            ExitCause::OutOfMemory => "oom",
        }
    }
}

/// How a worker ended: a value, never a panic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerExit {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal name (`SIGSEGV`, `SIGABRT`, `SIGKILL`...), when a signal killed it.
    pub signal: Option<String>,
    /// The last bytes of its stderr.
    pub stderr_tail: String,
    /// Why it died.
    pub cause: ExitCause,
}

impl WorkerExit {
    /// `signal SIGSEGV` or `exit code 70`, plus the cause when it is not the worker's own doing: the short form shown
    /// in `/units`.
    pub fn summary(&self) -> String {
        let mut s = match (&self.signal, self.code) {
            (Some(sig), _) => format!("signal {sig}"),
            (None, Some(c)) => format!("exit code {c}"),
            (None, None) => "ended".to_string(),
        };
        match &self.cause {
            ExitCause::Clean | ExitCause::Crash => {}
            ExitCause::Killed { reason } => s.push_str(&format!(" (killed by the supervisor: {reason})")),
            ExitCause::External { sender: Some(pid) } => s.push_str(&format!(" (sent from outside by pid {pid})")),
            ExitCause::External { sender: None } => s.push_str(" (killed from outside)"),
            ExitCause::OutOfMemory if self.signal.as_deref() == Some("SIGKILL") => {
                s.push_str(" (the kernel's OOM killer)")
            }
            ExitCause::OutOfMemory => s.push_str(" (out of memory: an allocation failed)"),
        }
        s
    }

    /// The key of `/units`' deaths-by-exit counter: the signal name or `exit N`.
    pub fn exit_key(&self) -> String {
        match (&self.signal, self.code) {
            (Some(sig), _) => sig.clone(),
            (None, Some(c)) => format!("exit {c}"),
            (None, None) => "unknown".into(),
        }
    }
}

impl std::fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary())
    }
}

/// Whether a worker's stderr (or an engine's error message) says an allocation failed: how a worker at an
/// `RLIMIT_DATA` ceiling ends (Rust's allocation-failure abort, C++'s `std::bad_alloc`, ONNX Runtime's arena, the
/// C library's `ENOMEM`, the worker's own report).
pub fn allocation_failed(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    (t.contains("memory allocation of") && t.contains("failed"))
        || t.contains("bad_alloc")
        || t.contains("failed to allocate memory")
        || t.contains("cannot allocate memory")
        || t.contains(OUT_OF_MEMORY_MARKER)
}

/// The line a worker writes to stderr before it exits because its engine could not allocate memory.
pub const OUT_OF_MEMORY_MARKER: &str = "bulkhead worker: out of memory";
