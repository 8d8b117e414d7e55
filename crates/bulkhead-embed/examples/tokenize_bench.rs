//! CPU time to tokenize one 7 MB text, before (the whole text tokenized, then truncated: what every route did)
//! and after (bounded tokenization), for the real all-MiniLM-L6-v2 and a fixture tokenizer of each type; prints a
//! table, and whether both give the same tokens and the same "longer than the maximum" flag.
//!
//! `cargo run -p bulkhead-embed --example tokenize_bench [--release]`. CPU time is this thread's
//! (`CLOCK_THREAD_CPUTIME_ID`); each cell is the minimum of three runs.

use std::path::PathBuf;

use bulkhead_core::ModelFiles;
use bulkhead_embed::{Tokenizer, Truncation};
use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};

/// This thread's CPU time in milliseconds (`CLOCK_THREAD_CPUTIME_ID`).
fn cpu_ms() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime");
    t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 / 1e6
}

/// The minimum CPU time of three runs of `f`, and its last result.
fn measure<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..3 {
        let t = cpu_ms();
        let r = f();
        best = best.min(cpu_ms() - t);
        out = Some(r);
    }
    (best, out.expect("three runs"))
}

/// Deterministic English-like prose of `bytes` bytes.
fn prose(bytes: usize) -> String {
    let words = [
        "the",
        "river",
        "bank",
        "compute",
        "unit",
        "answered",
        "quickly",
        "while",
        "supervised",
        "worker",
        "processes",
        "isolate",
        "crashes,",
        "hangs",
        "and",
        "leaks.",
        "Embeddings",
        "map",
        "sentences",
        "to",
        "vectors",
    ];
    let mut s = String::with_capacity(bytes + 16);
    let mut x = 12345u64;
    while s.len() < bytes {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        s.push_str(words[(x >> 33) as usize % words.len()]);
        s.push(' ');
    }
    s
}

fn main() {
    let mut folders: Vec<(String, PathBuf)> = vec![];
    if let Some(m) = bulkhead_testkit::minilm_folder() {
        folders.push(("all-MiniLM-L6-v2 (WordPiece)".into(), m));
    } else {
        eprintln!("(the all-MiniLM-L6-v2 package is absent: its rows are left out; run scripts/setup.sh)");
    }
    for (name, dir) in [
        ("fixture xlm-roberta (Unigram)", "arch/xlm-roberta"),
        ("fixture modernbert (byte BPE)", "arch/modernbert"),
        ("fixture qwen3 (byte BPE)", "arch/qwen3"),
    ] {
        folders.push((name.into(), bulkhead_testkit::fixture(dir)));
    }
    let seven = 7 << 20;
    let texts: Vec<(&str, String)> = vec![
        ("prose", prose(seven)),
        ("one word", "a".repeat(seven)),
        ("1,000,000 emoji", "😀".repeat(1_000_000)),
        ("CJK, no spaces", "中文文本处理。".repeat(seven / 21)),
    ];
    println!("| tokenizer | 7 MB text | before: CPU ms | after: CPU ms | after: outcome | same tokens |");
    println!("|---|---|---:|---:|---|---|");
    for (name, folder) in &folders {
        let mut model = ModelFiles::open(folder).expect("a model folder");
        model.max_seq_length = model.max_seq_length.min(512);
        let ours = Tokenizer::load(&model).expect("the tokenizer loads");
        let mut full = tokenizers::Tokenizer::from_file(folder.join("tokenizer.json")).expect("tokenizer.json");
        full.with_padding(None);
        full.with_truncation(Some(TruncationParams {
            max_length: model.max_seq_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .expect("truncation");
        for (kind, text) in &texts {
            let (before, want) = measure(|| {
                let e = full.encode(text.as_str(), true).expect("tokenizes");
                (e.get_ids().iter().map(|&i| i as i64).collect::<Vec<_>>(), !e.get_overflowing().is_empty())
            });
            let (after, got) = measure(|| ours.encode_prompted(std::slice::from_ref(text), None, Truncation::Right));
            let (outcome, same) = match got {
                Ok(e) => {
                    let same = e.rows[0].ids() == want.0.as_slice() && e.truncated[0] == want.1;
                    (format!("{} tokens, truncated: {}", e.rows[0].len(), e.truncated[0]), same.to_string())
                }
                Err(e) => (format!("refused: {}", e.to_string().split(';').next().unwrap_or("")), "-".into()),
            };
            println!(
                "| {name} (max {}) | {kind} | {before:.1} | {after:.2} | {outcome} | {same} |",
                model.max_seq_length
            );
        }
    }
}
