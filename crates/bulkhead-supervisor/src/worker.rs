//! The worker side: the body of the hidden `bulkhead worker` subcommand, and the load/warm-up/predict core it
//! shares with the in-process mode (`--isolation none`).
//!
//! A worker runs one model on one unit. It dies with its parent (`PR_SET_PDEATHSIG`), speaks the
//! [`protocol`](crate::protocol) on a private duplicate of fd 1 (fd 1 itself then points at stderr), loads the
//! model, warms up with [`warmup_rows`] (the live input preparation) and only then says `Ready`.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::str::FromStr;
use std::time::Instant;

use bulkhead_core::{GraphSession, ModelFiles, NamedTensor, SessionReport, TensorSpec, Unit};
use bulkhead_embed::{warmup_rows, Embedder, Engines, StageTiming, Tokenizer};

use crate::faults::{self, WorkerFaults};
use crate::protocol::{
    read_frame, write_frame, FrameError, Request, Response, WarmupShape, CRATE_VERSION, PROTOCOL_VERSION,
};

/// Iterations per warm-up shape (the first one pays one-time costs; the median is recorded).
pub const WARMUP_ITERATIONS: usize = 3;

/// Exit code of a worker whose arguments are wrong.
pub const EXIT_USAGE: i32 = 2;
/// Exit code of a worker that could not load its model (after sending `LoadFailed`).
pub const EXIT_LOAD_FAILED: i32 = 3;
/// Exit code of a worker whose protocol pipe broke.
pub const EXIT_PIPE: i32 = 4;

/// What a worker is told on its command line: `--unit UNIT --generation N --model-json JSON [--parent-pid PID]`.
/// Fault rules come from `BULKHEAD_FAULTS`, which the supervisor sets explicitly for each worker.
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
}

/// Bad worker arguments.
#[derive(Debug, Clone, thiserror::Error)]
#[error("bad worker arguments: {0} (expected --unit UNIT --generation N --model-json JSON [--parent-pid PID])")]
pub struct WorkerArgsError(pub String);

impl WorkerArgs {
    /// Parses the arguments after `worker`.
    pub fn parse(args: &[String]) -> Result<WorkerArgs, WorkerArgsError> {
        let (mut unit, mut model, mut generation, mut parent_pid) = (None, None, 0u32, None);
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
                other => return Err(WorkerArgsError(format!("unknown argument `{other}`"))),
            }
        }
        Ok(WorkerArgs {
            unit: unit.ok_or_else(|| WorkerArgsError("--unit is required".into()))?,
            model: model.ok_or_else(|| WorkerArgsError("--model-json is required".into()))?,
            generation,
            parent_pid,
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
        v
    }
}

/// Why loading failed: what `LoadFailed` carries.
#[derive(Debug, Clone)]
pub(crate) struct LoadFailure {
    pub kind: String,
    pub reason: String,
}

fn fail(kind: &str, reason: String) -> LoadFailure {
    LoadFailure { kind: kind.into(), reason }
}

/// What a worker runs: an embedding pipeline, or a plain graph (a tensor model).
enum Runner {
    Embed(Embedder),
    Graph {
        session: Box<dyn GraphSession>,
        /// Zeros of every input's shape (dynamic dimensions 1): warm-up and health probes.
        warm: Vec<NamedTensor>,
    },
}

/// A loaded, warmed-up model: the part shared by worker processes and the in-process mode.
pub(crate) struct Core {
    runner: Runner,
    faults: WorkerFaults,
    served: u64,
}

