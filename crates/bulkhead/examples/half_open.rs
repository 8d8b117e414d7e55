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

#[path = "common/client.rs"]
mod client;
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{start_server, traffic};
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
