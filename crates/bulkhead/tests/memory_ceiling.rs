//! A memory ceiling per worker (`--worker-memory-mb`) through a real server: a worker that leaks 50 MiB per
//! prediction under a 400 MiB ceiling serves a stream of requests, every one of them answered. Its first worker also
//! allocates 450 MiB at its third prediction and so reaches the ceiling: that death is cause `oom` in `/units`, the
//! metrics and the log, and its request is answered by a fresh worker. Later workers are recycled below the ceiling.
//! Once with `setrlimit(RLIMIT_DATA)` (anywhere), once with a memory cgroup per worker (where this process can make
//! one: a delegated cgroup v2 subtree, or a writable v1 memory hierarchy); and a ceiling the model cannot even load
//! under is a start-up error that says so.

mod common;

use common::{need, Server};
use serde_json::{json, Value};

/// 50 MiB kept per prediction by every worker; 450 MiB more at the third prediction of the first one.
const LEAK: &str = r#"[{"unit": "ort:cpu", "kind": "leak", "mb": 50},
    {"unit": "ort:cpu", "kind": "leak", "mb": 450, "after": 2, "generations": [0]}]"#;
const CEILING_MB: u64 = 400;
const REQUESTS: usize = 24;

fn leaky_server(enforcement: &str) -> Server {
    let ceiling = CEILING_MB.to_string();
    let args =
        ["--compute-units", "ort:cpu", "--worker-memory-mb", &ceiling, "--worker-memory-enforcement", enforcement];
    Server::start(&args, &[("BULKHEAD_FAULTS", LEAK)])
}

fn model_view(server: &Server) -> Value {
    let units = server.request("GET", "/units", &[], None);
    assert_eq!(units.status, 200, "{}", units.body);
    units.json()["models"].as_object().unwrap().values().next().unwrap().clone()
}

/// Sends the stream; every request must be answered, each text with the same vector every time.
fn stream(server: &Server) {
    let texts = ["a ceiling for every worker", "the leak is replaced in time", "nothing is lost"];
    let mut first: Vec<Option<Vec<f64>>> = vec![None; texts.len()];
    for i in 0..REQUESTS {
        let r = server.post_json("/embed", &json!({"inputs": texts[i % texts.len()]}));
        assert_eq!(r.status, 200, "request {i}: {}\n{}", r.body, server.stderr());
        let v: Vec<f64> = r.json()[0].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(v.len(), 384);
        match &first[i % texts.len()] {
            None => first[i % texts.len()] = Some(v),
            Some(want) => {
                let diff = want.iter().zip(&v).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                assert!(diff < 1e-6, "request {i}: a different vector for the same text ({diff})");
            }
        }
    }
}

/// Checks what `/units`, `/metrics` and the log say after the stream.
fn check_reported(server: &Server, mechanism: &str) -> Value {
    let m = model_view(server);
    let ceiling = &m["memory_ceiling"];
    assert_eq!(ceiling["limit_bytes"], CEILING_MB << 20, "{m:#}");
    assert_eq!(ceiling["mechanism"], mechanism, "{m:#}");
    let u = &m["units"][0];
    assert_eq!(u["state"], "serving", "{u:#}");
    assert!(u["crashes_by_cause"]["oom"].as_u64().unwrap_or(0) >= 1, "the 450 MiB allocation is an oom: {u:#}");
    assert_eq!(u["crash_level"], 0.0, "running out of memory does not count toward a quarantine: {u:#}");
    assert!(u["recycles"].as_u64().unwrap() >= 1, "the leaking workers are recycled: {u:#}");
    let limit = u["recycle_rss_limit_bytes"].as_u64().expect("a recycle limit below the ceiling");
    assert!(limit < CEILING_MB << 20, "{u:#}");
    let metrics = server.request("GET", "/metrics", &[], None).body;
    let oom = metrics.lines().find(|l| l.starts_with("bulkhead_worker_deaths_total{") && l.contains("cause=\"oom\""));
    assert!(oom.is_some(), "{metrics}");
    let gauge = format!("bulkhead_worker_memory_ceiling_bytes{{model=\"all-MiniLM-L6-v2\",mechanism=\"{mechanism}\"}}");
    assert!(metrics.contains(&gauge), "{metrics}");
    let log = plain(&server.stderr());
    assert!(log.contains("cause=\"oom\""), "the death is logged with its cause: {log}");
    m
}

/// The log without its colours.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn a_leak_under_an_rlimit_ceiling_is_recycled_and_an_allocation_past_it_is_an_oom() {
    if need(common::minilm_folder(), "the all-MiniLM-L6-v2 package").is_none() {
        return;
    }
    let server = leaky_server("rlimit");
    stream(&server);
    let m = check_reported(&server, "rlimit_data");
    assert!(m["units"][0]["crashes_by_exit"]["SIGABRT"].as_u64().unwrap_or(0) >= 1, "{m:#}");
    let log = plain(&server.stderr());
    assert!(log.contains("out of memory: an allocation failed"), "{log}");
}

#[test]
fn a_leak_under_a_cgroup_ceiling_is_recycled_and_the_kernel_kill_is_an_oom() {
    if need(common::minilm_folder(), "the all-MiniLM-L6-v2 package").is_none() {
        return;
    }
    let mut server = leaky_server("auto");
    let m = model_view(&server);
    let mechanism = m["memory_ceiling"]["mechanism"].as_str().unwrap().to_string();
    if mechanism == "rlimit_data" {
        let why = m["memory_ceiling"]["why_not_cgroup"].as_str().unwrap_or("").to_string();
        bulkhead_testkit::skip(&format!("no memory cgroup can be made here ({why}); needs a delegated cgroup"));
        return;
    }
    let parent = std::path::PathBuf::from(m["memory_ceiling"]["cgroup_parent"].as_str().unwrap());
    stream(&server);
    let m = check_reported(&server, &mechanism);
    assert!(m["units"][0]["crashes_by_exit"]["SIGKILL"].as_u64().unwrap_or(0) >= 1, "{m:#}");
    assert!(plain(&server.stderr()).contains("the kernel's OOM killer"), "{}", server.stderr());

    // A graceful stop removes every worker's group.
    let pid = server.child.id();
    // SAFETY: signalling the server process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let left: Vec<String> = std::fs::read_dir(&parent)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("bulkhead-{pid}-")))
        .collect();
    assert!(left.is_empty(), "worker groups left in {}: {left:?}", parent.display());
}

#[test]
fn a_ceiling_the_model_cannot_load_under_is_a_start_up_error_naming_it() {
    if need(common::minilm_folder(), "the all-MiniLM-L6-v2 package").is_none() {
        return;
    }
    let args = ["serve", "--port", "0", "--compute-units", "ort:cpu", "--worker-memory-mb", "64"];
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().display().to_string();
    let out = common::bulkhead(
        &[&args[..], &["--worker-memory-enforcement", "rlimit"]].concat(),
        &[("BULKHEAD_STATE_DIR", &state)],
    );
    let err = common::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("memory ceiling of 64 MiB") && err.contains("--worker-memory-mb"), "{err}");
    // Below 16 MiB is a usage error.
    let out = common::bulkhead(&["serve", "--worker-memory-mb", "8"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
}
