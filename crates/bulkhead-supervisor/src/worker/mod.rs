//! The worker side: the body of the hidden `bulkhead worker` subcommand; the load/warm-up/run part it shares with
//! the in-process mode (`--isolation none`) is `runner`.
//!
//! A worker runs one model on one unit. It dies with its parent (`PR_SET_PDEATHSIG`), records who sent a fatal
//! signal ([`signals`]), speaks the [`protocol`](crate::protocol) on a private duplicate of fd 1 (fd 1 itself then
//! points at stderr), loads the model, warms up with the live input preparation and only then says `Ready`.

mod runner;
mod segment;
pub mod signals;
mod speech;
mod towers;

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

use bulkhead_core::{ModelFiles, Unit};
use bulkhead_embed::Engines;

use crate::client::ceiling::{allocation_failed, OUT_OF_MEMORY_MARKER};
use crate::faults::{self, WorkerFaults};
use crate::protocol::{
    read_frame, write_frame, FrameError, LoadFailureKind, Request, Response, RunError, CRATE_VERSION, LONG_NICE,
    PROTOCOL_VERSION,
};
pub(crate) use runner::Runner;
pub use runner::WARMUP_ITERATIONS;

/// Exit code of a worker whose arguments are wrong.
pub const EXIT_USAGE: i32 = 2;
/// Exit code of a worker that could not load its model (after sending `LoadFailed`).
pub const EXIT_LOAD_FAILED: i32 = 3;
/// Exit code of a worker whose protocol pipe broke.
pub const EXIT_PIPE: i32 = 4;
/// Exit code of a worker whose engine could not allocate memory (at its `RLIMIT_DATA` ceiling): it exits rather than
/// answer, so the request is retried on a fresh worker and the death is counted as out of memory.
pub const EXIT_OUT_OF_MEMORY: i32 = 5;

/// What a worker is told on its command line: `--unit UNIT --generation N --model-json JSON [--parent-pid PID]
/// [--threads N] [--warmup-iterations N]`. Fault rules come from `BULKHEAD_FAULTS`, which the supervisor sets explicitly for each worker.
#[derive(Debug, Clone)]
pub struct WorkerArgs {
    /// The unit to load the model on.
    pub unit: Unit,
    /// The model (as the supervisor discovered it).
    pub model: ModelFiles,
    /// Which lifetime of this unit this worker is (0 = first), for fault rules.
    pub generation: u32,
    /// The supervisor's pid: the worker exits at once if its parent is already someone else.
    pub parent_pid: Option<u32>,
    /// Intra-op threads of the engine (`None`: the engine's default, one per core). Set when several workers share
    /// the cores.
    pub threads: Option<usize>,
    /// Warm-up iterations per shape ([`WARMUP_ITERATIONS`] unless told otherwise).
    pub warmup_iterations: usize,
}

/// Bad worker arguments.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "bad worker arguments: {0} (expected --unit UNIT --generation N --model-json JSON [--parent-pid PID] [--threads N])"
)]
pub struct WorkerArgsError(pub String);

