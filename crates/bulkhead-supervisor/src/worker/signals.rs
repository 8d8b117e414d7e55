//! Telling a worker's own crash from a signal sent from outside.
//!
//! A worker that dies of SIGSEGV or SIGABRT looks the same in its exit status whether its engine faulted or another
//! process ran `kill -SEGV`. The kernel knows the difference (`si_code` is `SI_USER`, `SI_QUEUE` or `SI_TKILL`, and
//! `si_pid` the sender, only for a signal a process sent), so a worker installs a handler for the fatal signals that
//! writes one line to stderr when the signal came from another process ([`MARKER`]), then dies of the same signal
//! with the default action. The supervisor reads that line in the stderr tail ([`sender_of`]): a kill from outside
//! is not the unit's fault and does not count toward its quarantine.
//!
//! A fault the kernel raises (`SEGV_MAPERR`...) or an `abort()` inside the worker is passed on unchanged: to the
//! handler installed before (the Rust runtime's stack-overflow report), or to the default action.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The start of the line a worker writes when a fatal signal was sent by another process:
/// `bulkhead worker: fatal signal 11 sent by pid 4242`.
pub const MARKER: &str = "bulkhead worker: fatal signal ";

/// The signals whose sender is recorded: the ones that end a process by default.
const HOOKED: [libc::c_int; 11] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
    libc::SIGTRAP,
    libc::SIGSYS,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
];

/// The previous `sa_sigaction` of each hooked signal (0: the default action), and whether it took `SA_SIGINFO`.
static PREVIOUS: [AtomicUsize; 65] = [const { AtomicUsize::new(0) }; 65];
static PREVIOUS_SIGINFO: [AtomicUsize; 65] = [const { AtomicUsize::new(0) }; 65];

/// The pid of another process that sent the fatal signal named in a worker's stderr tail, if any.
pub fn sender_of(stderr_tail: &str) -> Option<u32> {
    let line = stderr_tail.lines().rev().find(|l| l.starts_with(MARKER))?;
    line.rsplit_once("sent by pid ")?.1.trim().parse().ok()
}

/// Installs the handler for every hooked signal (worker processes only; never in the server's own process).
pub fn install() {
    for sig in HOOKED {
        // SAFETY: sigaction with a zeroed, then filled, struct; the handler only calls async-signal-safe functions.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            if old.sa_sigaction == libc::SIG_IGN {
                continue;
            }
            let i = sig as usize;
            if old.sa_sigaction != libc::SIG_DFL {
                PREVIOUS[i].store(old.sa_sigaction, Ordering::SeqCst);
                PREVIOUS_SIGINFO[i].store(usize::from(old.sa_flags & libc::SA_SIGINFO != 0), Ordering::SeqCst);
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_fatal_signal as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// Writes `n` in decimal into `buf`, returning the digits.
fn digits(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

extern "C" fn on_fatal_signal(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: only async-signal-safe calls (getpid, write, sigaction, raise) on memory owned by this frame.
    unsafe {
        let (code, sender) = if info.is_null() { (1, 0) } else { ((*info).si_code, (*info).si_pid()) };
        // si_code <= 0: sent by a process (kill, sigqueue, tgkill), not raised by the kernel for a fault.
        let external = code <= 0 && sender > 0 && sender != libc::getpid();
        if external {
            let mut line = [0u8; 96];
            let mut len = 0;
            let mut push = |bytes: &[u8]| {
                let n = bytes.len().min(line.len() - len);
                line[len..len + n].copy_from_slice(&bytes[..n]);
                len += n;
            };
            let mut buf = [0u8; 20];
            push(b"\n");
            push(MARKER.as_bytes());
            push(digits(sig as u64, &mut buf));
            push(b" sent by pid ");
            push(digits(sender as u64, &mut buf));
            push(b"\n");
            libc::write(2, line.as_ptr().cast(), len);
        }
        let i = sig as usize;
        let previous = PREVIOUS.get(i).map_or(0, |p| p.load(Ordering::SeqCst));
        if !external && previous != 0 {
            // A fault of the worker itself: let the handler installed before ours see it (it reports a stack
            // overflow, then restores the default action so that the fault ends the process).
            if PREVIOUS_SIGINFO[i].load(Ordering::SeqCst) != 0 {
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    std::mem::transmute(previous);
                f(sig, info, ctx);
            } else {
                let f: extern "C" fn(libc::c_int) = std::mem::transmute(previous);
                f(sig);
            }
        }
        // Die of the same signal with the default action: pending until this handler returns.
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &dfl, std::ptr::null_mut());
        libc::raise(sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sender_is_read_back_from_the_stderr_tail() {
        let tail = format!("loading...\n{MARKER}11 sent by pid 4242\n");
        assert_eq!(sender_of(&tail), Some(4242));
        assert_eq!(sender_of("Segmentation fault\n"), None);
        let mut buf = [0u8; 20];
        assert_eq!(digits(0, &mut buf), b"0");
        assert_eq!(digits(1234567, &mut buf), b"1234567");
    }
}
