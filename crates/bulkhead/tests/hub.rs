//! `--model ORG/NAME` end to end: the real binary against a local stand-in of the Hugging Face hub serving the real
//! all-MiniLM-L6-v2 files, the cache checked both ways against the real `huggingface_hub` package, and every
//! failure (404, 401, network down, checksum, killed download, full disk) as one line with exit code 1.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bulkhead_hub_stand_in::{Access, Fault, Repo, StandIn};
use common::{compare, minilm_folder, minilm_int8_onnx, need, reference, stderr, vectors, venv_python};

const ID: &str = "sentence-transformers/all-MiniLM-L6-v2";
const WEIGHTS: &str = "model.safetensors";

/// A repository folder: the MiniLM package's files plus files no bulkhead unit needs (a PyTorch checkpoint, an
/// ONNX variant, a Rust checkpoint), which must never be downloaded.
fn minilm_repo(minilm: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(minilm).unwrap().flatten() {
        std::os::unix::fs::symlink(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    std::fs::write(dir.path().join("pytorch_model.bin"), vec![7u8; 1 << 20]).unwrap();
    std::fs::create_dir(dir.path().join("onnx")).unwrap();
    std::fs::write(dir.path().join("onnx/model_qint8_avx512.onnx"), vec![8u8; 1 << 19]).unwrap();
    std::fs::write(dir.path().join("rust_model.ot"), vec![9u8; 1 << 18]).unwrap();
    dir
}

struct Hub {
    stand_in: StandIn,
    cache: tempfile::TempDir,
    _repos: Vec<tempfile::TempDir>,
}

impl Hub {
    /// The stand-in serving MiniLM as `ID` (and as a gated `org/gated`), or `None` (skipping) without the model.
    fn start() -> Option<Hub> {
        let minilm = need(minilm_folder(), "the all-MiniLM-L6-v2 package")?;
        let repo = minilm_repo(&minilm);
        let mut gated = Repo::public("org/gated", repo.path());
        gated.access = Access::Gated("hf_granted".into());
        let stand_in = StandIn::start(vec![Repo::public(ID, repo.path()), gated]).unwrap();
        Some(Hub { stand_in, cache: tempfile::tempdir().unwrap(), _repos: vec![repo] })
    }

    fn env(&self) -> Vec<(&str, String)> {
        vec![("HF_HUB_CACHE", self.cache.path().display().to_string()), ("HF_ENDPOINT", self.stand_in.url().into())]
    }

    /// Runs the binary with this hub (and `extra` variables), no token and online unless `extra` says otherwise.
    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        self.command(args, extra).output().unwrap()
    }

    fn command(&self, args: &[&str], extra: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bulkhead"));
        cmd.args(args);
        for k in ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "BULKHEAD_OFFLINE"] {
            cmd.env_remove(k);
        }
        cmd.env_remove("BULKHEAD_MODEL").env_remove("BULKHEAD_COMPUTE_UNITS").env("HF_HOME", self.cache.path());
        cmd.envs(self.env()).envs(extra.iter().copied());
        cmd
    }

    fn snapshot(&self) -> PathBuf {
        let commit = self.stand_in.commit(ID).unwrap();
        self.cache.path().join("models--sentence-transformers--all-MiniLM-L6-v2/snapshots").join(commit)
    }
}

fn embed_json(hub: &Hub, model: &str, units: &str, extra: &[(&str, &str)]) -> (serde_json::Value, String) {
    let r = reference();
    let mut args = vec!["embed", "--json", "--model", model, "--compute-units", units, "--"];
    args.extend(r.sentences.iter().map(String::as_str));
    let out = hub.run(&args, extra);
    assert!(out.status.success(), "embed failed: {}", stderr(&out));
    (serde_json::from_slice(&out.stdout).unwrap(), stderr(&out))
}

