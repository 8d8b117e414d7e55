//! Half-open connections against `bulkhead serve`: do ordinary requests keep their latency while thousands of
//! connections never finish their request head, and does the server close those connections, and when?
//!
//! 1. ordinary traffic alone: `--clients` keep-alive connections sending one-sentence `/v1/embeddings` requests for
//!    `--seconds`: requests, errors, p50 and p99;
//! 2. `--connections` half-open connections (a request line and one header, then silence), held open;
//! 3. the same ordinary traffic while they are held;
//! 4. how many half-open connections the server closed within `--wait` seconds of opening them, and when.
//!
//! `cargo build --release -p bulkhead && cargo run --release -p bulkhead --example half_open -- \
//!   [--connections 5000] [--clients 4] [--seconds 8] [--wait 60] [--bin PATH] [-- SERVE_ARGS...]`
//! (`--bin` runs another build, e.g. an older one, for a before/after table.)

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    connections: usize,
    clients: usize,
    seconds: f64,
    wait: f64,
    bin: String,
    serve_args: Vec<String>,
}

fn args() -> Args {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let (own, serve_args) = match all.iter().position(|a| a == "--") {
        Some(i) => (all[..i].to_vec(), all[i + 1..].to_vec()),
        None => (all, vec![]),
    };
    let get = |name: &str| own.iter().position(|a| a == name).and_then(|i| own.get(i + 1)).cloned();
    let default_bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/bulkhead");
    Args {
        connections: get("--connections").and_then(|v| v.parse().ok()).unwrap_or(5000),
        clients: get("--clients").and_then(|v| v.parse().ok()).unwrap_or(4),
        seconds: get("--seconds").and_then(|v| v.parse().ok()).unwrap_or(8.0),
        wait: get("--wait").and_then(|v| v.parse().ok()).unwrap_or(60.0),
        bin: get("--bin").unwrap_or_else(|| default_bin.to_string_lossy().into_owned()),
        serve_args,
    }
}

struct Server {
    child: Child,
    addr: String,
    _state: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(bin: &str, extra: &[String]) -> anyhow::Result<Server> {
    let state = tempfile::tempdir()?;
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--port", "0", "--compute-units", "ort:cpu"]).args(extra);
    cmd.stdout(Stdio::piped()).stderr(Stdio::null()).env("BULKHEAD_STATE_DIR", state.path());
    let mut child = cmd.spawn()?;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().ok_or_else(|| anyhow::anyhow!("the server exited before listening"))??;
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok(Server { child, addr, _state: state })
}

/// One request on a keep-alive connection; the status.
async fn request(stream: &mut TcpStream, body: &str) -> anyhow::Result<u16> {
    let req = format!(
        "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(16 << 10);
    let mut tmp = [0u8; 16 << 10];
    loop {
        let n = stream.read(&mut tmp).await?;
        anyhow::ensure!(n > 0, "connection closed");
        buf.extend_from_slice(&tmp[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            return Ok(head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0));
        }
    }
}

/// Ordinary traffic: latencies in ms of the 200s, and the number of failed requests.
async fn traffic(addr: &str, clients: usize, seconds: f64) -> (Vec<f64>, usize) {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let failed = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (addr, failed) = (addr.to_string(), failed.clone());
            tokio::spawn(async move {
                let mut lat = vec![];
                let mut conn: Option<TcpStream> = None;
                let mut i = c;
                while Instant::now() < deadline {
                    let body =
                        serde_json::json!({ "input": common::SENTENCES[i % common::SENTENCES.len()] }).to_string();
                    i += 1;
                    let t = Instant::now();
                    if conn.is_none() {
                        conn = TcpStream::connect(&addr).await.ok();
                        if let Some(s) = &conn {
                            let _ = s.set_nodelay(true);
                        }
                    }
                    let ok = match conn.as_mut() {
                        Some(s) => matches!(request(s, &body).await, Ok(200)),
                        None => false,
                    };
                    if ok {
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                lat
            })
        })
        .collect();
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    (all, failed.load(Ordering::Relaxed))
}

/// Opens a half-open connection; resolves with the seconds until the server closed it (`None`: still open at
/// `wait`, or never opened).
async fn half_open(addr: String, wait: Duration, opened: Arc<AtomicUsize>) -> Option<f64> {
    let t0 = Instant::now();
    let mut s = tokio::time::timeout(wait, TcpStream::connect(&addr)).await.ok()?.ok()?;
    s.write_all(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n").await.ok()?;
    opened.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 1024];
    let left = wait.saturating_sub(t0.elapsed());
    match tokio::time::timeout(left, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    {
        Ok(()) => Some(t0.elapsed().as_secs_f64()),
        Err(_) => None,
    }
}

fn row(what: &str, (lat, failed): &(Vec<f64>, usize), seconds: f64) {
    println!(
        "| {what} | {} | {:.0} | {failed} | {:.2} | {:.2} |",
        lat.len(),
        lat.len() as f64 / seconds,
        common::pct(lat, 0.5),
        common::pct(lat, 0.99)
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args();
    let files = bulkhead_server::raise_open_files_limit().unwrap_or(0);
    anyhow::ensure!(
        files as usize > a.connections + 64,
        "this process may open {files} files; --connections {} needs more (ulimit -n)",
        a.connections
    );
    let server = start_server(&a.bin, &a.serve_args)?;
    let addr = server.addr.clone();
    // Warm the connection path and the worker.
    traffic(&addr, 1, 1.0).await;

    let quiet = traffic(&addr, a.clients, a.seconds).await;
    let opened = Arc::new(AtomicUsize::new(0));
    let wait = Duration::from_secs_f64(a.wait);
    let t_open = Instant::now();
    let holders: Vec<_> =
        (0..a.connections).map(|_| tokio::spawn(half_open(addr.clone(), wait, opened.clone()))).collect();
    // Let them all connect before measuring.
    while opened.load(Ordering::Relaxed) < a.connections && t_open.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_s = t_open.elapsed().as_secs_f64();
    let loaded = traffic(&addr, a.clients, a.seconds).await;
    let mut closed: Vec<f64> = vec![];
    for h in holders {
        if let Ok(Some(s)) = h.await {
            closed.push(s);
        }
    }
    let n_open = opened.load(Ordering::Relaxed);

    println!("\nhalf-open connections: {} ({} opened in {open_s:.1} s); {}", a.connections, n_open, a.bin);
    println!(
        "\n| ordinary traffic ({} keep-alive clients, {:.0} s) | requests | req/s | failed | p50 ms | p99 ms |",
        a.clients, a.seconds
    );
    println!("|---|---:|---:|---:|---:|---:|");
    row("alone", &quiet, a.seconds);
    row(&format!("while {n_open} half-open connections are held"), &loaded, a.seconds);
    println!("\n| half-open connections | value |\n|---|---:|");
    println!("| closed by the server within {:.0} s | {} of {n_open} |", a.wait, closed.len());
    if !closed.is_empty() {
        println!(
            "| time to close, p50 / max | {:.1} s / {:.1} s |",
            common::pct(&closed, 0.5),
            common::pct(&closed, 1.0)
        );
    }
    println!("| still open after {:.0} s | {} |", a.wait, n_open - closed.len());
    Ok(())
}
