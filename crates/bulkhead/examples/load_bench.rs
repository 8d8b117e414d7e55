//! Server load benchmark, side by side in one run:
//!
//! 1. the in-process engine (no server, text in and vector out: tokenization included): single-sentence latency
//!    and batch-32 throughput on the serving unit;
//! 2. `bulkhead serve` under 64 concurrent keep-alive connections sending single-sentence `/v1/embeddings`
//!    requests (~15 tokens): throughput, p50 and p99, in blocks taking turns with 1. and 4.;
//! 3. the server at concurrency 1: p50 latency, measured in short blocks alternating with the in-process
//!    single-sentence reference of 1. (both see the same machine state);
//! 4. optionally sentence-transformers' batch-32 `encode` (set `BULKHEAD_ST_PYTHON` to a python that has it);
//! 5. optionally the same 64-connection load while `ort:cpu` segfaults every 500 predictions (`--faults`):
//!    non-2xx count and the crashes `/metrics` counted.
//!
//! `cargo build --release -p bulkhead && cargo run --release -p bulkhead --example load_bench -- [--seconds 10] [--faults [--fault-seconds 40]]`
//! (`BULKHEAD_BIN=PATH` serves with another build of `bulkhead`.)

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bulkhead_core::{Chain, ModelFiles, Platform};
use bulkhead_embed::{load_chain, Tokenizer};
use common::load::{LoadResult, Server};

/// A server with a fresh crash-history directory (one run's crashes must not quarantine a unit in the next).
struct Fresh {
    server: Server,
    _state: tempfile::TempDir,
}

impl std::ops::Deref for Fresh {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

fn start_server(bin: &str, faults: Option<&str>) -> anyhow::Result<Fresh> {
    let state = tempfile::tempdir()?;
    let log = state.path().join("server.log");
    let env: Vec<(&str, &str)> = faults.map(|f| ("BULKHEAD_FAULTS", f)).into_iter().collect();
    let (server, _) = Server::start(Path::new(bin), &[], &env, state.path(), &log)?;
    Ok(Fresh { server, _state: state })
}

/// The load of this benchmark: keep-alive connections, a 60 s client timeout.
async fn load(addr: &str, connections: usize, duration: Duration) -> LoadResult {
    common::load::load(addr, connections, duration, Duration::from_secs(60), false).await
}

/// The in-process engine on the serving unit (text in, vector out, as the server does: tokenization included).
struct InProcess {
    tokenizer: Tokenizer,
    loaded: bulkhead_embed::LoadedChain,
    texts: Vec<String>,
    done: usize,
}

impl InProcess {
    fn load() -> anyhow::Result<InProcess> {
        let path = bulkhead_testkit::minilm_folder().ok_or_else(|| anyhow::anyhow!("run scripts/setup.sh"))?;
        let model = ModelFiles::open(&path)?;
        let tokenizer = Tokenizer::load(&model)?;
        let engines = common::engines();
        let chain = Chain::parse("ALL", &Platform::detect())?;
        let loaded = load_chain(&engines, &model, &tokenizer, &chain)?;
        let texts = common::SENTENCES.iter().map(|s| s.to_string()).collect();
        Ok(InProcess { tokenizer, loaded, texts, done: 0 })
    }

    fn unit(&self) -> String {
        self.loaded.embedder.unit().to_string()
    }

    /// Batch-32 encodes for `seconds` (after 3 warm-up batches): (sentences, seconds taken).
    fn batch32(&mut self, seconds: f64) -> anyhow::Result<(f64, f64)> {
        let batch: Vec<String> = self.texts.iter().cycle().take(32).cloned().collect();
        let e = &mut self.loaded.embedder;
        for _ in 0..3 {
            e.embed_tokens(&self.tokenizer.encode(&batch)?)?;
        }
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed().as_secs_f64() < seconds {
            e.embed_tokens(&self.tokenizer.encode(&batch)?)?;
            n += 32;
        }
        Ok((n as f64, start.elapsed().as_secs_f64()))
    }

