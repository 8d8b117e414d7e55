//! A local stand-in for the Hugging Face hub's HTTP API, for tests: it serves folders as model repositories with the
//! hub's endpoints and headers, and misbehaves on demand.
//!
//! * `GET /api/models/{repo}[/revision/{rev}]` (`?blobs=true` adds sizes and LFS hashes): `sha`, `siblings`;
//! * `GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=true`: the file tree (what `snapshot_download` reads);
//! * `HEAD`/`GET /{repo}/resolve/{rev}/{file}`: files stored in git answer `200` with `ETag` = git blob sha1; LFS
//!   files (weights, or over 10 MiB) answer `302` to a CDN on **another port** (another origin) with
//!   `X-Linked-Etag` = sha256 and `X-Linked-Size`; every answer carries `X-Repo-Commit`; `Range` gets `206` with
//!   `Content-Range`; the CDN refuses requests that carry `Authorization` (as signed CDN URLs do);
//! * errors as the hub sends them: `X-Error-Code` `RepoNotFound` (401 without a token, 404 with one),
//!   `RevisionNotFound`, `EntryNotFound`, `GatedRepo` on the files of a gated repository (401 without a token, 403
//!   with a refused one; its description stays public);
//! * a renamed repository answers `307` with a relative `Location`;
//! * [`Fault`]s per file: 404, any status, a connection dropped mid-file, a stalled transfer, a flipped byte, a
//!   server that ignores `Range`.
//!
//! Every request is logged ([`StandIn::requests`]) so that tests can assert what a client fetched.
//!
//! # Architecture invariants
//!
//! * **Tests only:** `publish = false`, and no crate that ships links it (a dev-dependency only; checked by
//!   `crates/bulkhead-testkit/tests/invariants.rs`).
//! * **It serves what the hub serves**, byte for byte, with the same headers, unless a [`Fault`] asks otherwise.

mod files;
mod serve;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use files::RepoFile;

/// Who may read a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Public,
    /// Only with this token; others get `GatedRepo` errors.
    Gated(String),
    /// Only with this token; others are told the repository does not exist.
    Private(String),
}

/// A misbehaviour of one file's downloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `404 EntryNotFound`, as if the file were gone.
    NotFound,
    /// This HTTP status, with an empty body.
    Status(u16),
    /// Send `bytes` bytes of the body, then close the connection; for the next `times` downloads.
    DropAfter {
        /// Bytes sent before the connection closes.
        bytes: u64,
        /// Downloads affected.
        times: u32,
    },
    /// Send `bytes` bytes of the body, then send nothing more (the connection stays open).
    StallAfter(u64),
    /// Serve the file with the byte at this offset inverted (a checksum error).
    FlipByte(u64),
    /// Answer `200` with the whole file even to a `Range` request.
    IgnoreRange,
}

/// A repository to serve.
#[derive(Debug, Clone)]
pub struct Repo {
    /// `ORG/NAME`.
    pub id: String,
    /// The folder served as its files (symbolic links followed).
    pub dir: PathBuf,
    /// Branch or tag names besides `main` that resolve to its one commit.
    pub revisions: Vec<String>,
    /// Who may read it.
    pub access: Access,
}

impl Repo {
    /// A public repository with only `main`.
    pub fn public(id: &str, dir: impl Into<PathBuf>) -> Repo {
        Repo { id: id.into(), dir: dir.into(), revisions: vec![], access: Access::Public }
    }
}

/// One request as the stand-in saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// `GET` or `HEAD`.
    pub method: String,
    /// The decoded path (`/org/name/resolve/main/config.json`, `/cdn/...`).
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// Whether an `Authorization` header came with it.
    pub authorized: bool,
    /// The status answered.
    pub status: u16,
}

/// The shared state of both listeners.
pub(crate) struct State {
    pub repos: Vec<(Repo, files::RepoFiles)>,
    pub aliases: Mutex<HashMap<String, String>>,
    pub faults: Mutex<HashMap<String, Fault>>,
    pub log: Mutex<Vec<Logged>>,
    pub sent: Mutex<HashMap<String, u64>>,
    pub cdn_url: String,
}

/// A running stand-in; stopped on drop.
pub struct StandIn {
    url: String,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl StandIn {
    /// Hashes the repositories' files and starts the hub and its CDN on two free ports of 127.0.0.1.
    pub fn start(repos: Vec<Repo>) -> std::io::Result<StandIn> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let hub = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let cdn = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("http://{}", hub.local_addr()?);
        let cdn_url = format!("http://{}", cdn.local_addr()?);
        let mut served = vec![];
        for r in repos {
            let files = files::RepoFiles::scan(&r.dir)?;
            served.push((r, files));
        }
        let state = Arc::new(State {
            repos: served,
            aliases: Mutex::default(),
            faults: Mutex::default(),
            log: Mutex::default(),
            sent: Mutex::default(),
            cdn_url,
        });
        runtime.spawn(serve::run(hub, state.clone(), false));
        runtime.spawn(serve::run(cdn, state.clone(), true));
        Ok(StandIn { url, state, runtime: Some(runtime) })
    }

    /// The hub's base URL (`HF_ENDPOINT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The commit every revision of `repo` resolves to.
    pub fn commit(&self, repo: &str) -> Option<String> {
        self.state.repos.iter().find(|(r, _)| r.id == repo).map(|(_, f)| f.commit.clone())
    }

    /// The served files of `repo`.
    pub fn files(&self, repo: &str) -> Vec<RepoFile> {
        self.state.repos.iter().find(|(r, _)| r.id == repo).map(|(_, f)| f.files.clone()).unwrap_or_default()
    }

    /// Sets (or with `None` clears) the fault of `file` (a repository path) in every repository.
    pub fn set_fault(&self, file: &str, fault: Option<Fault>) {
        let mut faults = self.state.faults.lock().unwrap();
        match fault {
            Some(f) => faults.insert(file.to_string(), f),
            None => faults.remove(file),
        };
    }

    /// Makes `old` (`ORG/NAME`) a renamed repository that redirects to `new`.
    pub fn rename(&self, old: &str, new: &str) {
        self.state.aliases.lock().unwrap().insert(old.into(), new.into());
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Logged> {
        self.state.log.lock().unwrap().clone()
    }

    /// Forgets the requests and byte counts so far.
    pub fn clear_log(&self) {
        self.state.log.lock().unwrap().clear();
        self.state.sent.lock().unwrap().clear();
    }

    /// Body bytes sent for `file` (a repository path), over all its downloads.
    pub fn bytes_sent(&self, file: &str) -> u64 {
        self.state.sent.lock().unwrap().get(file).copied().unwrap_or(0)
    }

    /// The repository paths downloaded with `GET` (from the hub or the CDN), in order, without repeats.
    pub fn downloaded_files(&self) -> Vec<String> {
        let mut out: Vec<String> = vec![];
        for l in self.requests().iter().filter(|l| l.method == "GET") {
            let file = serve::file_of_path(&l.path);
            if let Some(f) = file.filter(|f| !out.contains(f)) {
                out.push(f);
            }
        }
        out
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
