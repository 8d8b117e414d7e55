//! Models on demand on a real server: `--models-dir` with three small models (the real all-MiniLM-L6-v2, a tiny GTE
//! embedding model and a tiny BERT reranker) and a broken folder. Under `--max-loaded-models 2` or a memory budget
//! that fits two, alternating requests are all answered and the least recently used model is unloaded (its worker
//! processes are gone); `keep_alive: 0` and the idle keep-alive unload; concurrent first requests load once; a
//! model whose load fails answers with the failure (until its files change) and does not block the others.
//! No timing is asserted: each state change is waited for with a generous bound.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{need, Server};
use serde_json::{json, Value};

/// A models folder: `minilm`, `gte`, `reranker` (links to the real folders), `broken` (no usable files) and
/// `corrupt` (a GTE copy whose weights are garbage: it opens, and fails to load).
fn models_dir(minilm: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let link = |name: &str, to: &Path| std::os::unix::fs::symlink(to, dir.path().join(name)).unwrap();
    link("minilm", minilm);
    link("gte", &bulkhead_testkit::fixture("arch/gte"));
    link("reranker", &bulkhead_testkit::fixture("cross/bert-reranker"));
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("config.json"), "{ this is not json").unwrap();
    dir
}

fn corrupt_copy(dir: &Path) -> PathBuf {
    let corrupt = dir.join("corrupt");
    std::fs::create_dir(&corrupt).unwrap();
    for e in std::fs::read_dir(bulkhead_testkit::fixture("arch/gte")).unwrap().flatten() {
        if e.path().is_dir() {
            let sub = corrupt.join(e.file_name());
            std::fs::create_dir(&sub).unwrap();
            for f in std::fs::read_dir(e.path()).unwrap().flatten() {
                std::fs::copy(f.path(), sub.join(f.file_name())).unwrap();
            }
        } else {
            std::fs::copy(e.path(), corrupt.join(e.file_name())).unwrap();
        }
    }
    std::fs::write(corrupt.join("model.safetensors"), vec![0x5au8; 4096]).unwrap();
    corrupt
}

