//! A `bulkhead serve` process and a keep-alive HTTP/1.1 load generator, shared by the server benchmarks and the
//! chaos harness: no client library in between, every status and every stalled request counted.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A running `bulkhead serve --port 0`; killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Server {
    /// Starts `bin serve --port 0 ARGS` with `env` and the crash history in `state_dir`, and waits for its
    /// `listening on` line. Its log goes to `log` (appended).
    pub fn start(
        bin: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        state_dir: &Path,
        log: &Path,
    ) -> anyhow::Result<(Server, Duration)> {
        let t0 = Instant::now();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--port", "0"]).args(args).stdout(Stdio::piped()).stderr(log);
        cmd.env("BULKHEAD_STATE_DIR", state_dir).env_remove("BULKHEAD_FAULTS");
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn()?;
        let addr = bulkhead_testkit::server::wait_listening(&mut child, Duration::from_secs(600))
            .map_err(anyhow::Error::msg)?;
        Ok((Server { child, addr }, t0.elapsed()))
    }

    /// One plain request on a fresh connection: (status, body).
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<(u16, String)> {
        let mut s = std::net::TcpStream::connect(&self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let body = body.unwrap_or("");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        let status = raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Ok((status, body))
    }

    /// `GET /units` as JSON.
    pub fn units(&self) -> anyhow::Result<serde_json::Value> {
        let (_, body) = self.call("GET", "/units", None)?;
        // Chunked bodies: the JSON starts at the first brace.
        let start = body.find('{').unwrap_or(0);
        let end = body.rfind('}').map_or(body.len(), |e| e + 1);
        Ok(serde_json::from_str(&body[start..end])?)
    }

    /// SIGTERM, then wait for the exit.
    pub fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        // SAFETY: signalling the child this struct started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        Ok(self.child.wait()?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one keep-alive request and reads the response: (status, body).
pub async fn request(stream: &mut TcpStream, addr: &str, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(16 << 10);
    let mut tmp = [0u8; 16 << 10];
    loop {
        let n = stream.read(&mut tmp).await?;
        anyhow::ensure!(n > 0, "connection closed");
        buf.extend_from_slice(&tmp[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                return Ok((status, String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string()));
            }
        }
    }
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// 2xx responses.
    pub ok: usize,
    /// Other statuses, by status.
    pub non_2xx: BTreeMap<u16, usize>,
    /// Requests without a response within the client timeout.
    pub timeouts: usize,
    /// Connection errors (refused, reset, closed).
    pub errors: usize,
    /// Latencies of the 2xx responses, ms.
    pub latencies: Vec<f64>,
    /// Seconds the run took.
    pub elapsed: f64,
}

impl LoadResult {
    /// Everything that was not a 2xx.
    pub fn failed(&self) -> usize {
        self.non_2xx.values().sum::<usize>() + self.timeouts + self.errors
    }

    /// Adds the requests of another block of the same load.
    pub fn absorb(&mut self, other: LoadResult) {
        self.ok += other.ok;
        for (s, n) in other.non_2xx {
            *self.non_2xx.entry(s).or_default() += n;
        }
        self.timeouts += other.timeouts;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
    }
}

/// `connections` keep-alive connections sending single-sentence `/v1/embeddings` requests for `duration`; a
/// request without an answer within `timeout` counts as a timeout (and its connection is replaced).
pub async fn load(addr: &str, connections: usize, duration: Duration, timeout: Duration, quiet: bool) -> LoadResult {
    let addr = Arc::new(addr.to_string());
    let deadline = Instant::now() + duration;
    let mut tasks = vec![];
    for c in 0..connections {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = LoadResult::default();
            let mut stream = None;
            let mut i = c;
            while Instant::now() < deadline {
                let s = match stream.as_mut() {
                    Some(s) => s,
                    None => match TcpStream::connect(addr.as_str()).await {
                        Ok(s) => stream.insert(s),
                        Err(_) => {
                            r.errors += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let body = format!("{{\"input\": \"{}\"}}", super::SENTENCES[i % super::SENTENCES.len()]);
                i += 1;
                let t = Instant::now();
                match tokio::time::timeout(timeout, request(s, &addr, "/v1/embeddings", &body)).await {
                    Ok(Ok((status, text))) if (200..300).contains(&status) => {
                        r.ok += 1;
                        r.latencies.push(t.elapsed().as_secs_f64() * 1e3);
                        let _ = text;
                    }
                    Ok(Ok((status, text))) => {
                        *r.non_2xx.entry(status).or_default() += 1;
                        if !quiet {
                            eprintln!("non-2xx: {status} {}", text.chars().take(300).collect::<String>());
                        }
                    }
                    Ok(Err(e)) => {
                        r.errors += 1;
                        if !quiet {
                            eprintln!("request error: {e}");
                        }
                        stream = None;
                    }
                    Err(_) => {
                        r.timeouts += 1;
                        stream = None;
                    }
                }
            }
            r
        }));
    }
    let start = Instant::now();
    let mut r = LoadResult::default();
    for t in tasks {
        match t.await {
            Ok(part) => r.absorb(part),
            Err(_) => r.errors += 1,
        }
    }
    r.elapsed = start.elapsed().as_secs_f64();
    r.latencies.sort_by(f64::total_cmp);
    r
}