fn median_ms(mut run: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    let mut times = vec![];
    for _ in 0..WARMUP_ITERATIONS {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

impl Core {
    /// Loads `model` on `unit` (applying load faults); `on_loaded` is called between load and warm-up.
    pub fn load(
        engines: &Engines,
        model: &ModelFiles,
        unit: &Unit,
        faults: WorkerFaults,
        on_loaded: impl FnOnce(&SessionReport),
    ) -> Result<(Core, Vec<WarmupShape>), LoadFailure> {
        faults.at_load().map_err(|r| fail("model_rejected", r))?;
        if model.is_tensor_model() {
            return Core::load_graph(engines, model, unit, faults, on_loaded);
        }
        let tokenizer = Tokenizer::load(model).map_err(|e| fail("setup", e.to_string()))?;
        let session = engines.load(model, unit).map_err(|e| fail(e.kind(), e.to_string()))?;
        let mut embedder = Embedder::new(model, session);
        on_loaded(embedder.report());
        let mut warmup = vec![];
        for rows in warmup_rows(&tokenizer) {
            let ms = median_ms(|| embedder.embed_tokens(&rows).map(|_| ()).map_err(|e| e.to_string()))
                .map_err(|e| fail("inference", format!("warm-up failed: {e}")))?;
            let seq = rows.iter().map(Vec::len).max().unwrap_or(0);
            warmup.push(WarmupShape { batch: rows.len(), seq, ms });
        }
        if warmup.is_empty() {
            return Err(fail("setup", "the tokenizer produced no warm-up rows".into()));
        }
        Ok((Core { runner: Runner::Embed(embedder), faults, served: 0 }, warmup))
    }

    /// A tensor model: load the graph, warm up on zeros of every input's shape (what a health probe sends too).
    fn load_graph(
        engines: &Engines,
        model: &ModelFiles,
        unit: &Unit,
        faults: WorkerFaults,
        on_loaded: impl FnOnce(&SessionReport),
    ) -> Result<(Core, Vec<WarmupShape>), LoadFailure> {
        let mut session = engines.load_graph(model, unit).map_err(|e| fail(e.kind(), e.to_string()))?;
        on_loaded(session.report());
        let warm: Vec<NamedTensor> = session.inputs().iter().filter_map(TensorSpec::zeros).collect();
        let ms = median_ms(|| session.run(&warm).map(|_| ()).map_err(|e| e.to_string()))
            .map_err(|e| fail("inference", format!("warm-up on zero inputs failed: {e}")))?;
        let (batch, seq) = warm.first().map_or((1, 1), NamedTensor::rows_and_width);
        Ok((Core { runner: Runner::Graph { session, warm }, faults, served: 0 }, vec![WarmupShape { batch, seq, ms }]))
    }

    pub fn report(&self) -> &SessionReport {
        match &self.runner {
            Runner::Embed(e) => e.report(),
            Runner::Graph { session, .. } => session.report(),
        }
    }

    /// A tensor model's inputs and outputs (empty for an embedding model).
    pub fn signature(&self) -> (Vec<TensorSpec>, Vec<TensorSpec>) {
        match &self.runner {
            Runner::Embed(_) => (vec![], vec![]),
            Runner::Graph { session, .. } => (session.inputs().to_vec(), session.outputs().to_vec()),
        }
    }

    /// The `Ready` message for this core.
    pub fn ready(&self, warmup: Vec<WarmupShape>, rss_bytes: u64) -> Response {
        let (inputs, outputs) = self.signature();
        Response::Ready { report: self.report().clone(), warmup, rss_bytes, inputs, outputs }
    }

    /// Answers one request (applying per-prediction faults first).
    pub fn answer(&mut self, req: Request) -> Option<Response> {
        match req {
            Request::Predict { id, rows, texts, prompt_tokens } => {
                Some(self.predict(id, &rows, &texts, &prompt_tokens))
            }
            Request::Infer { id, inputs } => Some(self.infer(id, inputs)),
            Request::Shutdown => None,
        }
    }

    /// Runs one prediction (applying per-prediction faults first); `prompt_tokens` as in [`Request::Predict`].
    pub fn predict(&mut self, id: u64, rows: &[Vec<i64>], texts: &[String], prompt_tokens: &[usize]) -> Response {
        self.faults.before_predict(self.served, texts);
        self.served += 1;
        let Runner::Embed(embedder) = &mut self.runner else {
            return Response::Failed { id, message: "this model takes named tensors, not texts".into() };
        };
        match embedder.embed_prompted(rows, prompt_tokens) {
            Ok((vectors, timing)) => {
                Response::Predicted { id, vectors, timing, rss_bytes: rss_bytes(None).unwrap_or(0) }
            }
            Err(e) => Response::Failed { id, message: e.to_string() },
        }
    }

    /// Runs a tensor model on `inputs` (its warm-up inputs when empty).
    pub fn infer(&mut self, id: u64, inputs: Vec<NamedTensor>) -> Response {
        self.faults.before_predict(self.served, &[]);
        self.served += 1;
        let Runner::Graph { session, warm } = &mut self.runner else {
            return Response::Failed { id, message: "this is an embedding model: send texts or token ids".into() };
        };
        let inputs = if inputs.is_empty() { &warm[..] } else { &inputs[..] };
        let t = Instant::now();
        match session.run(inputs) {
            Ok(outputs) => {
                let timing = StageTiming { infer_ms: t.elapsed().as_secs_f64() * 1e3, ..StageTiming::default() };
                Response::Inferred { id, outputs, timing, rss_bytes: rss_bytes(None).unwrap_or(0) }
            }
            Err(e) => Response::Failed { id, message: e.to_string() },
        }
    }
}

/// Resident memory of `pid` (or of this process) from `/proc/PID/statm`; `None` where unavailable.
pub fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/statm"),
        None => "/proc/self/statm".into(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * if page > 0 { page as u64 } else { 4096 })
}

/// Parses the arguments after `worker` and runs the worker; returns the process exit code.
pub fn worker_main(engines: &Engines, args: &[String]) -> i32 {
    match WorkerArgs::parse(args) {
        Ok(a) => run_worker(engines, a),
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
            send(&mut out, &Response::LoadFailed { reason: e.to_string(), kind: "setup".into() });
            return EXIT_USAGE;
        }
    };
    faults::log_active(&rules, &format!("worker {} generation {}", args.unit, args.generation));
    let wf = WorkerFaults::for_worker(&rules, &args.unit, args.generation);
    let mut loaded_ok = true;
    let loaded = Core::load(engines, &args.model, &args.unit, wf, |report| {
        loaded_ok = write_frame(&mut out, &Response::Loaded { report: report.clone() }).is_ok();
    });
    if !loaded_ok {
        return EXIT_PIPE;
    }
    let mut core = match loaded {
        Ok((core, warmup)) => {
            let ready = core.ready(warmup, rss_bytes(None).unwrap_or(0));
            if !send(&mut out, &ready) {
                return EXIT_PIPE;
            }
            core
        }
        Err(f) => {
            send(&mut out, &Response::LoadFailed { reason: f.reason, kind: f.kind });
            return EXIT_LOAD_FAILED;
        }
    };
    loop {
        match read_frame::<Request>(&mut input) {
            Ok(req) => match core.answer(req) {
                Some(answer) => {
                    if !send(&mut out, &answer) {
                        return EXIT_PIPE;
                    }
                }
                None => return 0,
            },
            Err(FrameError::Closed) => return 0,
            Err(e) => {
                eprintln!("bulkhead worker: bad request frame: {e}");
                return EXIT_PIPE;
            }
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
        let a = WorkerArgs { unit: Unit::CANDLE_CPU, model, generation: 3, parent_pid: Some(42) };
        let b = WorkerArgs::parse(&a.to_args()).unwrap();
        assert_eq!((b.unit, b.generation, b.parent_pid, b.model), (a.unit, 3, Some(42), a.model));
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(WorkerArgs::parse(&s(&["--unit"])).unwrap_err().to_string().contains("needs a value"));
        assert!(WorkerArgs::parse(&s(&["--unit", "x:y"])).unwrap_err().to_string().contains("unknown compute unit"));
        assert!(WorkerArgs::parse(&s(&["--unit", "ort:cpu"])).unwrap_err().to_string().contains("--model-json"));
        assert!(WorkerArgs::parse(&s(&["--bogus"])).unwrap_err().to_string().contains("unknown argument"));
    }

    #[test]
    fn rss_is_readable() {
        assert!(rss_bytes(None).unwrap_or(0) > 1 << 20);
    }
}
