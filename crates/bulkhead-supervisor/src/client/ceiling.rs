//! A memory ceiling per worker process (`--worker-memory-mb`): how it is enforced, decided once per server
//! ([`MemoryCeiling::detect`]), and applied to each worker as it is spawned ([`WorkerCeiling`]).
//!
//! | mechanism | when | what is counted | a worker at the ceiling |
//! |---|---|---|---|
//! | cgroup v2 child (`memory.max`, `memory.swap.max = 0`) | this process's cgroup is writable and offers the memory controller (a delegated subtree) | anonymous memory, page cache and kernel memory charged to the worker; clean page cache is reclaimed first | SIGKILLed by the kernel; `oom_kill` in its `memory.events` |
//! | cgroup v1 child (`memory.limit_in_bytes`, `memory.memsw.limit_in_bytes`) | a writable v1 memory hierarchy (root, hybrid hosts) | the same, without most kernel memory | SIGKILLed; `oom_kill` in its `memory.oom_control` |
//! | `setrlimit(RLIMIT_DATA)` before `exec` | anywhere else (Linux 4.7+) | private writable mappings (heap, anonymous `mmap`, thread stacks), touched or not; not shared libraries' code, not read-only file mappings | the allocation fails: Rust aborts (`memory allocation of N bytes failed`), C++ throws `std::bad_alloc`, ONNX Runtime returns an error (the worker then exits, saying so) |
//!
//! `RLIMIT_DATA` rather than `RLIMIT_AS`: the address-space limit counts every mapping, reserved or not: ONNX
//! Runtime's shared library, the memory-mapped model file, glibc's 64 MiB per-thread malloc arenas reserved
//! `PROT_NONE`. A worker whose resident memory is 150 MiB easily has a virtual size of 1 GiB, so an `RLIMIT_AS`
//! ceiling would have to be set far above the memory it is meant to bound. `RLIMIT_DATA` counts only writable
//! private memory, close to what the worker can really make resident; it still counts memory reserved and never
//! touched (ONNX Runtime's CPU arena grows in chunks it then keeps), so it is a little stricter than resident memory.
//!
//! A cgroup ceiling is a fresh child group per worker (`bulkhead-<server pid>-w<n>`), created before the spawn; the
//! child joins it between `fork` and `exec` (it writes `0` to the group's `cgroup.procs`), so nothing the worker
//! allocates escapes it, and the group is removed when the worker has been reaped. On cgroup v2 the "no internal
//! processes" rule means a group can only hand the memory controller to children when it holds no process itself:
//! the server first moves itself into a leaf child (`bulkhead-server`), then enables `+memory` in its group's
//! `cgroup.subtree_control`; if other processes share its group this fails and the ceiling falls back to the rlimit.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::proc::Cgroup;
pub use crate::supervisor::config::{Enforcement, MemoryCeiling};
pub use crate::supervisor::policy::death::{allocation_failed, OUT_OF_MEMORY_MARKER};

/// Where the cgroup file systems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Which mechanism to use (`--worker-memory-enforcement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnforcementChoice {
    /// A cgroup where this process can create one, else the rlimit.
    #[default]
    Auto,
    /// A cgroup, or an error saying why none can be made.
    Cgroup,
    /// The rlimit, even where a cgroup could be made.
    Rlimit,
}

impl std::str::FromStr for EnforcementChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(EnforcementChoice::Auto),
            "cgroup" => Ok(EnforcementChoice::Cgroup),
            "rlimit" => Ok(EnforcementChoice::Rlimit),
            other => Err(format!("unknown memory enforcement `{other}`; valid: auto, cgroup, rlimit")),
        }
    }
}

/// No cgroup can enforce the ceiling (with [`EnforcementChoice::Cgroup`]).
#[derive(Debug, Clone, thiserror::Error)]
#[error("no cgroup can enforce --worker-memory-mb here: {0}; use --worker-memory-enforcement rlimit (or auto)")]
pub struct CeilingError(pub String);

