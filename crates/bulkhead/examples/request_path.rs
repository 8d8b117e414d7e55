//! What one request costs the server process: heap allocations (count and bytes) per `/v1/embeddings` and per
//! `/rerank` request, counted by a counting global allocator around the real server (router, handler, batcher,
//! supervisor, worker link) with real worker processes of the real binary on the default model and a reranker
//! fixture. The client runs on its own thread with the counting switched off for that thread, so only the server's
//! allocations count; the worker processes' own allocations are not in this process and are not counted.
//!
//! Requests are sent one at a time on one keep-alive connection (no batching effects), after a warm-up. The
//! supervisors allocate on their own while idle (a 25 ms tick samples `/proc` and republishes the `/units` view), so
//! the process is also measured idle for the same wall time right after, and that part subtracted; the table
//! prints allocations and bytes per request, raw and without the idle part.
//!
//! `cargo build --release -p bulkhead && cargo run --release -p bulkhead --example request_path [-- --requests 2000]`
//! (`BULKHEAD_BIN=PATH` runs the workers with another build of `bulkhead`: it must be the build of this example.)

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bulkhead_core::{Chain, ModelFiles, Platform};
use bulkhead_embed::Tokenizer;
use bulkhead_server::{AppState, LoadedModel, ModelKind, ServeConfig};
use bulkhead_supervisor::{Supervisor, SupervisorConfig, WorkerCommand};

/// Counts every allocation (and reallocation) of this process, except on threads that switched counting off.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static UNCOUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count(size: usize) {
    if !UNCOUNTED.with(Cell::get) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: delegates every call to the system allocator unchanged; counting has no effect on the memory returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Sends `body` to `path` `n` times on one keep-alive connection and reads each response whole.
fn client(addr: std::net::SocketAddr, path: &str, body: &str, n: usize) -> anyhow::Result<()> {
    UNCOUNTED.with(|c| c.set(true));
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..n {
        s.write_all(request.as_bytes())?;
        let mut have = 0;
        loop {
            have += s.read(&mut buf[have..])?;
            let text = String::from_utf8_lossy(&buf[..have]);
            if let Some(head_end) = text.find("\r\n\r\n") {
                anyhow::ensure!(text.starts_with("HTTP/1.1 200"), "{}", &text[..head_end]);
                let len: usize = text[..head_end]
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_string))
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("no content-length"))?;
                if have >= head_end + 4 + len {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Per request of `n` requests (after `warm` unmeasured ones): (allocations, bytes) raw, then without what the
/// process allocates idle over the same time.
async fn measure(
    addr: std::net::SocketAddr,
    path: &str,
    body: &str,
    warm: usize,
    n: usize,
) -> anyhow::Result<[(f64, f64); 2]> {
    let (p, b) = (path.to_string(), body.to_string());
    tokio::task::spawn_blocking(move || client(addr, &p, &b, warm)).await??;
    let snapshot = || (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
    let (a0, b0) = snapshot();
    let t0 = std::time::Instant::now();
    let (p, b) = (path.to_string(), body.to_string());
    tokio::task::spawn_blocking(move || client(addr, &p, &b, n)).await??;
    let (a1, b1) = snapshot();
    tokio::time::sleep(t0.elapsed()).await;
    let (a2, b2) = snapshot();
    let n = n as f64;
    let raw = ((a1 - a0) as f64 / n, (b1 - b0) as f64 / n);
    let idle = ((a2 - a1) as f64 / n, (b2 - b1) as f64 / n);
    Ok([raw, (raw.0 - idle.0, raw.1 - idle.1)])
}

async fn loaded(model: ModelFiles, name: &str, bin: &std::path::Path) -> anyhow::Result<LoadedModel> {
    let chain = Chain::parse("ort:cpu", &Platform::detect())?;
    let config = SupervisorConfig {
        worker_command: WorkerCommand { program: bin.to_path_buf(), args: vec!["worker".into()] },
        ..SupervisorConfig::default()
    };
    let sup = Supervisor::start(model.clone(), &chain, Arc::new(common::engines()), config);
    sup.wait_ready().await?;
    let tokenizer = Tokenizer::load(&model)?;
    let kind = if model.task.is_cross_encoder() || model.task.is_sparse() {
        ModelKind::CrossEncoder { tokenizer, task: model.task.clone() }
    } else {
        ModelKind::Embedding { tokenizer, dimensions: 384 }
    };
    Ok(LoadedModel { name: name.into(), files: model, kind, backend: Arc::new(sup) })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize =
        args.iter().position(|a| a == "--requests").and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(2000);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bin = std::env::var_os("BULKHEAD_BIN").map_or_else(|| root.join("target/release/bulkhead"), Into::into);
    anyhow::ensure!(bin.is_file(), "build the worker binary first: cargo build --release -p bulkhead");
    let folder = bulkhead_testkit::minilm_folder()
        .ok_or_else(|| anyhow::anyhow!("the default model is not installed; run scripts/setup.sh"))?;
    let reranker = root.join("tests/fixtures/cross/bert-reranker");
    let mut models = vec![loaded(ModelFiles::open(&folder)?, "minilm", &bin).await?];
    if reranker.is_dir() {
        models.push(loaded(ModelFiles::open(&reranker)?, "reranker", &bin).await?);
    }
    let state = AppState::new(models, ServeConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bulkhead_server::serve(listener, state, async {
        let _ = stopped.await;
    }));

    let embed =
        r#"{"model": "minilm", "input": "A single sentence of ordinary length about crash-safe local inference."}"#;
    let rerank = r#"{"model": "reranker", "query": "what is a bulkhead?", "texts": ["A wall that keeps water out.", "A server that keeps crashes in.", "Bread."]}"#;
    println!("heap allocations in the server process per request ({n} sequential requests, one connection)\n");
    println!("| request | allocations / request | bytes / request | without the idle tick: allocations | bytes |");
    println!("|---|---|---|---|---|");
    let row = |name: &str, [(a, b), (ia, ib)]: [(f64, f64); 2]| {
        println!("| {name} | {a:.1} | {b:.0} | {ia:.1} | {ib:.0} |");
    };
    row("`/v1/embeddings`, 1 text", measure(addr, "/v1/embeddings", embed, 200, n).await?);
    if reranker.is_dir() {
        row("`/rerank`, 3 texts", measure(addr, "/rerank", rerank, 200, n).await?);
    } else {
        println!("(skipping /rerank: {} is missing)", reranker.display());
    }
    let _ = stop.send(());
    let _ = server.await;
    Ok(())
}
