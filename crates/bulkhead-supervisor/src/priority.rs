//! The calling thread's CPU priority: work that may wait (long predictions in a worker, the parsing of
//! multi-megabyte request bodies in the server) runs on threads of a higher nice value, so that on a busy machine
//! the short requests' threads go first. Raising a thread's own nice value needs no privilege; lowering it again
//! would, so such threads keep it for their life.

/// The nice value, over the process's, of a thread that runs work that may wait.
pub const BACKGROUND_NICE: i32 = 10;

/// Raises the calling thread's nice value by `by` (at most to 19, the lowest priority). On Linux the nice value
/// belongs to the thread, not the process. Returns whether it took effect (elsewhere: never).
pub fn lower_this_thread(by: i32) -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid, getpriority and setpriority take and return integers; no memory is passed.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, (now + by).min(19)) == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = by;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn a_thread_lowers_its_own_priority_and_no_other() {
        let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::syscall(libc::SYS_gettid) as libc::id_t) };
        let before = nice();
        let inside = std::thread::spawn(move || {
            assert!(lower_this_thread(BACKGROUND_NICE));
            nice()
        })
        .join()
        .unwrap();
        assert_eq!(inside, (before + BACKGROUND_NICE).min(19));
        assert_eq!(nice(), before, "the calling thread's priority is its own");
    }
}
