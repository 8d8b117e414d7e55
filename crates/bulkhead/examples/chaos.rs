//! The chaos harness: a real `bulkhead serve` under a real load, with real faults from outside, printing what a
//! client saw. Driven by `scripts/chaos.sh` and `scripts/soak.sh`; every mode prints a table.
//!
//! * `storm` (default): `--connections` keep-alive connections for `--seconds`; `--count` signals spread evenly
//!   (`--signals`, default SEGV,KILL,ABRT,STOP in turn) to the serving worker, from outside. Then `/health`, then the
//!   server is stopped and restarted on the same crash history: it must serve at once.
//! * `chain`: `BULKHEAD_FAULTS` makes every unit of the chain crash on every 4th prediction; every request must be
//!   answered.
//! * `soak`: leak and segv faults at a steady rate under constant load; resident memory sampled over time.
//! * `replicas`: 1 worker x 2 threads vs 2 workers x 1 thread, quiet and under the storm, in alternating rounds.
//!
//! `cargo build --release -p bulkhead && cargo run --release -p bulkhead --example chaos -- [MODE] [--seconds 60]
//! [--connections 32] [--count 10] [--signals SEGV,KILL,ABRT,STOP] [--bin PATH] [--check] [-- SERVE ARGS...]`
//! `--check` exits 1 when a request failed, `/health` is not 200 afterwards, or the restart does not serve (timing
//! targets are printed, never asserted: machines are noisy).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::load::{load, LoadResult, Server};

/// The command line.
struct Opts {
    mode: String,
    bin: PathBuf,
    seconds: f64,
    connections: usize,
    count: usize,
    signals: Vec<(String, i32)>,
    timeout: Duration,
    check: bool,
    serve_args: Vec<String>,
    rounds: usize,
    sample_s: f64,
}

fn signal_number(name: &str) -> anyhow::Result<i32> {
    Ok(match name.trim().trim_start_matches("SIG").to_ascii_uppercase().as_str() {
        "SEGV" => libc::SIGSEGV,
        "KILL" => libc::SIGKILL,
        "ABRT" => libc::SIGABRT,
        "STOP" => libc::SIGSTOP,
        "TERM" => libc::SIGTERM,
        "BUS" => libc::SIGBUS,
        other => anyhow::bail!("unknown signal `{other}`; use SEGV, KILL, ABRT, STOP, TERM or BUS"),
    })
}

impl Opts {
    fn parse() -> anyhow::Result<Opts> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let (ours, serve_args) = match args.iter().position(|a| a == "--") {
            Some(i) => (args[..i].to_vec(), args[i + 1..].to_vec()),
            None => (args, vec![]),
        };
        let value = |flag: &str| ours.iter().position(|a| a == flag).and_then(|i| ours.get(i + 1)).cloned();
        let num = |flag: &str, default: f64| -> anyhow::Result<f64> {
            value(flag).map_or(Ok(default), |v| v.parse().map_err(|_| anyhow::anyhow!("{flag}: `{v}` is not a number")))
        };
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let signals = value("--signals").unwrap_or_else(|| "SEGV,KILL,ABRT,STOP".into());
        Ok(Opts {
            mode: ours.first().filter(|a| !a.starts_with("--")).cloned().unwrap_or_else(|| "storm".into()),
            bin: value("--bin").map(PathBuf::from).unwrap_or_else(|| root.join("target/release/bulkhead")),
            seconds: num("--seconds", 60.0)?,
            connections: num("--connections", 32.0)? as usize,
            count: num("--count", 10.0)? as usize,
            signals: signals
                .split(',')
                .map(|s| Ok((s.trim().to_string(), signal_number(s)?)))
                .collect::<anyhow::Result<_>>()?,
            timeout: Duration::from_secs_f64(num("--timeout-s", 30.0)?),
            check: ours.iter().any(|a| a == "--check"),
            serve_args,
            rounds: num("--rounds", 2.0)? as usize,
            sample_s: num("--sample-s", 60.0)?,
        })
    }
}

/// The `/units` view of the (first) model served.
fn first_model(server: &Server) -> serde_json::Value {
    let v = server.units().unwrap_or_default();
    v["models"].as_object().and_then(|m| m.values().next().cloned()).unwrap_or_default()
}

