//! What `/proc` and the memory cgroup say about a worker process: resident memory, whether it is stopped, the
//! machine's available memory, and the OOM-kill counter that tells an OOM kill from a `kill -9`.
//!
//! Every reader returns `None` where the file is absent (another OS, a locked-down container): the supervisor then
//! decides without that fact.

use std::path::{Path, PathBuf};

pub use crate::supervisor::policy::ProcStat;

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page > 0 {
        page as u64
    } else {
        4096
    }
}

/// Reads `/proc/PID/stat` (and the data size from `/proc/PID/statm`) into the policy's sample (`None` when the
/// process is gone or the file is absent).
pub fn read_stat(pid: u32) -> Option<ProcStat> {
    let mut stat = parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    // The sixth field: data + stack, in pages (what RLIMIT_DATA counts, the main stack aside).
    stat.data_bytes = statm.split_whitespace().nth(5).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * page_size();
    Some(stat)
}

/// Parses the text of `/proc/PID/stat`: the fields after the command name (which may hold spaces and
/// parentheses) start with the state; the resident set in pages is the 24th field.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let number = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // Fields 14 and 15 of the file (utime, stime) and 24 (rss), counted from the state (field 3).
    let (utime, stime, rss_pages) = (number(11)?, number(12)?, number(21)?);
    Some(ProcStat {
        stopped: matches!(state, 'T' | 't'),
        rss_bytes: rss_pages * page_size(),
        cpu_ticks: utime + stime,
        data_bytes: 0,
    })
}

/// Resident memory of `pid` (or of this process) from `/proc/PID/statm`.
pub fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/statm"),
        None => "/proc/self/statm".into(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
pub fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The memory cgroup of a process: its OOM-kill counter and how much memory its limits leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// cgroup v2: `memory.events` (line `oom_kill N`), `memory.max`, `memory.current`.
    V2(PathBuf),
    /// cgroup v1: `memory.oom_control` (line `oom_kill N`, Linux 4.13+), `memory.limit_in_bytes`,
    /// `memory.usage_in_bytes`.
    V1(PathBuf),
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn oom_kill_line(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok())
}

/// Limits at or above this are "no limit" (cgroup v1 writes a page-rounded `i64::MAX`).
const NO_LIMIT: u64 = 1 << 62;

impl Cgroup {
    /// The memory cgroup of `pid`, when the memory controller is mounted where it normally is.
    pub fn of(pid: u32) -> Option<Cgroup> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        Cgroup::candidates(&text, Path::new("/sys/fs/cgroup")).into_iter().find(|c| c.oom_kills().is_some())
    }

    /// The memory cgroups the lines of `/proc/PID/cgroup` name, under the mount `root`, most specific first.
    fn candidates(cgroups: &str, root: &Path) -> Vec<Cgroup> {
        let mut out = vec![];
        for line in cgroups.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let rel = path.trim_start_matches('/');
            if id == "0" && controllers.is_empty() {
                out.extend([root.join(rel), root.join("unified").join(rel)].map(Cgroup::V2));
            } else if controllers.split(',').any(|c| c == "memory") {
                out.push(Cgroup::V1(root.join("memory").join(rel)));
            }
        }
        out
    }

    /// The group's directory.
    pub fn dir(&self) -> &Path {
        match self {
            Cgroup::V2(d) | Cgroup::V1(d) => d,
        }
    }

    /// The group above this one (`None` at the top of the hierarchy).
    pub fn parent(&self) -> Option<Cgroup> {
        let up = self.dir().parent()?.to_path_buf();
        match self {
            Cgroup::V2(_) => Some(Cgroup::V2(up)),
            Cgroup::V1(_) => Some(Cgroup::V1(up)),
        }
    }

    /// OOM kills of processes in this cgroup so far.
    pub fn oom_kills(&self) -> Option<u64> {
        match self {
            Cgroup::V2(d) => oom_kill_line(&d.join("memory.events")),
            Cgroup::V1(d) => oom_kill_line(&d.join("memory.oom_control")),
        }
    }

    /// Memory its limits (its own and its parents') leave before the OOM killer acts; `None` without a limit.
    pub fn headroom(&self) -> Option<u64> {
        let mut best: Option<u64> = None;
        let mut dir = Some(self.dir());
        while let Some(d) = dir {
            let (limit, usage) = match self {
                Cgroup::V2(_) => (read_u64(&d.join("memory.max")), read_u64(&d.join("memory.current"))),
                Cgroup::V1(_) => {
                    (read_u64(&d.join("memory.limit_in_bytes")), read_u64(&d.join("memory.usage_in_bytes")))
                }
            };
            match (limit, usage) {
                (Some(limit), Some(usage)) if limit < NO_LIMIT => {
                    let left = limit.saturating_sub(usage);
                    best = Some(best.map_or(left, |b| b.min(left)));
                }
                (None, None) => break,
                _ => {}
            }
            dir = d.parent();
        }
        best
    }
}

