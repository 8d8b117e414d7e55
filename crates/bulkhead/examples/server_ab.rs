//! Two builds of `bulkhead serve` side by side (for example the server before and after a change): both run at
//! once on the default model and get the same load in alternating blocks, so both see the same machine.
//!
//! Each round runs, for A then B (the order flips every round): `--clients` keep-alive connections sending
//! one-sentence `/v1/embeddings` requests for `--seconds` (throughput, p50, p99), then one connection for
//! `--seconds` (p50 at concurrency 1). It prints every round and the median over rounds, with B / A.
//!
//! `cargo build --release -p bulkhead && cargo run --release -p bulkhead --example server_ab -- \
//!   --a PATH --b PATH [--rounds 6] [--seconds 5] [--clients 64]`

#[path = "common/client.rs"]
mod client;
mod common;

use std::time::Duration;

use bulkhead_core::stats::median;
use client::{start_server, traffic};

struct Sample {
    rps: f64,
    p50: f64,
    p99: f64,
    c1_p50: f64,
    failed: usize,
}

async fn block(addr: &str, clients: usize, seconds: f64) -> Sample {
    let (lat, failed) = traffic(addr, clients, seconds).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (one, failed_one) = traffic(addr, 1, seconds).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Sample {
        rps: lat.len() as f64 / seconds,
        p50: common::pct(&lat, 0.5),
        p99: common::pct(&lat, 0.99),
        c1_p50: common::pct(&one, 0.5),
        failed: failed + failed_one,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let (Some(a), Some(b)) = (get("--a"), get("--b")) else {
        anyhow::bail!("usage: server_ab --a BIN --b BIN [--rounds 6] [--seconds 5] [--clients 64]");
    };
    let rounds: usize = get("--rounds").and_then(|v| v.parse().ok()).unwrap_or(6);
    let seconds: f64 = get("--seconds").and_then(|v| v.parse().ok()).unwrap_or(5.0);
    let clients: usize = get("--clients").and_then(|v| v.parse().ok()).unwrap_or(64);
    let servers = [start_server(&a, &[])?, start_server(&b, &[])?];
    for s in &servers {
        traffic(&s.addr, clients, 2.0).await; // warm-up
    }
    println!("A = {a}\nB = {b}\n{clients} connections and 1 connection, {seconds:.0} s blocks, {rounds} rounds\n");
    println!("| round | A req/s | B req/s | B / A | A p50 / p99 ms | B p50 / p99 ms | A c=1 p50 ms | B c=1 p50 ms |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut samples: [Vec<Sample>; 2] = [vec![], vec![]];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let s = block(&servers[i].addr, clients, seconds).await;
            samples[i].push(s);
        }
        let (x, y) = (&samples[0][round], &samples[1][round]);
        println!(
            "| {} | {:.0} | {:.0} | {:.3} | {:.1} / {:.1} | {:.1} / {:.1} | {:.2} | {:.2} |",
            round + 1,
            x.rps,
            y.rps,
            y.rps / x.rps,
            x.p50,
            x.p99,
            y.p50,
            y.p99,
            x.c1_p50,
            y.c1_p50
        );
    }
    let med = |i: usize, f: fn(&Sample) -> f64| median(&samples[i].iter().map(f).collect::<Vec<_>>());
    let ratios = median(&samples[0].iter().zip(&samples[1]).map(|(x, y)| y.rps / x.rps).collect::<Vec<_>>());
    println!(
        "| median | {:.0} | {:.0} | {:.3} | {:.1} / {:.1} | {:.1} / {:.1} | {:.2} | {:.2} |",
        med(0, |s| s.rps),
        med(1, |s| s.rps),
        ratios,
        med(0, |s| s.p50),
        med(0, |s| s.p99),
        med(1, |s| s.p50),
        med(1, |s| s.p99),
        med(0, |s| s.c1_p50),
        med(1, |s| s.c1_p50)
    );
    let failed: Vec<usize> = samples.iter().map(|v| v.iter().map(|s| s.failed).sum()).collect();
    println!("\nfailed requests: A {}, B {}", failed[0], failed[1]);
    Ok(())
}