/// The units of the first model.
fn units_of(server: &Server) -> Vec<serde_json::Value> {
    first_model(server)["units"].as_array().cloned().unwrap_or_default()
}

/// The pid of a serving worker of the first model (the `workers` list where the build has one, else `pid`).
fn serving_pid(server: &Server) -> Option<u32> {
    let units = units_of(server);
    for u in units.iter().filter(|u| u["state"] == "serving") {
        if let Some(ws) = u.get("workers").and_then(|w| w.as_array()) {
            if let Some(p) = ws.iter().find(|w| w["state"] == "serving").and_then(|w| w["pid"].as_u64()) {
                return Some(p as u32);
            }
        }
        if let Some(p) = u["pid"].as_u64() {
            return Some(p as u32);
        }
    }
    None
}

/// Deaths of the first model's units, by cause where the build records causes, else by exit.
fn deaths(server: &Server) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for u in units_of(server) {
        let by = u.get("crashes_by_cause").or_else(|| u.get("crashes_by_exit"));
        for (k, n) in by.and_then(|b| b.as_object()).cloned().unwrap_or_default() {
            *out.entry(format!("{} {k}", u["unit"].as_str().unwrap_or("?"))).or_default() += n.as_u64().unwrap_or(0);
        }
    }
    out
}

/// Sends `count` signals spread evenly over `duration`, in turn from `signals`, to the serving worker; returns what
/// was sent.
async fn storm(server: &Server, signals: &[(String, i32)], count: usize, duration: Duration) -> Vec<String> {
    let mut sent = vec![];
    let every = duration / (count as u32 + 1);
    let mut next = Instant::now() + every;
    let mut i = 0;
    while i < count {
        tokio::time::sleep_until(next.into()).await;
        let (name, sig) = &signals[i % signals.len()];
        // A worker may be restarting: wait for a serving one (at most one period).
        let mut pid = None;
        while pid.is_none() && Instant::now() < next + every {
            pid = serving_pid(server);
            if pid.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if let Some(pid) = pid {
            // SAFETY: signalling a worker process of the server this harness started.
            unsafe { libc::kill(pid as i32, *sig) };
            sent.push(format!("SIG{name}"));
        }
        i += 1;
        next += every;
    }
    sent
}

fn row(label: &str, r: &LoadResult, extra: &str) {
    let non_2xx: usize = r.non_2xx.values().sum();
    println!(
        "| {label} | {} | {} | {non_2xx} | {} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {extra} |",
        r.ok + r.failed(),
        r.ok,
        r.timeouts,
        r.errors,
        r.ok as f64 / r.elapsed.max(1e-9),
        common::pct(&r.latencies, 0.5),
        common::pct(&r.latencies, 0.99),
        r.latencies.last().copied().unwrap_or(f64::NAN),
    );
}

fn header() {
    println!("| run | requests | 2xx | non-2xx | timeouts | errors | req/s | p50 ms | p99 ms | max ms | notes |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
}

struct Outcome {
    load: LoadResult,
    signals: Vec<String>,
    deaths: BTreeMap<String, u64>,
    health: u16,
}

/// Load (and a storm when `signals` is given) on a running server.
fn drive(
    rt: &tokio::runtime::Runtime,
    o: &Opts,
    server: &Server,
    seconds: f64,
    signals: Option<&[(String, i32)]>,
) -> Outcome {
    let duration = Duration::from_secs_f64(seconds);
    let (load, signals) = rt.block_on(async {
        let l = load(&server.addr, o.connections, duration, o.timeout, true);
        match signals {
            Some(s) => tokio::join!(l, storm(server, s, o.count, duration)),
            None => (l.await, vec![]),
        }
    });
    // Give the supervisor a moment to restart the last victim before asking for health.
    std::thread::sleep(Duration::from_secs(2));
    let health = server.call("GET", "/health", None).map(|(s, _)| s).unwrap_or(0);
    Outcome { load, signals, deaths: deaths(server), health }
}

fn describe(out: &Outcome) -> String {
    let deaths: Vec<String> = out.deaths.iter().filter(|(_, &n)| n > 0).map(|(k, n)| format!("{k}: {n}")).collect();
    format!(
        "{} signals; deaths {}; /health {}",
        out.signals.len(),
        if deaths.is_empty() { "none".into() } else { deaths.join(", ") },
        out.health
    )
}

fn args_of(o: &Opts) -> Vec<&str> {
    o.serve_args.iter().map(String::as_str).collect()
}

fn mode_storm(rt: &tokio::runtime::Runtime, o: &Opts, dir: &Path) -> anyhow::Result<bool> {
    let log = dir.join("server.log");
    let (server, _) = Server::start(&o.bin, &args_of(o), &[], dir, &log)?;
    let out = drive(rt, o, &server, o.seconds, Some(&o.signals));
    let list = o.signals.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(",");
    header();
    let label = format!("storm: {} x SIG{{{list}}} in {} s, {} connections", o.count, o.seconds, o.connections);
    row(&label, &out.load, &describe(&out));
    server.stop()?;
    // A restart right after the storm, on the same crash history.
    let started = Server::start(&o.bin, &args_of(o), &[], dir, &log);
    let restart_ok = match &started {
        Ok((s, took)) => {
            let (status, _) = s.call("POST", "/v1/embeddings", Some(r#"{"input": "after the storm"}"#))?;
            println!(
                "\nrestart on the same crash history: listening after {:.1} s; first request {status}",
                took.as_secs_f64()
            );
            status == 200
        }
        Err(e) => {
            println!("\nrestart on the same crash history: FAILED: {e}");
            false
        }
    };
    let p99 = common::pct(&out.load.latencies, 0.99);
    println!(
        "targets: 0 non-2xx, 0 timeouts, p99 <= 3000 ms ({}), /health 200 afterwards, restart serves at once",
        if p99 <= 3000.0 { "met" } else { "missed" }
    );
    Ok(out.load.failed() == 0 && out.health == 200 && restart_ok)
}

fn mode_chain(rt: &tokio::runtime::Runtime, o: &Opts, dir: &Path) -> anyhow::Result<bool> {
    let faults = r#"[{"unit":"ort:cpu","kind":"segv","after":3},{"unit":"candle:cpu","kind":"segv","after":3}]"#;
    let log = dir.join("server.log");
    let (server, _) = Server::start(&o.bin, &args_of(o), &[("BULKHEAD_FAULTS", faults)], dir, &log)?;
    let out = drive(rt, o, &server, o.seconds, None);
    header();
    row(
        &format!("every unit crashes on every 4th prediction, {} connections", o.connections),
        &out.load,
        &describe(&out),
    );
    Ok(out.load.failed() == 0)
}

/// Resident memory of `pid` (from `/proc`), bytes.
fn rss(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    text.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4096
}

fn mode_soak(rt: &tokio::runtime::Runtime, o: &Opts, dir: &Path) -> anyhow::Result<bool> {
    let faults = r#"[{"unit":"ort:cpu","kind":"leak","mb":2},{"unit":"ort:cpu","kind":"segv","after":1500}]"#;
    let growth_mb = 150u64;
    let mut args = args_of(o);
    let growth = growth_mb.to_string();
    args.extend(["--recycle-growth-mb", &growth]);
    let log = dir.join("server.log");
    let (server, _) = Server::start(&o.bin, &args, &[("BULKHEAD_FAULTS", faults)], dir, &log)?;
    let base_worker = worker_rss(&server);
    println!("soak: {faults}, --recycle-growth-mb {growth_mb}, {} connections, {} s\n", o.connections, o.seconds);
    println!("| t s | requests | failed | server RSS MiB | worker RSS MiB | recycles | deaths |");
    println!("|---:|---:|---:|---:|---:|---:|---|");
    let mut total = LoadResult::default();
    let (mut peak_server, mut peak_worker) = (0u64, 0u64);
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < o.seconds {
        let block = o.sample_s.min(o.seconds - t0.elapsed().as_secs_f64()).max(1.0);
        let part = rt.block_on(load(&server.addr, o.connections, Duration::from_secs_f64(block), o.timeout, true));
        total.absorb(part);
        let (s, w) = (rss(server.child.id()), worker_rss(&server));
        (peak_server, peak_worker) = (peak_server.max(s), peak_worker.max(w));
        let recycles: u64 = units_of(&server).iter().map(|u| u["recycles"].as_u64().unwrap_or(0)).sum();
        let d: Vec<String> = deaths(&server).into_iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!(
            "| {:.0} | {} | {} | {:.0} | {:.0} | {recycles} | {} |",
            t0.elapsed().as_secs_f64(),
            total.ok + total.failed(),
            total.failed(),
            s as f64 / 1048576.0,
            w as f64 / 1048576.0,
            d.join(", ")
        );
    }
    total.latencies.sort_by(f64::total_cmp);
    let bound = base_worker + growth_mb * 3 / 2 * 1048576 + (64 << 20);
    println!();
    header();
    row(
        "soak total",
        &total,
        &format!(
            "peak worker RSS {} MiB (bound {} MiB), peak server RSS {} MiB",
            peak_worker >> 20,
            bound >> 20,
            peak_server >> 20
        ),
    );
    Ok(total.failed() == 0 && peak_worker <= bound)
}

/// Resident memory of the first model's workers, from `/units`.
fn worker_rss(server: &Server) -> u64 {
    units_of(server).iter().map(|u| u["resident_bytes"].as_u64().unwrap_or(0)).sum()
}

fn mode_replicas(rt: &tokio::runtime::Runtime, o: &Opts, dir: &Path) -> anyhow::Result<bool> {
    let configs = [
        ("1 worker x 2 threads", ["--workers", "1", "--worker-threads", "2"]),
        ("2 workers x 1 thread", ["--workers", "2", "--worker-threads", "1"]),
    ];
    let mut results: BTreeMap<(usize, bool), LoadResult> = BTreeMap::new();
    let mut ok = true;
    for round in 0..o.rounds {
        for (i, (_, flags)) in configs.iter().enumerate() {
            for stormy in [false, true] {
                let state = dir.join(format!("r{round}-{i}-{stormy}"));
                let mut args = args_of(o);
                args.extend(flags.iter());
                let (server, _) = Server::start(&o.bin, &args, &[], &state, &dir.join("server.log"))?;
                let out = drive(rt, o, &server, o.seconds, stormy.then_some(&o.signals[..]));
                ok &= out.load.failed() == 0;
                results.entry((i, stormy)).or_default().absorb(out.load);
            }
        }
    }
    println!("| workers | quiet req/s | quiet p50 / p99 ms | storm req/s | storm p50 / p99 ms | storm failed |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (i, (label, _)) in configs.iter().enumerate() {
        let mut quiet = results.remove(&(i, false)).unwrap_or_default();
        let mut storm = results.remove(&(i, true)).unwrap_or_default();
        quiet.latencies.sort_by(f64::total_cmp);
        storm.latencies.sort_by(f64::total_cmp);
        println!(
            "| {label} | {:.0} | {:.1} / {:.0} | {:.0} | {:.1} / {:.0} | {} |",
            quiet.ok as f64 / quiet.elapsed.max(1e-9),
            common::pct(&quiet.latencies, 0.5),
            common::pct(&quiet.latencies, 0.99),
            storm.ok as f64 / storm.elapsed.max(1e-9),
            common::pct(&storm.latencies, 0.5),
            common::pct(&storm.latencies, 0.99),
            storm.failed()
        );
    }
    println!(
        "{} rounds of {} s per cell, alternating; {} connections; storm: {} signals per run",
        o.rounds, o.seconds, o.connections, o.count
    );
    Ok(ok)
}

fn main() -> anyhow::Result<()> {
    let o = Opts::parse()?;
    anyhow::ensure!(o.bin.is_file(), "{} is missing: cargo build --release -p bulkhead", o.bin.display());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let ok = match o.mode.as_str() {
        "storm" => mode_storm(&rt, &o, dir.path())?,
        "chain" => mode_chain(&rt, &o, dir.path())?,
        "soak" => mode_soak(&rt, &o, dir.path())?,
        "replicas" => mode_replicas(&rt, &o, dir.path())?,
        other => anyhow::bail!("unknown mode `{other}`; use storm, chain, soak or replicas"),
    };
    println!("\n{} (load average {})", if ok { "PASS" } else { "FAIL" }, load_average());
    if o.check && !ok {
        let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        eprintln!("server log tail:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        std::process::exit(1);
    }
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