impl MemoryCeiling {
    /// Decides how to enforce `limit_bytes` per worker on this machine. May move this process into a leaf child of
    /// its own cgroup (v2; see the module documentation). Call once, before any worker starts.
    pub fn detect(limit_bytes: u64, choice: EnforcementChoice) -> Result<MemoryCeiling, CeilingError> {
        let enforcement = match choice {
            EnforcementChoice::Rlimit => Enforcement::RlimitData { why_not_cgroup: None },
            EnforcementChoice::Auto | EnforcementChoice::Cgroup => match cgroup_parent(Path::new(CGROUP_ROOT)) {
                Ok(e) => e,
                Err(why) if choice == EnforcementChoice::Auto => {
                    tracing::info!("worker memory ceiling: no cgroup ({why}); using setrlimit(RLIMIT_DATA)");
                    Enforcement::RlimitData { why_not_cgroup: Some(why) }
                }
                Err(why) => return Err(CeilingError(why)),
            },
        };
        if let Enforcement::CgroupV1 { parent } | Enforcement::CgroupV2 { parent } = &enforcement {
            remove_stale_groups(parent);
        }
        tracing::info!(
            "worker memory ceiling {} MiB, enforced by {}",
            limit_bytes >> 20,
            match &enforcement {
                Enforcement::CgroupV2 { parent } => format!("a cgroup v2 child of {} per worker", parent.display()),
                Enforcement::CgroupV1 { parent } => format!("a cgroup v1 child of {} per worker", parent.display()),
                Enforcement::RlimitData { .. } => "setrlimit(RLIMIT_DATA) in each worker".into(),
            }
        );
        Ok(MemoryCeiling { limit_bytes, enforcement })
    }
}

/// This process's own cgroup, when a child with a memory limit can be made under it (v2 first, then v1).
fn cgroup_parent(root: &Path) -> Result<Enforcement, String> {
    let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let v2 = match own.lines().find_map(|l| l.strip_prefix("0::")) {
        Some(path) => match v2_parent(root, path.trim()) {
            Ok(dir) => return Ok(Enforcement::CgroupV2 { parent: dir }),
            Err(e) => Some(e),
        },
        None => None,
    };
    let v1 = own.lines().find_map(|l| {
        let mut p = l.splitn(3, ':');
        let (_, controllers, path) = (p.next()?, p.next()?, p.next()?);
        controllers.split(',').any(|c| c == "memory").then(|| path.trim_start_matches('/').to_string())
    });
    let v1 = match v1 {
        Some(path) => match v1_parent(&root.join("memory").join(path)) {
            Ok(dir) => return Ok(Enforcement::CgroupV1 { parent: dir }),
            Err(e) => Some(e),
        },
        None => None,
    };
    let why: Vec<String> = [v2, v1].into_iter().flatten().collect();
    Err(if why.is_empty() { "this process is in no cgroup with a memory controller".into() } else { why.join("; ") })
}

fn has_word(path: &Path, word: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.split_whitespace().any(|w| w == word))
}

/// A v2 group under which workers can get memory-limited children: this process's group, after moving this process
/// into a leaf child so that the group may enable the memory controller for its children.
fn v2_parent(root: &Path, path: &str) -> Result<PathBuf, String> {
    let rel = path.trim_start_matches('/');
    let dir = [root.join(rel), root.join("unified").join(rel)]
        .into_iter()
        .find(|d| d.join("cgroup.controllers").exists())
        .ok_or_else(|| format!("cgroup v2: no {} under {}", path, root.display()))?;
    if !has_word(&dir.join("cgroup.controllers"), "memory") {
        return Err(format!("cgroup v2: the memory controller is not available to {}", dir.display()));
    }
    if has_word(&dir.join("cgroup.subtree_control"), "memory") {
        probe_child(&dir, |child| write(&child.join("memory.max"), "max"))?;
        return Ok(dir);
    }
    // The group must hold no process of its own to enable a controller for its children: move into a leaf.
    let leaf = dir.join("bulkhead-server");
    let me = std::process::id().to_string();
    if let Err(e) = std::fs::create_dir(&leaf) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(format!("cgroup v2: {} is not writable: {e}", dir.display()));
        }
    }
    write(&leaf.join("cgroup.procs"), &me)
        .map_err(|e| format!("cgroup v2: cannot move into {}: {e}", leaf.display()))?;
    if let Err(e) = write(&dir.join("cgroup.subtree_control"), "+memory") {
        // Other processes share the group (or the parent does not delegate): go back where we were.
        let _ = write(&dir.join("cgroup.procs"), &me);
        let _ = std::fs::remove_dir(&leaf);
        return Err(format!("cgroup v2: cannot enable the memory controller under {}: {e}", dir.display()));
    }
    tracing::info!("moved the server into {} to give each worker a memory cgroup of its own", leaf.display());
    probe_child(&dir, |child| write(&child.join("memory.max"), "max"))?;
    Ok(dir)
}

/// A v1 memory group under which this process can make limited children.
fn v1_parent(dir: &Path) -> Result<PathBuf, String> {
    if !dir.join("memory.limit_in_bytes").exists() {
        return Err(format!("cgroup v1: no memory controller at {}", dir.display()));
    }
    probe_child(dir, |child| write(&child.join("memory.limit_in_bytes"), "-1"))?;
    Ok(dir.to_path_buf())
}

