//! Mixed-length traffic through a real server: short queries and long passages sent at once, one text per request,
//! are batched, grouped by length into forward passes, and each answer equals the text's answer when it is sent
//! alone (no padding at all). Every answer's `Server-Timing` `batch` entry gives the pass that computed it, whose
//! padding stays within the grouping limits, and `/metrics` counts the same padding. No timing is asserted here (the
//! throughput is measured by `cargo run --release -p bulkhead --example mixed_bench`).

mod common;

use common::{compare, need, Server};
use serde_json::json;

const WORDS: [&str; 12] = [
    "harbour",
    "lantern",
    "quietly",
    "seventeen",
    "orbit",
    "maple",
    "granite",
    "velvet",
    "river",
    "search",
    "engine",
    "passage",
];

/// A text of `n` words (about `n` to `2n` tokens), different for each `variant`.
fn text(variant: usize, n: usize) -> String {
    (0..n).map(|i| WORDS[(i * 7 + variant * 5 + i / 3) % WORDS.len()]).collect::<Vec<_>>().join(" ")
}

fn embed(addr: &str, text: &str) -> (Vec<f32>, (usize, usize, usize)) {
    let body = json!({"input": text}).to_string();
    let r = common::http(addr, "POST", "/v1/embeddings", &[("content-type", "application/json")], Some(&body));
    assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(400)]);
    let body = r.json();
    let vector = body["data"][0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let timing = r.header("server-timing").expect("Server-Timing").to_string();
    (vector, batch_entry(&timing))
}

/// (rows, real, padded) from `batch;desc="rows=R real=T padded=P"`.
fn batch_entry(timing: &str) -> (usize, usize, usize) {
    let entry = timing.split(", ").find(|e| e.starts_with("batch;")).unwrap_or_else(|| panic!("no batch: {timing}"));
    let field = |name: &str| -> usize {
        let at = entry.find(&format!("{name}=")).unwrap_or_else(|| panic!("no {name} in {entry}"));
        entry[at + name.len() + 1..].chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap()
    };
    (field("rows"), field("real"), field("padded"))
}

fn metric(server: &Server, name: &str) -> f64 {
    let r = server.request("GET", "/metrics", &[], None);
    r.body.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[test]
fn short_and_long_texts_at_once_answer_as_each_alone_within_the_padding_limits() {
    // One worker and one batch in flight, so that requests queue while it computes and batches form.
    mixed_traffic(&["--compute-units", "ort:cpu", "--max-concurrent-batches", "1"]);
}

/// With two workers the short lane is on: long rows (over 128 tokens) go to one worker, on its low-priority thread,
/// while short ones pass them; every answer is still the text's answer alone.
#[test]
fn with_two_workers_short_rows_pass_long_ones_and_every_answer_is_exact() {
    mixed_traffic(&["--compute-units", "ort:cpu", "--max-concurrent-batches", "1", "--workers", "2"]);
}

fn mixed_traffic(args: &[&str]) {
    if need(common::minilm_folder(), "the all-MiniLM-L6-v2 package").is_none() {
        return;
    }
    let server = Server::start(args, &[]);
    let texts: Vec<String> =
        (0..40).map(|i| if i % 5 == 4 { text(i, 40 + 25 * (i % 7)) } else { text(i, 3 + i % 9) }).collect();
    let alone: Vec<Vec<f32>> = texts.iter().map(|t| embed(&server.addr, t).0).collect();
    assert!(alone.iter().all(|v| v.len() == 384));

    let real_before = metric(&server, "bulkhead_batch_real_tokens_total");
    let padding_before = metric(&server, "bulkhead_batch_padding_tokens_total");
    let mut shared = vec![];
    let mut longest = vec![];
    for round in 0..3 {
        let answers: Vec<(Vec<f32>, (usize, usize, usize))> = std::thread::scope(|s| {
            let handles: Vec<_> = texts.iter().map(|t| s.spawn(|| embed(&server.addr, t))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (i, ((vector, (rows, real, padded)), alone)) in answers.iter().zip(&alone).enumerate() {
            let (min_cos, max_diff) = compare(std::slice::from_ref(vector), std::slice::from_ref(alone));
            assert!(
                min_cos >= 0.999999 && max_diff <= 1e-5,
                "round {round}, text {i} in a pass of {rows} rows: cosine {min_cos}, max abs diff {max_diff}"
            );
            let padding = padded - real;
            assert!(
                *rows == 1 || padding <= 8 * rows || padding as f64 <= 0.15 * *real as f64,
                "text {i}: a pass of {rows} rows, {real} real tokens, {padded} padded"
            );
            shared.push(*rows);
            longest.push(real / rows);
        }
    }
    assert!(shared.iter().any(|&r| r > 1), "no request shared a forward pass: {shared:?}");
    assert!(longest.iter().any(|&n| n > 128), "some rows are long (over --long-row-tokens 128): {longest:?}");
    let real = metric(&server, "bulkhead_batch_real_tokens_total") - real_before;
    let padding = metric(&server, "bulkhead_batch_padding_tokens_total") - padding_before;
    assert!(real > 0.0 && padding >= 0.0, "/metrics counts the passes: {real} real, {padding} padding");
    let share = metric(&server, "bulkhead_padding_share");
    assert!((0.0..1.0).contains(&share), "bulkhead_padding_share {share}");
}