impl WorkerArgs {
    /// Parses the arguments after `worker`.
    pub fn parse(args: &[String]) -> Result<WorkerArgs, WorkerArgsError> {
        let (mut unit, mut model, mut generation, mut parent_pid, mut threads) = (None, None, 0u32, None, None);
        let mut warmup_iterations = WARMUP_ITERATIONS;
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| WorkerArgsError(format!("{flag} needs a value")));
            match flag.as_str() {
                "--unit" => unit = Some(Unit::from_str(value()?).map_err(|e| WorkerArgsError(e.to_string()))?),
                "--model-json" => {
                    model = Some(
                        serde_json::from_str(value()?).map_err(|e| WorkerArgsError(format!("--model-json: {e}")))?,
                    )
                }
                "--generation" => {
                    generation = value()?.parse().map_err(|e| WorkerArgsError(format!("--generation: {e}")))?
                }
                "--parent-pid" => {
                    parent_pid = Some(value()?.parse().map_err(|e| WorkerArgsError(format!("--parent-pid: {e}")))?)
                }
                "--threads" => {
                    let n: usize = value()?.parse().map_err(|e| WorkerArgsError(format!("--threads: {e}")))?;
                    threads = Some(n).filter(|&n| n > 0);
                }
                "--warmup-iterations" => {
                    let n: usize =
                        value()?.parse().map_err(|e| WorkerArgsError(format!("--warmup-iterations: {e}")))?;
                    warmup_iterations = n.max(1);
                }
                other => return Err(WorkerArgsError(format!("unknown argument `{other}`"))),
            }
        }
        Ok(WorkerArgs {
            unit: unit.ok_or_else(|| WorkerArgsError("--unit is required".into()))?,
            model: model.ok_or_else(|| WorkerArgsError("--model-json is required".into()))?,
            generation,
            parent_pid,
            threads,
            warmup_iterations,
        })
    }

    /// The inverse of [`WorkerArgs::parse`].
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec![
            "--unit".into(),
            self.unit.to_string(),
            "--generation".into(),
            self.generation.to_string(),
            "--model-json".into(),
            serde_json::to_string(&self.model).unwrap_or_default(),
        ];
        if let Some(p) = self.parent_pid {
            v.extend(["--parent-pid".into(), p.to_string()]);
        }
        if let Some(t) = self.threads {
            v.extend(["--threads".into(), t.to_string()]);
        }
        if self.warmup_iterations != WARMUP_ITERATIONS {
            v.extend(["--warmup-iterations".into(), self.warmup_iterations.to_string()]);
        }
        v
    }
}

pub use crate::client::proc::rss_bytes;
/// Parses the arguments after `worker` and runs the worker; returns the process exit code. `engines` builds the
/// engine registry for the requested intra-op thread count.
pub fn worker_main(engines: impl FnOnce(Option<usize>) -> Engines, args: &[String]) -> i32 {
    match WorkerArgs::parse(args) {
        Ok(a) => run_worker(&engines(a.threads), a),
        Err(e) => {
            eprintln!("bulkhead worker: {e}");
            EXIT_USAGE
        }
    }
}

/// The body of `bulkhead worker`: handshake, load, warm up, `Ready`, then serve until `Shutdown` or end of input.
/// Returns the exit code (0 after a clean shutdown).
pub fn run_worker(engines: &Engines, args: WorkerArgs) -> i32 {
    die_with_parent(args.parent_pid);
    signals::install();
    let proto = match protocol_channel() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("bulkhead worker: cannot set up the protocol channel: {e}");
            return EXIT_PIPE;
        }
    };
    let mut out = BufWriter::new(proto);
    let mut input = BufReader::new(std::io::stdin().lock());
    let send = |out: &mut BufWriter<File>, msg: &Response| write_frame(out, msg).is_ok();

    let hello = Response::Hello { protocol: PROTOCOL_VERSION, version: CRATE_VERSION.into(), pid: std::process::id() };
    if !send(&mut out, &hello) {
        return EXIT_PIPE;
    }
    let rules = match faults::from_env() {
        Ok(r) => r,
        Err(e) => {
            send(&mut out, &Response::LoadFailed { kind: LoadFailureKind::Setup, reason: e.to_string() });
            return EXIT_USAGE;
        }
    };
    faults::log_active(&rules, &format!("worker {} generation {}", args.unit, args.generation));
    let wf = WorkerFaults::for_worker(&rules, &args.unit, args.generation);
    let mut loaded_ok = true;
    let loaded = Runner::load(engines, &args.model, &args.unit, wf, args.warmup_iterations, |report| {
        loaded_ok = write_frame(&mut out, &Response::Loaded { report: report.clone() }).is_ok();
    });
    if !loaded_ok {
        return EXIT_PIPE;
    }
    let runner = match loaded {
        Ok((runner, warmup)) => {
            let ready = runner.ready(warmup, rss_bytes(None).unwrap_or(0));
            if !send(&mut out, &ready) {
                return EXIT_PIPE;
            }
            runner
        }
        Err(f) => {
            send(&mut out, &f.message());
            return EXIT_LOAD_FAILED;
        }
    };
    let runner = Arc::new(Mutex::new(runner));
    // Without it, long predictions run on the main thread like the others.
    let background =
        Background::start().map_err(|e| eprintln!("bulkhead worker: no thread for long predictions: {e}")).ok();
    loop {
        match read_frame::<Request>(&mut input) {
            Ok(Request::Run { id, payload, texts, long }) => {
                let answer = match (long, &background) {
                    (true, Some(bg)) => {
                        let runner = runner.clone();
                        bg.run(move || lock(&runner).run(id, &payload, &texts))
                    }
                    _ => lock(&runner).run(id, &payload, &texts),
                };
                if let Response::Failed { error: RunError::Engine(msg), .. } = &answer {
                    if allocation_failed(msg) {
                        eprintln!("{OUT_OF_MEMORY_MARKER}: {msg}");
                        return EXIT_OUT_OF_MEMORY;
                    }
                }
                if !send(&mut out, &answer) {
                    return EXIT_PIPE;
                }
            }
            Ok(Request::Shutdown) => return 0,
            Err(FrameError::Closed) => return 0,
            Err(e) => {
                eprintln!("bulkhead worker: bad request frame: {e}");
                return EXIT_PIPE;
            }
        }
    }
}

