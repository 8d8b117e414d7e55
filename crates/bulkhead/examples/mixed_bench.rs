//! Mixed-length traffic with and without length grouping, side by side in one run on one build.
//!
//! Two `bulkhead serve` processes of the same binary run at once on the default model: one with
//! `--max-padding-share off` (every batch padded to its longest row, as before grouping), one with the defaults
//! (rows grouped by length). Each traffic shape gets 32 keep-alive connections sending one text per
//! `/v1/embeddings` request, in blocks that alternate between the two servers (the order flips every round):
//!
//! * `short`: queries of about 8-20 tokens;
//! * `long`: passages of 60-230 tokens;
//! * `mixed`: 80% queries, 20% passages, drawn per request;
//! * `short+1`: 32 connections of queries and one more sending 250-token texts.
//!
//! Per block: requests/s, real tokens/s (the tokens of the answered texts, as the server's tokenizer counts them),
//! p50/p99 latency, and the padding the server computed (`/metrics`: padding tokens / real tokens). With
//! `BULKHEAD_ST_PYTHON` set to a Python that has sentence-transformers, its offline `encode(batch_size=32)` (which
//! sorts by length) runs on the same texts in the same rounds, for the ratio.
//!
//! `cargo build --release -p bulkhead && BULKHEAD_ST_PYTHON=PYTHON cargo run --release -p bulkhead --example
//! mixed_bench -- [--seconds 8] [--rounds 2] [--clients 32]` (`BULKHEAD_BIN=PATH` serves another build).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_core::ModelFiles;
use bulkhead_embed::Tokenizer;
use common::load::{request, Server};
use tokio::net::TcpStream;

const WORDS: &str = "the a of and to in is that for on with as by at from this be are was it an or which local \
    inference server model request batch token vector embedding search query document passage result answer \
    worker process crash memory latency throughput engine runtime unit chain fallback metric queue padding length \
    sentence meaning retrieval index ranking score relevant user question context network cluster storage disk \
    cache file system kernel thread core machine compute fast slow small large long short river mountain city \
    history science language music garden winter summer ocean forest library museum market bridge station";

/// A deterministic generator (xorshift64*), so every run sends the same texts.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A text and its token count.
#[derive(Clone)]
struct Text {
    body: String,
    tokens: usize,
}

/// The text pools: queries, passages of 60-230 tokens, and 250-token texts.
struct Pools {
    short: Vec<Text>,
    long: Vec<Text>,
    longest: Vec<Text>,
}

fn text_of(tokenizer: &Tokenizer, rng: &mut Rng, target: usize) -> anyhow::Result<Text> {
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut body = String::new();
    loop {
        if !body.is_empty() {
            body.push(' ');
        }
        body.push_str(words[rng.below(words.len())]);
        let tokens = tokenizer.encode(std::slice::from_ref(&body))?[0].len();
        if tokens >= target {
            return Ok(Text { body, tokens });
        }
    }
}

fn pools(tokenizer: &Tokenizer) -> anyhow::Result<Pools> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let short = (0..200).map(|_| {
        let t = 8 + rng.below(13);
        text_of(tokenizer, &mut rng, t)
    });
    let short = short.collect::<anyhow::Result<Vec<_>>>()?;
    let long = (0..100).map(|_| {
        let t = 60 + rng.below(171);
        text_of(tokenizer, &mut rng, t)
    });
    let long = long.collect::<anyhow::Result<Vec<_>>>()?;
    let longest = (0..20).map(|_| text_of(tokenizer, &mut rng, 250)).collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Pools { short, long, longest })
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Traffic {
    Short,
    Long,
    Mixed,
    ShortPlusOne,
}

impl Traffic {
    const ALL: [Traffic; 4] = [Traffic::Short, Traffic::Long, Traffic::Mixed, Traffic::ShortPlusOne];

    fn name(self) -> &'static str {
        match self {
            Traffic::Short => "short (8-20 tokens)",
            Traffic::Long => "long (60-230 tokens)",
            Traffic::Mixed => "mixed 80/20",
            Traffic::ShortPlusOne => "short + 1 conn. of 250 tokens",
        }
    }

    /// The `i`-th text connection `c` sends.
    fn pick<'a>(self, p: &'a Pools, c: usize, rng: &mut Rng) -> &'a Text {
        match self {
            Traffic::Short => &p.short[rng.below(p.short.len())],
            Traffic::Long => &p.long[rng.below(p.long.len())],
            Traffic::Mixed if rng.below(10) < 2 => &p.long[rng.below(p.long.len())],
            Traffic::Mixed => &p.short[rng.below(p.short.len())],
            Traffic::ShortPlusOne if c == 0 => &p.longest[rng.below(p.longest.len())],
            Traffic::ShortPlusOne => &p.short[rng.below(p.short.len())],
        }
    }

    fn connections(self, clients: usize) -> usize {
        if self == Traffic::ShortPlusOne {
            clients + 1
        } else {
            clients
        }
    }

    /// The texts sentence-transformers encodes offline for this shape: the same pools in the same proportions.
    fn offline(self, p: &Pools) -> Vec<Text> {
        match self {
            Traffic::Short => p.short.clone(),
            Traffic::Long => p.long.clone(),
            Traffic::Mixed => p.short.iter().chain(p.long.iter().take(50)).cloned().collect(),
            Traffic::ShortPlusOne => p.short.iter().chain(p.longest.iter().take(6)).cloned().collect(),
        }
    }
}