/// Makes and removes a child of `dir`, writing one limit file in it.
fn probe_child(dir: &Path, limit: impl Fn(&Path) -> std::io::Result<()>) -> Result<(), String> {
    let child = dir.join(format!("bulkhead-{}-probe", std::process::id()));
    std::fs::create_dir(&child).map_err(|e| format!("cannot create a child group in {}: {e}", dir.display()))?;
    let ok = limit(&child).map_err(|e| format!("cannot set a limit in {}: {e}", child.display()));
    let _ = std::fs::remove_dir(&child);
    ok
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value)
}

/// Removes empty worker groups a previous server left behind (it was killed before it could), identified by a
/// server pid that no longer runs.
fn remove_stale_groups(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("bulkhead-").and_then(|r| r.split('-').next()?.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// The ceiling of one worker: its own cgroup (made before the spawn, removed after the reap) or the rlimit.
#[derive(Debug)]
pub struct WorkerCeiling {
    limit: u64,
    /// The worker's own group, when a cgroup enforces the ceiling.
    group: Option<Cgroup>,
    /// The group's `cgroup.procs`, open for the child to write itself into (closed once the child is spawned).
    procs: Option<OwnedFd>,
}

static NEXT_GROUP: AtomicU64 = AtomicU64::new(0);

/// The name of this server's `n`th worker group.
fn group_name(n: u64) -> String {
    format!("bulkhead-{}-w{n}", std::process::id())
}

/// Whether `dir` is a worker group of this server: it bounds that worker alone (a new worker gets a fresh one).
pub fn is_worker_group(dir: &Path) -> bool {
    let prefix = format!("bulkhead-{}-w", std::process::id());
    dir.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
}

impl WorkerCeiling {
    /// Prepares the ceiling of a worker about to be spawned: a fresh cgroup, or (where making one fails) the rlimit.
    pub fn prepare(ceiling: &MemoryCeiling) -> WorkerCeiling {
        let limit = ceiling.limit_bytes;
        let made = match &ceiling.enforcement {
            Enforcement::CgroupV2 { parent } => Some(make_group(parent, |d| {
                write(&d.join("memory.max"), &limit.to_string())?;
                // Optional files: no swap (a ceiling that swaps only slows down), kill the whole group at once.
                let _ = write(&d.join("memory.swap.max"), "0");
                let _ = write(&d.join("memory.oom.group"), "1");
                Ok(Cgroup::V2(d.to_path_buf()))
            })),
            Enforcement::CgroupV1 { parent } => Some(make_group(parent, |d| {
                write(&d.join("memory.limit_in_bytes"), &limit.to_string())?;
                // Memory plus swap at the same limit: no swap (absent without swap accounting).
                let _ = write(&d.join("memory.memsw.limit_in_bytes"), &limit.to_string());
                Ok(Cgroup::V1(d.to_path_buf()))
            })),
            Enforcement::RlimitData { .. } => None,
        };
        match made {
            Some(Ok((group, procs))) => WorkerCeiling { limit, group: Some(group), procs: Some(procs) },
            Some(Err(e)) => {
                tracing::warn!("cannot make a memory cgroup for a worker ({e}); limiting it with RLIMIT_DATA instead");
                WorkerCeiling { limit, group: None, procs: None }
            }
            None => WorkerCeiling { limit, group: None, procs: None },
        }
    }

    /// Makes the child join its group (or set its rlimit) between `fork` and `exec`.
    pub fn apply(&self, cmd: &mut tokio::process::Command) {
        let fd = self.procs.as_ref().map(AsRawFd::as_raw_fd);
        let limit = self.limit as libc::rlim_t;
        let rlimit = self.group.is_none();
        // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe system calls
        // (write(2) on an fd the parent keeps open until the spawn returned, setrlimit(2)); it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(fd) = fd {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if rlimit {
                    let lim = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                    if libc::setrlimit(libc::RLIMIT_DATA, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }

    /// Closes the parent's copy of the group's `cgroup.procs` (after the spawn).
    pub fn spawned(&mut self) {
        self.procs = None;
    }

    /// The worker's own group, when a cgroup enforces its ceiling.
    pub fn group(&self) -> Option<&Cgroup> {
        self.group.as_ref()
    }

    /// The mechanism this worker really got.
    pub fn mechanism(&self) -> &'static str {
        match self.group {
            Some(Cgroup::V2(_)) => "cgroup_v2",
            Some(Cgroup::V1(_)) => "cgroup_v1",
            None => "rlimit_data",
        }
    }

    /// Whether the kernel's OOM killer acted in the worker's group (always false for the rlimit).
    pub fn oom_killed(&self) -> bool {
        self.group.as_ref().and_then(Cgroup::oom_kills).is_some_and(|n| n > 0)
    }

    /// Removes the worker's group once its processes are gone (retrying briefly while the kernel finishes them).
    pub async fn remove(mut self) {
        self.procs = None;
        let Some(group) = self.group.take() else { return };
        let dir = group.dir().to_path_buf();
        for _ in 0..50 {
            match std::fs::remove_dir(&dir) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        tracing::warn!("cannot remove the worker's memory cgroup {}; it is removed at the next start", dir.display());
    }
}

/// Creates a fresh child group of `parent`, sets its limits with `limit`, and opens its `cgroup.procs`.
fn make_group(
    parent: &Path,
    limit: impl FnOnce(&Path) -> std::io::Result<Cgroup>,
) -> std::io::Result<(Cgroup, OwnedFd)> {
    let n = NEXT_GROUP.fetch_add(1, Ordering::Relaxed);
    let dir = parent.join(group_name(n));
    std::fs::create_dir(&dir)?;
    let opened = limit(&dir).and_then(|group| Ok((group, open_for_write(&dir.join("cgroup.procs"))?)));
    if opened.is_err() {
        let _ = std::fs::remove_dir(&dir);
    }
    opened
}

fn open_for_write(path: &Path) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: a valid NUL-terminated path; the returned fd (when not negative) is owned by the OwnedFd alone.
    // O_CREAT changes nothing on a cgroup file system (the file exists with the group) and lets the tests use a
    // plain directory.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC | libc::O_CREAT, 0o644) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_failures_are_recognised() {
        for yes in [
            "memory allocation of 52428800 bytes failed\n",
            "terminate called after throwing an instance of 'std::bad_alloc'\n  what():  std::bad_alloc",
            "[E:onnxruntime:, bfc_arena.cc] Failed to allocate memory for requested buffer of size 1048576",
            "bulkhead worker: out of memory: the engine could not allocate",
        ] {
            assert!(allocation_failed(yes), "{yes}");
        }
        for no in ["fault injection: abort after 3 predictions", "segmentation fault", ""] {
            assert!(!allocation_failed(no), "{no}");
        }
    }

    #[test]
    fn enforcement_choices_parse() {
        assert_eq!("AUTO".parse::<EnforcementChoice>().unwrap(), EnforcementChoice::Auto);
        assert_eq!("rlimit".parse::<EnforcementChoice>().unwrap(), EnforcementChoice::Rlimit);
        assert!("swap".parse::<EnforcementChoice>().unwrap_err().contains("valid: auto, cgroup, rlimit"));
    }

    /// A v2 tree as files in a temporary directory: the group already delegates memory to its children, or this
    /// process must first move into a leaf (which a plain directory accepts, so the path is followed to the end).
    #[test]
    fn a_v2_group_is_found_and_prepared() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("user.slice/app");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
        std::fs::write(dir.join("cgroup.subtree_control"), "memory\n").unwrap();
        assert_eq!(v2_parent(root.path(), "/user.slice/app").unwrap(), dir);

        // A plain directory keeps the probe group's limit file: remove it as the kernel would.
        let probe = dir.join(format!("bulkhead-{}-probe", std::process::id()));
        std::fs::remove_dir_all(&probe).unwrap();
        std::fs::write(dir.join("cgroup.controllers"), "cpu pids\n").unwrap();
        assert!(v2_parent(root.path(), "/user.slice/app").unwrap_err().contains("memory controller is not available"));

        std::fs::write(dir.join("cgroup.controllers"), "cpu memory\n").unwrap();
        std::fs::write(dir.join("cgroup.subtree_control"), "").unwrap();
        assert_eq!(v2_parent(root.path(), "/user.slice/app").unwrap(), dir);
        std::fs::remove_dir_all(&probe).unwrap();
        let me = std::process::id().to_string();
        assert_eq!(std::fs::read_to_string(dir.join("bulkhead-server/cgroup.procs")).unwrap(), me);
        assert_eq!(std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap(), "+memory");

        // A worker's group: the limit, no swap, and removed again.
        let ceiling = MemoryCeiling { limit_bytes: 400 << 20, enforcement: Enforcement::CgroupV2 { parent: dir } };
        let w = WorkerCeiling::prepare(&ceiling);
        let group = w.group().unwrap().dir().to_path_buf();
        assert_eq!(std::fs::read_to_string(group.join("memory.max")).unwrap(), (400u64 << 20).to_string());
        assert_eq!(std::fs::read_to_string(group.join("memory.swap.max")).unwrap(), "0");
        assert_eq!(w.mechanism(), "cgroup_v2");
        assert!(!w.oom_killed());
        std::fs::write(group.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        assert!(w.oom_killed());
        for f in ["memory.max", "memory.swap.max", "memory.oom.group", "memory.events", "cgroup.procs"] {
            let _ = std::fs::remove_file(group.join(f));
        }
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(w.remove());
        assert!(!group.exists());
    }
}