    /// Single-sentence latencies (ms) for `seconds`, one after the other.
    fn singles(&mut self, seconds: f64) -> anyhow::Result<Vec<f64>> {
        let mut lat = vec![];
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < seconds {
            let t = Instant::now();
            let text = &self.texts[self.done % self.texts.len()];
            self.done += 1;
            let rows = self.tokenizer.encode(std::slice::from_ref(text))?;
            self.loaded.embedder.embed_tokens(&rows)?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(lat)
    }
}

/// Rounds of the concurrency-1 comparison: in-process single sentences and the server at one connection alternate
/// in short blocks, so both see the same machine (on shared 2-core machines, minutes apart differ by more than the
/// 1 ms being measured).
const C1_ROUNDS: usize = 6;

/// sentence-transformers in a long-lived Python process (`BULKHEAD_ST_PYTHON`): each line of seconds sent runs
/// batch-32 `encode` that long and answers `sentences seconds`.
struct SentenceTransformers {
    child: Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl SentenceTransformers {
    fn start() -> Option<SentenceTransformers> {
        let python = std::env::var("BULKHEAD_ST_PYTHON").ok()?;
        let model = bulkhead_testkit::minilm_folder()?;
        let sentences = common::SENTENCES;
        let code = format!(
            "import sys,time,torch; from sentence_transformers import SentenceTransformer as S\n\
             m=S({model:?}, device='cpu'); s={sentences:?}*4\n\
             m.encode(s, batch_size=32); print('ready', flush=True)\n\
             for line in sys.stdin:\n    d=float(line); t=time.time(); n=0\n    \
             while time.time()-t < d: m.encode(s, batch_size=32); n+=32\n    \
             print(n, time.time()-t, flush=True)"
        );
        let mut child =
            Command::new(python).args(["-c", &code]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().ok()?;
        let stdin = child.stdin.take()?;
        let mut stdout = BufReader::new(child.stdout.take()?).lines();
        (stdout.next()?.ok()? == "ready").then_some(SentenceTransformers { child, stdin, stdout })
    }

    /// (sentences, seconds) of batch-32 encodes for `seconds`.
    fn run(&mut self, seconds: f64) -> Option<(f64, f64)> {
        use std::io::Write;
        writeln!(self.stdin, "{seconds}").ok()?;
        let line = self.stdout.next()?.ok()?;
        let mut it = line.split_whitespace().map(|x| x.parse::<f64>().ok());
        Some((it.next()??, it.next()??))
    }
}

impl Drop for SentenceTransformers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Rounds of the throughput comparison: the in-process engine, sentence-transformers and the server under 64
/// connections take turns in short blocks, so a slow minute of the shared machine hits all three alike.
const THROUGHPUT_ROUNDS: usize = 3;

/// What the side-by-side runs measured.
struct Measured {
    unit: String,
    inproc_tput: f64,
    inproc_p50: f64,
    st: Option<f64>,
    c64: LoadResult,
    c1: LoadResult,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let number = |flag: &str, default: f64| -> f64 {
        args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(default)
    };
    let seconds = number("--seconds", 10.0);
    // BULKHEAD_BIN runs another build of the server (an older one, for a before/after table).
    let bin = std::env::var("BULKHEAD_BIN").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/bulkhead").to_string_lossy().into_owned()
    });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let m = side_by_side(&rt, &bin, seconds)?;
    print_report(&m, seconds);
    if args.iter().any(|a| a == "--faults") {
        fault_run(&rt, &bin, &m.unit, number("--fault-seconds", 40.0))?;
    }
    Ok(())
}

/// Throughput of the in-process engine, sentence-transformers and the server under 64 connections in alternating
/// blocks; then concurrency 1 against in-process single sentences, alternating the same way. Pauses let ONNX
/// Runtime's (and torch's) spinning threads of one side go idle before the next runs.
fn side_by_side(rt: &tokio::runtime::Runtime, bin: &str, seconds: f64) -> anyhow::Result<Measured> {
    let mut inproc = InProcess::load()?;
    let unit = inproc.unit();
    let mut st = SentenceTransformers::start();
    let server = start_server(bin, None)?;
    rt.block_on(load(&server.addr, 8, Duration::from_secs(1)));
    let pause = Duration::from_millis(300);
    let block = seconds / THROUGHPUT_ROUNDS as f64;
    let (mut inproc_n, mut inproc_s, mut st_n, mut st_s) = (0.0, 0.0, 0.0, 0.0);
    let mut c64 = LoadResult::default();
    for _ in 0..THROUGHPUT_ROUNDS {
        let (n, t) = inproc.batch32(block / 2.0)?;
        (inproc_n, inproc_s) = (inproc_n + n, inproc_s + t);
        std::thread::sleep(pause);
        if let Some((n, t)) = st.as_mut().and_then(|st| st.run(block / 2.0)) {
            (st_n, st_s) = (st_n + n, st_s + t);
            std::thread::sleep(pause);
        }
        c64.absorb(rt.block_on(load(&server.addr, 64, Duration::from_secs_f64(block))));
        std::thread::sleep(pause);
    }
    c64.latencies.sort_by(f64::total_cmp);
    drop(st);
    let block = seconds / C1_ROUNDS as f64 / 2.0;
    let mut c1 = LoadResult::default();
    let mut inproc_lat = vec![];
    for _ in 0..C1_ROUNDS {
        inproc_lat.extend(inproc.singles(block)?);
        std::thread::sleep(pause);
        c1.absorb(rt.block_on(load(&server.addr, 1, Duration::from_secs_f64(block))));
        std::thread::sleep(pause);
    }
    Ok(Measured {
        unit,
        inproc_tput: inproc_n / inproc_s,
        inproc_p50: common::pct(&inproc_lat, 0.5),
        st: (st_s > 0.0).then(|| st_n / st_s),
        c64,
        c1,
    })
}

fn print_report(m: &Measured, seconds: f64) {
    let (c64, c1, unit) = (&m.c64, &m.c1, &m.unit);
    println!("all-MiniLM-L6-v2, single-sentence requests (~15 tokens), {seconds} s per load run");
    println!("{:<58} {:>12} {:>10} {:>10}", "what", "sentences/s", "p50 ms", "p99 ms");
    println!(
        "{:<58} {:>12.0} {:>10.2} {:>10}",
        format!("in-process engine on {unit} (batch-32 / single*)"),
        m.inproc_tput,
        m.inproc_p50,
        ""
    );
    let tput64 = c64.ok as f64 / c64.elapsed;
    println!(
        "{:<58} {:>12.0} {:>10.2} {:>10.2}",
        "bulkhead serve, 64 connections",
        tput64,
        common::pct(&c64.latencies, 0.5),
        common::pct(&c64.latencies, 0.99)
    );
    println!(
        "{:<58} {:>12.0} {:>10.2} {:>10.2}",
        "bulkhead serve, 1 connection",
        c1.ok as f64 / c1.elapsed,
        common::pct(&c1.latencies, 0.5),
        common::pct(&c1.latencies, 0.99)
    );
    match m.st {
        Some(s) => println!("{:<58} {:>12.0}", "sentence-transformers encode (batch 32)", s),
        None => {
            println!("{:<58} {:>12}", "sentence-transformers encode (batch 32)", "skipped (set BULKHEAD_ST_PYTHON)")
        }
    }
    println!();
    println!("server / in-process batch-32 throughput: {:.2}x", tput64 / m.inproc_tput);
    if let Some(s) = m.st {
        println!("server / sentence-transformers:          {:.2}x", tput64 / s);
    }
    println!(
        "throughputs measured in {THROUGHPUT_ROUNDS} rounds of alternating blocks; * single-sentence p50 in \
         {C1_ROUNDS} blocks alternating with the 1-connection server blocks"
    );
    println!(
        "server p50 at concurrency 1 - in-process single p50: {:+.2} ms",
        common::pct(&c1.latencies, 0.5) - m.inproc_p50
    );
    println!("failed requests: 64 connections {}, 1 connection {}", c64.failed(), c1.failed());
}

/// 64 connections for `seconds` while `unit` segfaults every 500 predictions: what was answered and what
/// `/metrics` counted.
fn fault_run(rt: &tokio::runtime::Runtime, bin: &str, unit: &str, seconds: f64) -> anyhow::Result<()> {
    let rule = format!("[{{\"unit\": \"{unit}\", \"kind\": \"segv\", \"after\": 500}}]");
    let server = start_server(bin, Some(&rule))?;
    // A prediction is a batch: long enough for several workers to reach 500 predictions.
    let faulty = rt.block_on(load(&server.addr, 64, Duration::from_secs_f64(seconds)));
    let (_, metrics) = server.call("GET", "/metrics", None)?;
    println!();
    println!("with {rule}:");
    println!(
        "  {} answered, {} non-2xx, {:.0} sentences/s, p99 {:.2} ms",
        faulty.ok,
        faulty.failed(),
        faulty.ok as f64 / faulty.elapsed,
        common::pct(&faulty.latencies, 0.99)
    );
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("bulkhead_worker_crashes_total{") || l.starts_with("bulkhead_worker_restarts_total{"))
    {
        println!("  {line}");
    }
    Ok(())
}

use std::path::Path;