/// One block's measurements.
#[derive(Default, Clone)]
struct Block {
    ok: usize,
    failed: usize,
    tokens: usize,
    latencies: Vec<f64>,
    seconds: f64,
    real: f64,
    padding: f64,
}

impl Block {
    fn absorb(&mut self, o: Block) {
        self.ok += o.ok;
        self.failed += o.failed;
        self.tokens += o.tokens;
        self.latencies.extend(o.latencies);
        self.seconds += o.seconds;
        self.real += o.real;
        self.padding += o.padding;
    }
}

/// (real, padding) tokens the server has computed so far.
fn padding_counters(server: &Server) -> anyhow::Result<(f64, f64)> {
    let (_, text) = server.call("GET", "/metrics", None)?;
    let sum = |name: &str| -> f64 {
        text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    };
    Ok((sum("bulkhead_batch_real_tokens_total"), sum("bulkhead_batch_padding_tokens_total")))
}

async fn block(server: &Server, pools: &Arc<Pools>, traffic: Traffic, clients: usize, seconds: f64) -> Block {
    let before = padding_counters(server).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let tasks: Vec<_> = (0..traffic.connections(clients))
        .map(|c| {
            let (addr, pools) = (server.addr.clone(), pools.clone());
            tokio::spawn(async move {
                let mut b = Block::default();
                let mut rng = Rng(0x1234_5678 + c as u64 * 7919);
                let mut stream: Option<TcpStream> = None;
                while Instant::now() < deadline {
                    let text = traffic.pick(&pools, c, &mut rng);
                    let body = serde_json::json!({ "input": text.body }).to_string();
                    if stream.is_none() {
                        stream = TcpStream::connect(&addr).await.ok();
                        if let Some(s) = &stream {
                            let _ = s.set_nodelay(true);
                        }
                    }
                    let Some(s) = stream.as_mut() else {
                        b.failed += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    let t = Instant::now();
                    match request(s, &addr, "/v1/embeddings", &body).await {
                        Ok((200, _)) => {
                            b.ok += 1;
                            b.tokens += text.tokens;
                            b.latencies.push(t.elapsed().as_secs_f64() * 1e3);
                        }
                        _ => {
                            b.failed += 1;
                            stream = None;
                        }
                    }
                }
                b
            })
        })
        .collect();
    let mut total = Block::default();
    for t in tasks {
        total.absorb(t.await.unwrap_or_default());
    }
    total.seconds = start.elapsed().as_secs_f64();
    let after = padding_counters(server).unwrap_or_default();
    total.real = after.0 - before.0;
    total.padding = after.1 - before.1;
    tokio::time::sleep(Duration::from_millis(300)).await;
    total
}

/// sentence-transformers in a long-lived Python process: each line `FILE SECONDS` encodes the texts of FILE (one
/// JSON string per line) with batch size 32 repeatedly for SECONDS and answers `texts seconds`.
struct SentenceTransformers {
    child: Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl SentenceTransformers {
    fn start(model: &Path) -> Option<SentenceTransformers> {
        let python = std::env::var("BULKHEAD_ST_PYTHON").ok()?;
        let code = format!(
            "import sys,json,time; from sentence_transformers import SentenceTransformer as S\n\
             m=S({:?}, device='cpu'); m.encode(['warm up'] * 32, batch_size=32); print('ready', flush=True)\n\
             for line in sys.stdin:\n    f, d = line.split(); d = float(d)\n    \
             texts = [json.loads(l) for l in open(f)]; m.encode(texts, batch_size=32)\n    \
             t = time.time(); n = 0\n    \
             while time.time() - t < d: m.encode(texts, batch_size=32); n += len(texts)\n    \
             print(n, time.time() - t, flush=True)",
            model.to_string_lossy()
        );
        let mut child =
            Command::new(python).args(["-c", &code]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().ok()?;
        let stdin = child.stdin.take()?;
        let mut stdout = BufReader::new(child.stdout.take()?).lines();
        (stdout.next()?.ok()? == "ready").then_some(SentenceTransformers { child, stdin, stdout })
    }

    /// (texts, seconds) of repeated encodes of `file` for `seconds`.
    fn run(&mut self, file: &Path, seconds: f64) -> Option<(f64, f64)> {
        writeln!(self.stdin, "{} {seconds}", file.display()).ok()?;
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

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    common::pct(v, p)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let number = |flag: &str, default: f64| -> f64 {
        args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(default)
    };
    let seconds = number("--seconds", 8.0);
    let rounds = number("--rounds", 2.0) as usize;
    let clients = number("--clients", 32.0) as usize;
    let bin = std::env::var("BULKHEAD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| bulkhead_testkit::repo().join("target/release/bulkhead"));
    let model = bulkhead_testkit::minilm_folder().ok_or_else(|| anyhow::anyhow!("run scripts/setup.sh"))?;
    let tokenizer = Tokenizer::load(&ModelFiles::open(&model)?)?;
    let pools = Arc::new(pools(&tokenizer)?);
    let dir = tempfile::tempdir()?;

    let settings = [("off", vec!["--max-padding-share", "off"]), ("grouped", vec![])];
    let mut servers = vec![];
    for (name, extra) in &settings {
        let state = dir.path().join(name);
        std::fs::create_dir_all(&state)?;
        let mut args = vec!["--compute-units", "ort:cpu"];
        args.extend(extra.iter().copied());
        let (server, _) = Server::start(&bin, &args, &[], &state, &state.join("server.log"))?;
        servers.push(server);
    }
    let mut st = SentenceTransformers::start(&model);
    let mut files = BTreeMap::new();
    for t in Traffic::ALL {
        let path = dir.path().join(format!("{t:?}.jsonl"));
        let lines: Vec<String> = t.offline(&pools).iter().map(|x| serde_json::to_string(&x.body).unwrap()).collect();
        std::fs::write(&path, lines.join("\n"))?;
        files.insert(t, path);
    }
    for s in &servers {
        block(s, &pools, Traffic::Mixed, clients, 2.0).await; // warm-up
    }
    println!(
        "{} (ort:cpu), {clients} keep-alive connections, one text per /v1/embeddings request, {seconds:.0} s blocks, \
         {rounds} rounds alternating; load average at start {}",
        bin.display(),
        load_average()
    );
    let mut got: BTreeMap<(Traffic, usize), Block> = BTreeMap::new();
    let mut st_got: BTreeMap<Traffic, (f64, f64)> = BTreeMap::new();
    for round in 0..rounds {
        for t in Traffic::ALL {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let b = block(&servers[i], &pools, t, clients, seconds).await;
                got.entry((t, i)).or_default().absorb(b);
            }
            if let Some(st) = st.as_mut() {
                if let Some((n, secs)) = st.run(&files[&t], seconds) {
                    let texts = t.offline(&pools);
                    let per_pass: usize = texts.iter().map(|x| x.tokens).sum();
                    let e = st_got.entry(t).or_default();
                    e.0 += n / texts.len() as f64 * per_pass as f64;
                    e.1 += secs;
                }
            }
        }
    }
    println!("load average at end {}\n", load_average());
    println!(
        "| traffic | grouping | req/s | real tokens/s | p50 / p99 ms | padding / real tokens | failed | \
         tokens/s vs off | vs sentence-transformers sorted |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for t in Traffic::ALL {
        let st_rate = st_got.get(&t).map(|(tok, s)| tok / s);
        let off_rate = got.get(&(t, 0)).map(|b| b.tokens as f64 / b.seconds).unwrap_or(f64::NAN);
        for (i, (name, _)) in settings.iter().enumerate() {
            let Some(b) = got.get_mut(&(t, i)) else { continue };
            let rate = b.tokens as f64 / b.seconds;
            let vs_st = st_rate.map(|s| format!("{:.2}x", rate / s)).unwrap_or_else(|| "-".into());
            println!(
                "| {} | {name} | {:.0} | {:.0} | {:.0} / {:.0} | {:.1}% | {} | {:.2}x | {vs_st} |",
                t.name(),
                b.ok as f64 / b.seconds,
                rate,
                pct(&mut b.latencies, 0.5),
                pct(&mut b.latencies, 0.99),
                100.0 * b.padding / b.real.max(1.0),
                b.failed,
                rate / off_rate,
            );
        }
        match st_rate {
            Some(s) => println!(
                "| {} | sentence-transformers offline, sorted, batch 32 | - | {s:.0} | - | - | - | - | 1.00x |",
                t.name()
            ),
            None => println!("| {} | sentence-transformers | skipped (set BULKHEAD_ST_PYTHON) | | | | | | |", t.name()),
        }
    }
    for s in servers {
        s.stop()?;
    }
    Ok(())
}