fn assert_reference_exact(label: &str, v: &serde_json::Value) {
    let (min_cos, max_diff) = compare(&vectors(v), &reference().embeddings);
    eprintln!("{label}: min cosine {min_cos:.7}, max abs diff {max_diff:.2e}");
    assert!(min_cos >= 0.99999 && max_diff <= 1e-5, "{label}: {min_cos} {max_diff}");
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// What a model needs from the MiniLM repository (never the PyTorch, Rust or ONNX-variant files, nor READMEs).
const NEEDED: &[&str] = &[
    "1_Pooling/config.json",
    "config.json",
    "config_sentence_transformers.json",
    "model.safetensors",
    "modules.json",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
];

#[test]
fn embed_by_hub_id_is_reference_exact_online_then_offline() {
    let Some(hub) = Hub::start() else { return };
    let (v, err) = embed_json(&hub, ID, "ort:cpu,candle:cpu", &[]);
    assert_reference_exact("ort:cpu through the hub id", &v);
    assert_eq!(v["model"], ID, "a hub model is named by its id");
    assert_eq!(sorted(hub.stand_in.downloaded_files()), NEEDED);
    // Not a terminal: plain progress lines, no bar.
    assert!(err.contains(&format!("downloading {ID} (")), "{err}");
    assert!(err.contains("  model.safetensors (86.7 MiB)"), "{err}");
    assert!(err.contains("downloaded ") && !err.contains('\r') && !err.contains("\x1b["), "{err}");

    hub.stand_in.clear_log();
    let (v, _) = embed_json(&hub, ID, "candle:cpu", &[("HF_HUB_OFFLINE", "1")]);
    assert_reference_exact("candle:cpu offline", &v);
    assert!(hub.stand_in.requests().is_empty(), "offline asked the hub: {:?}", hub.stand_in.requests());
}

/// Runs Python `code` with the project's venv against `hub`; `None` (skipping) without `huggingface_hub`.
fn python(hub: &Hub, code: &str, extra: &[(&str, &str)]) -> Option<Output> {
    let py = need(venv_python(), "the project's .venv")?;
    let probe = Command::new(&py).args(["-c", "import huggingface_hub"]).output().unwrap();
    need(probe.status.success().then_some(()), "huggingface_hub (scripts/setup.sh --test)")?;
    let mut cmd = Command::new(py);
    cmd.args(["-c", code]).envs(hub.env()).env("HF_HOME", hub.cache.path()).env("HF_HUB_DISABLE_TELEMETRY", "1");
    cmd.env_remove("HF_TOKEN").env_remove("HF_HUB_OFFLINE").envs(extra.iter().copied());
    Some(cmd.output().unwrap())
}

#[test]
fn huggingface_hub_loads_what_bulkhead_downloaded() {
    let Some(hub) = Hub::start() else { return };
    let out = hub.run(&["pull", ID], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hub.snapshot().display().to_string());
    let code = format!(
        r#"
import huggingface_hub as h
path = h.snapshot_download("{ID}", local_files_only=True)
print(path)
print(h.hf_hub_download("{ID}", "config.json", local_files_only=True))
info = h.scan_cache_dir()
assert not info.warnings, info.warnings
repo = [r for r in info.repos if r.repo_id == "{ID}"][0]
print(sorted(f.file_name for rev in repo.revisions for f in rev.files))
print(sorted(ref for rev in repo.revisions for ref in rev.refs))
"#
    );
    let Some(py) = python(&hub, &code, &[("HF_HUB_OFFLINE", "1")]) else { return };
    let text = String::from_utf8_lossy(&py.stdout).into_owned();
    assert!(py.status.success(), "huggingface_hub refused the cache: {}{text}", String::from_utf8_lossy(&py.stderr));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], hub.snapshot().display().to_string());
    assert_eq!(lines[1], hub.snapshot().join("config.json").display().to_string());
    assert!(lines[2].contains("'model.safetensors'") && !lines[2].contains("pytorch_model.bin"), "{}", lines[2]);
    assert_eq!(lines[3], "['main']");
}

#[test]
fn bulkhead_uses_offline_what_huggingface_hub_downloaded() {
    let Some(hub) = Hub::start() else { return };
    let code = format!("import huggingface_hub as h\nprint(h.snapshot_download('{ID}'))");
    let Some(py) = python(&hub, &code, &[]) else { return };
    assert!(py.status.success(), "snapshot_download from the stand-in failed: {}", String::from_utf8_lossy(&py.stderr));
    assert_eq!(String::from_utf8_lossy(&py.stdout).trim(), hub.snapshot().display().to_string());
    hub.stand_in.clear_log();
    let (v, err) = embed_json(&hub, ID, "ort:cpu", &[("HF_HUB_OFFLINE", "1")]);
    assert_reference_exact("ort:cpu on huggingface_hub's download", &v);
    assert!(hub.stand_in.requests().is_empty() && !err.contains("downloading"), "{err}");
}