fn models(server: &Server, auth: &[(&str, &str)]) -> Vec<Value> {
    let r = server.request("GET", "/v1/models", auth, None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["data"].as_array().unwrap().clone()
}

fn card(server: &Server, auth: &[(&str, &str)], name: &str) -> Value {
    models(server, auth).into_iter().find(|m| m["id"] == name).unwrap_or_else(|| panic!("no model {name}"))
}

fn state(server: &Server, auth: &[(&str, &str)], name: &str) -> String {
    card(server, auth, name)["state"].as_str().unwrap().to_string()
}

/// Waits (up to 60 s) for a model to reach `want`.
fn wait_state(server: &Server, auth: &[(&str, &str)], name: &str, want: &str) {
    let t0 = Instant::now();
    while state(server, auth, name) != want {
        assert!(t0.elapsed() < Duration::from_secs(60), "{name} never became {want}: {:?}", card(server, auth, name));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The worker pids of a loaded model, from `/units`.
fn worker_pids(server: &Server, auth: &[(&str, &str)], name: &str) -> Vec<u32> {
    let units = server.request("GET", "/units", auth, None).json();
    let model = &units["models"][name];
    assert!(model.is_object(), "{name} is not in /units: {units}");
    model["units"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|u| u["workers"].as_array().cloned().unwrap_or_default())
        .filter_map(|w| w["pid"].as_u64().map(|p| p as u32))
        .collect()
}

fn gone(pid: u32) -> bool {
    // A zombie (reaped late) counts as gone: its memory is freed.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

fn wait_gone(pids: &[u32]) {
    let t0 = Instant::now();
    while !pids.iter().all(|&p| gone(p)) {
        assert!(t0.elapsed() < Duration::from_secs(30), "workers {pids:?} still run");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ask(server: &Server, auth: &[(&str, &str)], model: &str, extra: Value) -> common::HttpResponse {
    let mut headers = vec![("content-type", "application/json")];
    headers.extend_from_slice(auth);
    let mut body = match model {
        "reranker" => json!({"model": model, "query": "what is a cat", "texts": ["a cat is an animal", "paris"]}),
        _ => json!({"model": model, "input": ["a short text", "and another, a little longer than the first"]}),
    };
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let path = if model == "reranker" { "/rerank" } else { "/v1/embeddings" };
    server.request("POST", path, &headers, Some(&body.to_string()))
}

#[test]
fn under_a_limit_of_two_the_least_recently_used_model_is_unloaded_and_every_request_is_answered() {
    let Some(minilm) = need(common::minilm_folder(), "the all-MiniLM-L6-v2 package") else { return };
    let dir = models_dir(&minilm);
    let args = ["--models-dir", dir.path().to_str().unwrap(), "--max-loaded-models", "2", "--keep-alive", "-1"];
    let server = Server::start(&[&args[..], &["--compute-units", "ort:cpu"]].concat(), &[]);
    let none: &[(&str, &str)] = &[];

    // Everything is listed; nothing is loaded; the broken folder is failed with its reason.
    let listed = models(&server, none);
    let names: Vec<&str> = listed.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(names, ["broken", "gte", "minilm", "reranker"], "{listed:?}");
    for m in &listed {
        let want = if m["id"] == "broken" { "failed" } else { "available" };
        assert_eq!(m["state"], want, "{m}");
    }
    assert!(card(&server, none, "broken")["error"].as_str().unwrap().contains("no model.safetensors"), "{listed:?}");

    // The first two load on their first request.
    assert_eq!(ask(&server, none, "minilm", json!({})).status, 200);
    let minilm_pids = worker_pids(&server, none, "minilm");
    assert!(!minilm_pids.is_empty());
    assert_eq!(ask(&server, none, "gte", json!({})).status, 200);
    // A third: the least recently used (minilm) is drained and unloaded first; its workers are gone.
    let r = ask(&server, none, "reranker", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    wait_gone(&minilm_pids);
    let m = card(&server, none, "minilm");
    assert_eq!(m["state"], "available", "{m}");
    assert_eq!((m["evictions"].as_u64(), m["unloads"].as_u64(), m["loads"].as_u64()), (Some(1), Some(1), Some(1)));
    assert_eq!(state(&server, none, "gte"), "loaded");
    assert_eq!(state(&server, none, "reranker"), "loaded");
    // `/units` shows the loaded models' units, and every model's lifecycle.
    let units = server.request("GET", "/units", &[], None).json();
    assert!(units["models"]["minilm"].is_null() && units["models"]["gte"].is_object(), "{units}");
    let life = &units["lifecycle"]["minilm"];
    assert_eq!((&life["state"], &life["evictions"], &life["loads"]), (&json!("available"), &json!(1), &json!(1)));
    assert!(life["resident_bytes"].as_u64().unwrap() > 0 && life["load_ms"].as_f64().unwrap() > 0.0, "{life}");
    assert_eq!(units["lifecycle"]["broken"]["state"], "failed");

    // Alternating requests over the three: every one answered, never more than two loaded.
    for round in 0..2 {
        for name in ["minilm", "gte", "reranker"] {
            let r = ask(&server, none, name, json!({}));
            assert_eq!(r.status, 200, "round {round}, {name}: {}", r.body);
            let loaded = models(&server, none).iter().filter(|m| m["state"] == "loaded").count();
            assert!(loaded <= 2, "{loaded} loaded: {:?}", models(&server, none));
        }
    }
    let metrics = server.request("GET", "/metrics", &[], None).body;
    assert!(metrics.contains("bulkhead_model_evictions_total{model=\"minilm\"}"), "{metrics}");
    assert!(metrics.contains("bulkhead_model_state{model=\"broken\",state=\"failed\"} 1"), "{metrics}");

    // The broken model answers with why; an unknown one with the list; a bad keep_alive with what to send.
    let r = ask(&server, none, "broken", json!({}));
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("failed to load"), "{}", r.body);
    let r = ask(&server, none, "nope", json!({}));
    assert_eq!(r.status, 404, "{}", r.body);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("`gte`") && msg.contains("`minilm`") && msg.contains("`reranker`"), "{msg}");
    let r = ask(&server, none, "gte", json!({"keep_alive": "soon"}));
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("5m"), "{}", r.body);
    assert_eq!(server.request("GET", "/health", &[], None).status, 200);
}

#[test]
fn keep_alive_zero_unloads_and_idle_models_unload_after_the_keep_alive() {
    let Some(minilm) = need(common::minilm_folder(), "the all-MiniLM-L6-v2 package") else { return };
    let dir = models_dir(&minilm);
    let server = Server::start(&["--models-dir", dir.path().to_str().unwrap(), "--keep-alive", "1s"], &[]);
    let none: &[(&str, &str)] = &[];

    // `keep_alive: 0`: unloaded right after the request.
    let r = ask(&server, none, "gte", json!({"keep_alive": 0}));
    assert_eq!(r.status, 200, "{}", r.body);
    wait_state(&server, none, "gte", "available");
    assert_eq!(card(&server, none, "gte")["unloads"], 1);
    // A negative keep-alive keeps it; the server's 1 s unloads an idle one.
    assert_eq!(ask(&server, none, "reranker", json!({"keep_alive": "-1"})).status, 200);
    let r = ask(&server, none, "minilm", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(card(&server, none, "minilm")["expires_at"].as_f64().is_some());
    wait_state(&server, none, "minilm", "available");
    assert_eq!(state(&server, none, "reranker"), "loaded");
    assert!(card(&server, none, "reranker").get("expires_at").is_none());
    // Ollama's view: only what is loaded.
    let ps = server.request("GET", "/api/ps", &[], None).json();
    let running: Vec<&str> = ps["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert!(!running.contains(&"minilm:latest") && !running.contains(&"gte:latest"), "{ps}");
}

#[test]
fn concurrent_first_requests_load_once_and_load_and_unload_are_admin_routes() {
    let Some(minilm) = need(common::minilm_folder(), "the all-MiniLM-L6-v2 package") else { return };
    let dir = models_dir(&minilm);
    let corrupt = corrupt_copy(dir.path());
    let server = Server::start(&["--models-dir", dir.path().to_str().unwrap(), "--api-key", "k"], &[]);
    let auth: &[(&str, &str)] = &[("authorization", "Bearer k")];

    // Eight first requests at once: one load, eight answers.
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8).map(|_| s.spawn(|| ask(&server, auth, "gte", json!({})))).collect();
        for h in handles {
            let r = h.join().unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
        }
    });
    assert_eq!(card(&server, auth, "gte")["loads"], 1);

    // A model whose load fails answers with the failure, and the others are served meanwhile.
    let r = ask(&server, auth, "corrupt", json!({}));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(state(&server, auth, "corrupt"), "failed");
    assert_eq!(ask(&server, auth, "minilm", json!({})).status, 200);
    let again = ask(&server, auth, "corrupt", json!({}));
    assert_eq!(again.status, 503);
    assert_eq!(card(&server, auth, "corrupt")["loads"], 0);
    // Its files fixed, the next request loads it.
    std::fs::copy(bulkhead_testkit::fixture("arch/gte/model.safetensors"), corrupt.join("model.safetensors")).unwrap();
    let r = ask(&server, auth, "corrupt", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);

    // Load and unload explicitly, behind the API key.
    assert_eq!(server.request("POST", "/v1/models/reranker/load", &[], None).status, 401);
    let r = server.request("POST", "/v1/models/reranker/load", auth, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "loaded");
    let pids = worker_pids(&server, auth, "reranker");
    let r = server.request("POST", "/v1/models/reranker/unload", auth, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "available");
    wait_gone(&pids);
    assert_eq!(server.request("POST", "/v1/models/nope/load", auth, None).status, 404);
}

#[test]
fn a_memory_budget_that_fits_two_holds_and_one_smaller_than_any_model_is_refused() {
    let Some(minilm) = need(common::minilm_folder(), "the all-MiniLM-L6-v2 package") else { return };
    let dir = models_dir(&minilm);
    let d = dir.path().to_str().unwrap();
    let none: &[(&str, &str)] = &[];

    // A budget below any model is refused at start, with the sizes (a folder of MiniLM alone: its weights
    // take 87 MB).
    let alone = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&minilm, alone.path().join("minilm")).unwrap();
    let a = alone.path().to_str().unwrap();
    let out = common::bulkhead(&["serve", "--port", "0", "--models-dir", a, "--memory-budget-mb", "8"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
    let err = common::stderr(&out);
    assert!(err.contains("--memory-budget-mb 8") && err.contains("minilm ~"), "{err}");

    // Each model's resident memory, measured on a server without limits.
    let sizes: Vec<(String, u64)> = {
        let server = Server::start(&["--models-dir", d, "--keep-alive", "-1"], &[]);
        ["minilm", "gte", "reranker"]
            .iter()
            .map(|n| {
                assert_eq!(server.request("POST", &format!("/v1/models/{n}/load"), none, None).status, 200);
                assert_eq!(ask(&server, none, n, json!({})).status, 200);
                (n.to_string(), card(&server, none, n)["resident_bytes"].as_u64().unwrap())
            })
            .collect()
    };
    let total: u64 = sizes.iter().map(|(_, b)| b).sum();
    let smallest = sizes.iter().map(|(_, b)| *b).min().unwrap();
    // Any two fit (the two largest take total - smallest), three do not.
    let budget_mb = (total - smallest / 2) >> 20;
    let server =
        Server::start(&["--models-dir", d, "--keep-alive", "-1", "--memory-budget-mb", &budget_mb.to_string()], &[]);
    for round in 0..2 {
        for (name, _) in &sizes {
            let r = ask(&server, none, name, json!({}));
            assert_eq!(r.status, 200, "round {round}, {name}: {}", r.body);
            let listed = models(&server, none);
            let used: u64 = listed
                .iter()
                .filter(|m| m["state"] == "loaded")
                .map(|m| m["resident_bytes"].as_u64().unwrap_or(0))
                .sum();
            assert!(used <= budget_mb << 20, "{} MB loaded over a budget of {budget_mb} MB: {listed:?}", used >> 20);
        }
    }
    let evictions: u64 = models(&server, none).iter().map(|m| m["evictions"].as_u64().unwrap()).sum();
    assert!(evictions >= 3, "sizes {sizes:?}, budget {budget_mb} MB, {evictions} evictions");
}

#[test]
fn the_models_of_the_hub_cache_are_available_by_hub_id() {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--acme--tiny-gte");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("snapshots")).unwrap();
    std::fs::write(repo.join("refs").join("main"), "0123abcd").unwrap();
    std::os::unix::fs::symlink(bulkhead_testkit::fixture("arch/gte"), repo.join("snapshots").join("0123abcd")).unwrap();
    std::fs::create_dir_all(cache.path().join("models--acme--half-downloaded")).unwrap();
    let env = [("HF_HUB_CACHE", cache.path().to_str().unwrap()), ("HF_HUB_OFFLINE", "1")];
    let server = Server::start(&["--from-hub-cache"], &env);
    let none: &[(&str, &str)] = &[];
    assert_eq!(state(&server, none, "acme/tiny-gte"), "available");
    let half = card(&server, none, "acme/half-downloaded");
    assert_eq!(half["state"], "failed");
    assert!(half["error"].as_str().unwrap().contains("bulkhead pull"), "{half}");
    let r = ask(&server, none, "acme/tiny-gte", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["model"], "acme/tiny-gte");
    assert_eq!(state(&server, none, "acme/tiny-gte"), "loaded");
}