/// The OOM-kill counter of a worker's memory cgroup (or, without one, of the machine), read when the worker started
/// and again when it died of SIGKILL: if it grew, the kernel's OOM killer ended it (a `kill -9` from outside leaves
/// it unchanged).
#[derive(Debug, Clone)]
pub struct OomWatch {
    cgroup: Option<Cgroup>,
    before: u64,
}

/// The machine-wide OOM-kill count (`/proc/vmstat`, any process on the machine).
fn machine_oom_kills() -> Option<u64> {
    oom_kill_line(Path::new("/proc/vmstat"))
}

impl OomWatch {
    /// Reads the counter of `pid`'s memory cgroup (or the machine's) now.
    pub fn of(pid: u32) -> Option<OomWatch> {
        let cgroup = Cgroup::of(pid);
        let before = match &cgroup {
            Some(c) => c.oom_kills()?,
            None => machine_oom_kills()?,
        };
        Some(OomWatch { cgroup, before })
    }

    /// Whether the counter grew since [`OomWatch::of`].
    pub fn fired(&self) -> bool {
        let now = match &self.cgroup {
            Some(c) => c.oom_kills(),
            None => machine_oom_kills(),
        };
        now.is_some_and(|n| n > self.before)
    }

    /// The memory cgroup watched (`None`: the machine-wide count).
    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_parsed_past_a_command_name_with_spaces() {
        let text =
            "42 (my (odd) cmd) T 1 42 42 0 -1 4194304 100 0 0 0 5 3 0 0 20 0 4 0 1000 123456 2500 18446744073709551615";
        let s = parse_stat(text).unwrap();
        assert!(s.stopped);
        assert_eq!(s.rss_bytes, 2500 * page_size());
        assert_eq!(s.cpu_ticks, 8);
        let me = read_stat(std::process::id()).unwrap();
        assert!(!me.stopped && me.rss_bytes > 1 << 20);
        assert!(me.data_bytes > 1 << 20, "{me:?}");
        assert!(rss_bytes(None).unwrap_or(0) > 1 << 20);
    }

    #[test]
    fn the_memory_cgroup_is_found_for_v2_and_v1() {
        let root = Path::new("/sys/fs/cgroup");
        let v2 = Cgroup::candidates("0::/system.slice/app.service\n", root);
        assert_eq!(v2[0], Cgroup::V2(root.join("system.slice/app.service")));
        let v1 = Cgroup::candidates("4:memory:/pods/a\n1:cpu,cpuacct:/pods/a\n0::/\n", root);
        assert_eq!(v1[0], Cgroup::V1(root.join("memory/pods/a")));
        // Whatever this machine exposes, a live process has a readable counter that has not grown.
        if let Some(w) = OomWatch::of(std::process::id()) {
            assert!(!w.fired(), "{:?}", w.cgroup());
        }
    }

    #[test]
    fn headroom_is_the_tightest_limit_up_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let child = dir.path().join("pod/worker");
        std::fs::create_dir_all(&child).unwrap();
        let write = |d: &Path, limit: &str, usage: &str| {
            std::fs::write(d.join("memory.max"), limit).unwrap();
            std::fs::write(d.join("memory.current"), usage).unwrap();
        };
        write(dir.path(), "max", "5000");
        write(&dir.path().join("pod"), "1000", "600");
        write(&child, "max", "300");
        assert_eq!(Cgroup::V2(child.clone()).headroom(), Some(400));
        write(&child, "500", "300");
        assert_eq!(Cgroup::V2(child).headroom(), Some(200));
    }
}
