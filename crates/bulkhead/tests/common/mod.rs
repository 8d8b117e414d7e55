//! Shared helpers of the integration tests: the models, fixtures and reference embeddings of bulkhead-testkit, and
//! running the real `bulkhead` binary (a command, a server on port 0, plain HTTP to it).
#![allow(dead_code, unused_imports)]

pub mod doctor_schema;
pub mod supervise;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use bulkhead_testkit::{
    compare, cosine, fixture, minilm_folder, minilm_fp32_onnx, minilm_int8_onnx, need, onnx_folder, reference, repo,
    venv_python, Reference,
};

/// Runs the real binary with `args` and extra environment.
pub fn bulkhead(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bulkhead"));
    cmd.args(args).env_remove("BULKHEAD_COMPUTE_UNITS").env_remove("BULKHEAD_MODEL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `bulkhead embed --json` on `texts` (as arguments: one reference sentence holds a newline).
pub fn embed_json(model: &Path, units: &str, texts: &[String]) -> serde_json::Value {
    let mut args = vec!["embed", "--json", "--model", model.to_str().unwrap(), "--compute-units", units, "--"];
    args.extend(texts.iter().map(String::as_str));
    let out = bulkhead(&args, &[]);
    assert!(out.status.success(), "embed failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn vectors(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect()
}

/// A running `bulkhead serve` on port 0; killed on drop.
pub struct Server {
    pub child: std::process::Child,
    pub addr: String,
    pub stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts the real binary with `args` and `env` (a fresh state directory unless `env` sets one) and waits
    /// for its `listening on http://ADDR` line.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let stderr_path = dir.path().join("stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bulkhead"));
        cmd.arg("serve").args(["--port", "0"]).args(args);
        cmd.env("BULKHEAD_STATE_DIR", dir.path().join("state")).env_remove("BULKHEAD_FAULTS");
        cmd.envs(env.iter().copied());
        cmd.stdout(std::process::Stdio::piped()).stderr(std::fs::File::create(&stderr_path).unwrap());
        let mut child = cmd.spawn().unwrap();
        match bulkhead_testkit::server::wait_listening(&mut child, std::time::Duration::from_secs(180)) {
            Ok(addr) => Server { child, addr, stderr_path, _dir: dir },
            Err(e) => panic!("{e}: {}", std::fs::read_to_string(&stderr_path).unwrap_or_default()),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> HttpResponse {
        http(&self.addr, method, path, headers, body)
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> HttpResponse {
        self.request("POST", path, &[("content-type", "application/json")], Some(&body.to_string()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request over a fresh connection (`Connection: close`), with no client library in between.
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> HttpResponse {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(120))).unwrap();
    let body = body.unwrap_or("");
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut raw = vec![];
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))).collect();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    HttpResponse { status, headers, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}
