//! A `bulkhead serve` child process and a minimal keep-alive HTTP/1.1 client that sends one-sentence
//! `/v1/embeddings` requests: what the HTTP benchmarks share.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::common::SENTENCES;

/// A running server with its own crash-history directory; killed on drop.
pub struct Server {
    server: super::common::load::Server,
    /// `host:port`.
    pub addr: String,
    _state: tempfile::TempDir,
}

/// Starts `bin serve --port 0 --compute-units ort:cpu EXTRA...` and waits for its address.
pub fn start_server(bin: &str, extra: &[String]) -> anyhow::Result<Server> {
    let state = tempfile::tempdir()?;
    let mut args = vec!["--compute-units", "ort:cpu"];
    args.extend(extra.iter().map(String::as_str));
    let log = state.path().join("server.log");
    let (server, _) = super::common::load::Server::start(std::path::Path::new(bin), &args, &[], state.path(), &log)?;
    Ok(Server { addr: server.addr.clone(), server, _state: state })
}

/// One `/v1/embeddings` request on a keep-alive connection; its status.
pub async fn request(stream: &mut TcpStream, body: &str) -> anyhow::Result<u16> {
    Ok(super::common::load::request(stream, "x", "/v1/embeddings", body).await?.0)
}

/// `clients` keep-alive connections sending one-sentence requests for `seconds`: the latencies (ms) of the 200s
/// and the number of failed requests (another status, or a broken connection, which is reopened).
pub async fn traffic(addr: &str, clients: usize, seconds: f64) -> (Vec<f64>, usize) {
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
                    let body = serde_json::json!({ "input": SENTENCES[i % SENTENCES.len()] }).to_string();
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