#[test]
fn serve_by_hub_id_names_the_model_after_it() {
    let Some(hub) = Hub::start() else { return };
    let pulled = hub.run(&["pull", ID, "--json"], &[]);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    let j: serde_json::Value = serde_json::from_slice(&pulled.stdout).unwrap();
    assert_eq!((j["model"].as_str(), j["revision"].as_str()), (Some(ID), Some("main")));
    assert_eq!(j["commit"], hub.stand_in.commit(ID).unwrap());
    hub.stand_in.clear_log();
    let env: Vec<(&str, String)> = hub.env().into_iter().chain([("HF_HUB_OFFLINE", "1".to_string())]).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = common::Server::start(&["--model", ID, "--compute-units", "ort:cpu"], &env);
    let models = server.request("GET", "/v1/models", &[], None).json();
    assert_eq!(models["data"][0]["id"], ID);
    let r = reference();
    let body = serde_json::json!({"input": [r.sentences[0]], "model": ID});
    let resp = server.post_json("/v1/embeddings", &body);
    assert_eq!(resp.status, 200, "{}", resp.body);
    let got: Vec<f32> =
        resp.json()["data"][0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let (min_cos, max_diff) = compare(&[got], &r.embeddings[..1]);
    assert!(min_cos >= 0.99999 && max_diff <= 1e-5, "{min_cos} {max_diff}");
    assert!(hub.stand_in.requests().is_empty(), "serve offline asked the hub: {:?}", hub.stand_in.requests());
}

#[test]
fn an_onnx_only_repository_runs_its_graph_and_nothing_else() {
    let Some(minilm) = need(minilm_folder(), "the all-MiniLM-L6-v2 package") else { return };
    let Some(int8) = need(minilm_int8_onnx(), "the int8 MiniLM package") else { return };
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir(repo.path().join("onnx")).unwrap();
    std::os::unix::fs::symlink(&int8, repo.path().join("onnx/model.onnx")).unwrap();
    std::fs::write(repo.path().join("onnx/model_quantized.onnx"), vec![1u8; 1 << 18]).unwrap();
    for f in ["tokenizer.json", "config.json", "modules.json", "sentence_bert_config.json", "1_Pooling"] {
        std::os::unix::fs::symlink(minilm.join(f), repo.path().join(f)).unwrap();
    }
    let stand_in = StandIn::start(vec![Repo::public("onnx-community/minilm-int8", repo.path())]).unwrap();
    let hub = Hub { stand_in, cache: tempfile::tempdir().unwrap(), _repos: vec![repo] };
    let (v, _) = embed_json(&hub, "onnx-community/minilm-int8", "ALL", &[]);
    assert_eq!((v["unit"].as_str(), v["precision"].as_str()), (Some("ort:cpu"), Some("int8")), "{v}");
    let (min_cos, _) = compare(&vectors(&v), &reference().embeddings);
    assert!(min_cos >= 0.99, "{min_cos}");
    let got = sorted(hub.stand_in.downloaded_files());
    assert_eq!(
        got,
        [
            "1_Pooling/config.json",
            "config.json",
            "modules.json",
            "onnx/model.onnx",
            "sentence_bert_config.json",
            "tokenizer.json"
        ]
    );
}

#[test]
fn a_killed_download_resumes_on_the_next_run() {
    let Some(hub) = Hub::start() else { return };
    const STALL: u64 = 8 << 20;
    hub.stand_in.set_fault(WEIGHTS, Some(Fault::StallAfter(STALL)));
    let sha = hub.stand_in.files(ID).into_iter().find(|f| f.path == WEIGHTS).unwrap().sha256;
    let root = hub.cache.path().join("models--sentence-transformers--all-MiniLM-L6-v2");
    let partial = root.join("blobs").join(format!("{sha}.incomplete"));
    let mut child = hub.command(&["pull", ID], &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < STALL {
        assert!(t0.elapsed() < Duration::from_secs(120), "the download never reached the stall");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Killed mid-file: nothing is under a final name.
    assert!(!root.join("blobs").join(&sha).exists() && !hub.snapshot().join(WEIGHTS).exists());
    assert!(!root.join("refs/main").exists());

    hub.stand_in.set_fault(WEIGHTS, None);
    let out = hub.run(&["pull", ID], &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("resuming at 8.0 MiB"), "{err}");
    let ranges: Vec<String> = hub.stand_in.requests().into_iter().filter_map(|r| r.range).collect();
    assert_eq!(ranges, [format!("bytes={STALL}-")]);
    let size = std::fs::metadata(hub.snapshot().join(WEIGHTS)).unwrap().len();
    assert_eq!(hub.stand_in.bytes_sent(WEIGHTS), size, "the second run downloaded only the rest");
}

fn assert_one_line_error(out: &Output, code: i32, wants: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error: ")).count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap();
    eprintln!("{line}");
    for w in wants {
        assert!(line.contains(w), "`{w}` not in: {line}");
    }
}

#[test]
fn failures_are_one_line_that_names_the_repo_with_exit_1() {
    let Some(hub) = Hub::start() else { return };
    let embed = |model: &str, extra: &[(&str, &str)]| hub.run(&["embed", "--model", model, "hello"], extra);
    assert_one_line_error(&embed("org/missing", &[]), 1, &["org/missing: repository not found", "HF_TOKEN"]);
    assert_one_line_error(&embed("org/gated", &[]), 1, &["org/gated: access refused (HTTP 401", "HF_TOKEN"]);
    assert_one_line_error(&embed("org/gated", &[("HF_TOKEN", "hf_wrong")]), 1, &["HTTP 403", "was refused"]);
    assert_one_line_error(&embed(&format!("{ID}@v9"), &[]), 1, &[ID, "revision `v9` not found"]);
    assert_one_line_error(&embed(ID, &[("BULKHEAD_OFFLINE", "1")]), 1, &[ID, "offline", "bulkhead pull"]);
    assert_one_line_error(&embed("not-an-id", &[]), 1, &["not-an-id: no such file or folder", "ORG/NAME"]);
    assert_one_line_error(&hub.run(&["pull", "a/b/c"], &[]), 2, &["a/b/c", "ORG/NAME"]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    assert_one_line_error(&embed(ID, &[("HF_ENDPOINT", &url)]), 1, &[ID, "cannot reach the hub at", "HF_ENDPOINT"]);
    hub.stand_in.set_fault("tokenizer.json", Some(Fault::FlipByte(10)));
    assert_one_line_error(&embed(ID, &[]), 1, &[ID, "`tokenizer.json` does not match its checksum", "git-sha1"]);
    hub.stand_in.set_fault("tokenizer.json", None);
    let ok = hub.run(&["pull", "org/gated"], &[("HF_TOKEN", "hf_granted")]);
    assert!(ok.status.success(), "{}", stderr(&ok));
}

#[test]
fn a_full_disk_is_one_clear_line() {
    let Some(hub) = Hub::start() else { return };
    // A 2 MiB tmpfs in a private mount namespace (user namespaces need no root); skipped where the kernel refuses.
    let probe = Command::new("unshare").args(["-rm", "true"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        bulkhead_testkit::skip("`unshare -rm` (a user and mount namespace for a small tmpfs) is not allowed here");
        return;
    }
    let small = tempfile::tempdir().unwrap();
    let script = r#"mount -t tmpfs -o size=2m tmpfs "$1" && shift && exec "$@""#;
    let dir = small.path().to_str().unwrap();
    let out = Command::new("unshare")
        .args(["-rm", "sh", "-c", script, "sh", dir, env!("CARGO_BIN_EXE_bulkhead"), "pull", ID])
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("BULKHEAD_OFFLINE")
        .env("HF_HOME", dir)
        .env("HF_HUB_CACHE", dir)
        .env("HF_ENDPOINT", hub.stand_in.url())
        .output()
        .unwrap();
    assert_one_line_error(&out, 1, &[ID, "disk full", "HF_HUB_CACHE"]);
}
