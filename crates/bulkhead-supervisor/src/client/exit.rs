//! Classifying a worker's death at the edge: the reaper's facts ([`DeathFacts`]) become the policy's [`ExitCause`]
//! (the values themselves, [`WorkerExit`] and [`KillReason`], are the policy's vocabulary: `policy/death.rs`).
//!
//! The cause decides what a death counts toward (see the supervisor's policy): the worker's own crash, a kill by
//! the supervisor (and why), a signal sent from outside, or the kernel's OOM killer. The exit status alone cannot
//! tell these apart, so the link that reaps the worker combines it with what it knows: whether it sent the kill
//! itself, the line a worker writes when another process sent it a fatal signal
//! ([`signals::sender_of`](crate::worker::signals::sender_of)), and the OOM-kill counter of the worker's memory
//! cgroup ([`OomWatch`](super::proc::OomWatch), or the worker's own group under a memory ceiling), and whether its
//! stderr says an allocation failed (how a worker ends at an `RLIMIT_DATA` ceiling).

pub use crate::supervisor::policy::death::{ExitCause, KillReason, WorkerExit};

/// Signals a process gets for its own faults (or raises itself, like `abort()`); any other fatal signal was sent.
fn is_fault_signal(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGSEGV
            | libc::SIGBUS
            | libc::SIGILL
            | libc::SIGFPE
            | libc::SIGABRT
            | libc::SIGTRAP
            | libc::SIGSYS
            | libc::SIGXCPU
            | libc::SIGXFSZ
    )
}

/// What the reaper knows about a death, to classify it.
#[derive(Debug, Clone, Default)]
pub struct DeathFacts {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal number, when a signal ended it.
    pub signal: Option<i32>,
    /// Why the supervisor killed it, if it did.
    pub killed: Option<KillReason>,
    /// The sender of a fatal signal, from the worker's own report.
    pub sender: Option<u32>,
    /// Whether the OOM-kill counter of its memory cgroup grew during its life.
    pub oom_killed: bool,
    /// Whether its stderr says an allocation failed (a worker at an `RLIMIT_DATA` ceiling aborts or exits so).
    pub alloc_failed: bool,
}

impl DeathFacts {
    /// The cause of death.
    pub fn cause(&self) -> ExitCause {
        if let Some(reason) = &self.killed {
            return ExitCause::Killed { reason: reason.clone() };
        }
        match (self.signal, self.code) {
            (Some(libc::SIGKILL), _) if self.oom_killed => ExitCause::OutOfMemory,
            (Some(libc::SIGKILL), _) => ExitCause::External { sender: None },
            (Some(sig), _) if self.alloc_failed && is_fault_signal(sig) && self.sender.is_none() => {
                ExitCause::OutOfMemory
            }
            (None, Some(code)) if self.alloc_failed && code != 0 => ExitCause::OutOfMemory,
            (Some(sig), _) if is_fault_signal(sig) && self.sender.is_none() => ExitCause::Crash,
            (Some(_), _) => ExitCause::External { sender: self.sender },
            (None, Some(0)) => ExitCause::Clean,
            _ => ExitCause::Crash,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_death_gets_its_cause() {
        let facts = |signal: Option<i32>, code: Option<i32>| DeathFacts { signal, code, ..DeathFacts::default() };
        let watchdog = KillReason::Watchdog("hang".into());
        for (f, want) in [
            (facts(Some(libc::SIGSEGV), None), ExitCause::Crash),
            (facts(Some(libc::SIGABRT), None), ExitCause::Crash),
            (facts(None, Some(70)), ExitCause::Crash),
            (facts(None, Some(0)), ExitCause::Clean),
            (facts(Some(libc::SIGKILL), None), ExitCause::External { sender: None }),
            (facts(Some(libc::SIGTERM), None), ExitCause::External { sender: None }),
            (
                DeathFacts { sender: Some(7), ..facts(Some(libc::SIGSEGV), None) },
                ExitCause::External { sender: Some(7) },
            ),
            (DeathFacts { oom_killed: true, ..facts(Some(libc::SIGKILL), None) }, ExitCause::OutOfMemory),
            // At an RLIMIT_DATA ceiling: Rust's allocation-failure abort, or the worker's own exit saying so.
            (DeathFacts { alloc_failed: true, ..facts(Some(libc::SIGABRT), None) }, ExitCause::OutOfMemory),
            (DeathFacts { alloc_failed: true, ..facts(None, Some(5)) }, ExitCause::OutOfMemory),
            (DeathFacts { alloc_failed: true, ..facts(None, Some(0)) }, ExitCause::Clean),
            (
                DeathFacts { alloc_failed: true, ..facts(Some(libc::SIGKILL), None) },
                ExitCause::External { sender: None },
            ),
            (
                DeathFacts { killed: Some(watchdog.clone()), ..facts(Some(libc::SIGKILL), None) },
                ExitCause::Killed { reason: watchdog },
            ),
        ] {
            assert_eq!(f.cause(), want, "{f:?}");
        }
    }

    #[test]
    fn signal_names_and_summaries() {
        assert_eq!(signal_name(libc::SIGSEGV), "SIGSEGV");
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
        assert_eq!(signal_name(99), "signal 99");
        let e = WorkerExit { signal: Some("SIGABRT".into()), cause: ExitCause::Crash, ..Default::default() };
        assert_eq!((e.summary(), e.exit_key(), e.cause.label()), ("signal SIGABRT".into(), "SIGABRT".into(), "crash"));
        let e = WorkerExit {
            signal: Some("SIGKILL".into()),
            cause: ExitCause::Killed { reason: KillReason::Watchdog("watchdog: 2.0 s deadline".into()) },
            ..Default::default()
        };
        assert_eq!(e.to_string(), "signal SIGKILL (killed by the supervisor: watchdog: 2.0 s deadline)");
        assert_eq!(e.cause.label(), "hang");
        let e = WorkerExit { code: Some(70), ..Default::default() };
        assert_eq!(e.exit_key(), "exit 70");
    }
}