/// The runner, also after a panic elsewhere (the worker is exiting then).
fn lock(runner: &Mutex<Runner>) -> MutexGuard<'_, Runner> {
    runner.lock().unwrap_or_else(|e| e.into_inner())
}

/// The thread that runs long predictions: its nice value is [`LONG_NICE`] over the worker's (raising it needs no
/// privilege, and it never has to come back down: short predictions run on the main thread). An engine with one
/// intra-op thread computes on the calling thread, so the whole forward pass runs at that priority; the pool
/// threads of an engine with several keep theirs. The thread lives as long as the worker, so the engine's
/// per-thread buffers are made once.
struct Background {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl Background {
    fn start() -> std::io::Result<Background> {
        let (jobs, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        std::thread::Builder::new().name("long predictions".into()).spawn(move || {
            crate::priority::lower_this_thread(LONG_NICE);
            while let Ok(job) = rx.recv() {
                job();
            }
        })?;
        Ok(Background { jobs })
    }

    /// Runs `f` there and waits for it; a panic in `f` goes on in the caller.
    fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job = move || {
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        };
        if self.jobs.send(Box::new(job)).is_err() {
            panic!("the thread of long predictions is gone");
        }
        match rx.recv() {
            Ok(Ok(r)) => r,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => panic!("the thread of long predictions is gone"),
        }
    }
}

/// Asks the kernel to SIGKILL this process when its parent dies, and exits if the parent is already gone.
fn die_with_parent(parent: Option<u32>) {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number; no memory is passed.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
    }
    if let Some(p) = parent {
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } as u32 != p {
            eprintln!("bulkhead worker: parent {p} is gone; exiting");
            std::process::exit(EXIT_PIPE);
        }
    }
}

/// Duplicates fd 1 into a private protocol fd and points fd 1 at stderr.
fn protocol_channel() -> std::io::Result<File> {
    use std::os::fd::FromRawFd;
    // SAFETY: dup/dup2 on the standard descriptors; the new fd is owned by the returned File only.
    unsafe {
        let fd = libc::dup(1);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        if libc::dup2(2, 1) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(File::from_raw_fd(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip_and_errors() {
        let model: ModelFiles = serde_json::from_value(serde_json::json!({
            "name": "m", "source": "/m", "config": null, "tokenizer": null, "safetensors": null, "onnx": "/m/model.onnx",
            "pooling": "mean", "normalize": true, "max_seq_length": 256, "pad_token_id": 0,
            "architecture": null, "model_type": null
        }))
        .unwrap();
        let a = WorkerArgs {
            unit: Unit::CANDLE_CPU,
            model,
            generation: 3,
            parent_pid: Some(42),
            threads: Some(2),
            warmup_iterations: 1,
        };
        let b = WorkerArgs::parse(&a.to_args()).unwrap();
        assert_eq!((b.unit, b.generation, b.parent_pid, b.threads, b.model), (a.unit, 3, Some(42), Some(2), a.model));
        assert_eq!(b.warmup_iterations, 1);
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(WorkerArgs::parse(&s(&["--unit"])).unwrap_err().to_string().contains("needs a value"));
        assert!(WorkerArgs::parse(&s(&["--unit", "x:y"])).unwrap_err().to_string().contains("unknown compute unit"));
        assert!(WorkerArgs::parse(&s(&["--unit", "ort:cpu"])).unwrap_err().to_string().contains("--model-json"));
        assert!(WorkerArgs::parse(&s(&["--bogus"])).unwrap_err().to_string().contains("unknown argument"));
    }
}
