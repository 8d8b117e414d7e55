//! The supervisor against real worker processes (`bulkhead worker`), real signals, real ONNX Runtime and candle,
//! and the real all-MiniLM-L6-v2 of the set-up: crashes, hangs, leaks, poison requests and quarantines must never
//! lose a request or return a wrong answer.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead_core::{Chain, EngineKind, ModelFiles, Platform};
use bulkhead_embed::{Engines, Tokenizer};
use bulkhead_supervisor::{
    faults, Isolation, Job, PredictError, Supervisor, SupervisorConfig, UnitState, WorkerCommand,
};
use common::{cosine, need, reference, Reference};

fn engines() -> Arc<Engines> {
    Arc::new(Engines::new(vec![
        (EngineKind::Ort, Box::new(bulkhead_ort::OrtEngine::default())),
        (EngineKind::Candle, Box::new(bulkhead_candle::CandleEngine)),
    ]))
}

fn config(faults_json: &str) -> SupervisorConfig {
    SupervisorConfig {
        worker_command: WorkerCommand { program: env!("CARGO_BIN_EXE_bulkhead").into(), args: vec!["worker".into()] },
        faults: faults::parse(faults_json).expect("valid rules"),
        restart_backoff: Duration::from_millis(50),
        ..SupervisorConfig::default()
    }
}

struct Setup {
    model: ModelFiles,
    tokenizer: Tokenizer,
    reference: Reference,
    rows: Vec<Vec<i64>>,
}

fn setup() -> Option<Setup> {
    let folder = need(common::minilm_folder(), "the all-MiniLM-L6-v2 package")?;
    let model = ModelFiles::open(&folder).unwrap();
    let tokenizer = Tokenizer::load(&model).unwrap();
    let reference = reference();
    let rows = tokenizer.encode(&reference.sentences).unwrap();
    Some(Setup { model, tokenizer, reference, rows })
}

fn chain(spec: &str) -> Chain {
    Chain::parse(spec, &Platform::detect()).unwrap()
}

#[derive(Debug, Default)]
struct Outcome {
    ok: usize,
    wrong: Vec<String>,
    failed: Vec<String>,
    units: std::collections::BTreeMap<String, usize>,
}

/// `total` single-sentence requests from `clients` concurrent clients; every answer is checked against the
/// reference embedding of its sentence.
async fn drive(sup: &Arc<Supervisor>, s: &Setup, total: usize, clients: usize) -> Outcome {
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(Outcome::default()));
    let mut tasks = vec![];
    for _ in 0..clients {
        let (sup, next, out) = (sup.clone(), next.clone(), out.clone());
        let rows = s.rows.clone();
        let texts = s.reference.sentences.clone();
        let want = s.reference.embeddings.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let k = i % rows.len();
                let r = sup.embed(vec![rows[k].clone()], vec![texts[k].clone()]).await;
                let mut o = out.lock().unwrap();
                match r {
                    Ok(a) => {
                        let c = cosine(&a.vectors[0], &want[k]);
                        if c >= 0.99999 {
                            o.ok += 1;
                        } else {
                            o.wrong.push(format!("request {i}: cosine {c} on {}", a.unit));
                        }
                        *o.units.entry(a.unit.to_string()).or_default() += 1;
                    }
                    Err(e) => o.failed.push(format!("request {i}: {e}")),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(out).unwrap().into_inner().unwrap()
}

fn unit_view(sup: &Supervisor, unit: &str) -> bulkhead_supervisor::UnitView {
    sup.units().units.into_iter().find(|u| u.unit == unit).unwrap()
}

fn assert_all_answered(o: &Outcome, total: usize) {
    assert!(o.failed.is_empty(), "{} failed, first: {:?}", o.failed.len(), o.failed.first());
    assert!(o.wrong.is_empty(), "{} wrong, first: {:?}", o.wrong.len(), o.wrong.first());
    assert_eq!(o.ok, total);
}

async fn crash_under_load(kind: &str, signal: &str) {
    let Some(s) = setup() else { return };
    let rules = format!(r#"[{{"unit": "ort:cpu", "kind": "{kind}", "after": 100, "generations": [0]}}]"#);
    let sup = Arc::new(Supervisor::start(s.model.clone(), &chain("ort:cpu"), engines(), config(&rules)));
    assert_eq!(sup.wait_ready().await.unwrap().to_string(), "ort:cpu");
    let o = drive(&sup, &s, 2000, 16).await;
    assert_all_answered(&o, 2000);
    let u = unit_view(&sup, "ort:cpu");
    assert_eq!(u.restarts, 1, "{u:?}");
    assert_eq!(u.crashes_by_exit.get(signal), Some(&1), "{u:?}");
    assert_eq!(u.state, UnitState::Serving);
    assert!(u.last_exit.as_deref().unwrap_or("").contains(signal.trim_start_matches("exit ")), "{u:?}");
    assert!(u.stderr_tail.as_deref().unwrap_or("").contains("fault injection"), "{u:?}");
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segv_under_load_loses_nothing() {
    crash_under_load("segv", "SIGSEGV").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_under_load_loses_nothing() {
    crash_under_load("abort", "SIGABRT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_under_load_loses_nothing() {
    crash_under_load("exit", "exit 70").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_kill_9_loses_nothing() {
    let Some(s) = setup() else { return };
    let sup = Arc::new(Supervisor::start(s.model.clone(), &chain("ort:cpu"), engines(), config("[]")));
    sup.wait_ready().await.unwrap();
    let killer = {
        let sup = sup.clone();
        tokio::spawn(async move {
            loop {
                let u = unit_view(&sup, "ort:cpu");
                if u.predictions >= 300 {
                    let pid = u.pid.expect("a serving worker has a pid");
                    let st = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
                    assert!(st.success());
                    return pid;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let o = drive(&sup, &s, 2000, 16).await;
    let killed = killer.await.unwrap();
    assert_all_answered(&o, 2000);
    let u = unit_view(&sup, "ort:cpu");
    assert_eq!(u.crashes_by_exit.get("SIGKILL"), Some(&1), "{u:?}");
    assert_eq!(u.restarts, 1);
    assert_ne!(u.pid, Some(killed));
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hang_is_caught_by_the_watchdog() {
    let Some(s) = setup() else { return };
    let rules = r#"[{"unit": "ort:cpu", "kind": "hang", "after": 50, "generations": [0]}]"#;
    let cfg = SupervisorConfig { timeout_floor: Duration::from_millis(1500), ..config(rules) };
    let sup = Arc::new(Supervisor::start(s.model.clone(), &chain("ort:cpu"), engines(), cfg));
    sup.wait_ready().await.unwrap();
    let t = Instant::now();
    let o = drive(&sup, &s, 300, 8).await;
    assert_all_answered(&o, 300);
    let u = unit_view(&sup, "ort:cpu");
    assert_eq!(u.crashes_by_exit.get("SIGKILL"), Some(&1), "{u:?}");
    assert!(u.last_exit.as_deref().unwrap().contains("watchdog"), "{u:?}");
    assert!(t.elapsed() < Duration::from_secs(60), "the hang was not cut short");
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_that_keeps_crashing_is_quarantined_and_remembered() {
    let Some(s) = setup() else { return };
    let state = tempfile::tempdir().unwrap();
    let rules = r#"[{"unit": "ort:cpu", "kind": "segv", "after": 5}]"#;
    let cfg = SupervisorConfig { state_dir: Some(state.path().to_path_buf()), ..config(rules) };
    let sup = Arc::new(Supervisor::start(s.model.clone(), &chain("ort:cpu,candle:cpu"), engines(), cfg.clone()));
    assert_eq!(sup.wait_ready().await.unwrap().to_string(), "ort:cpu");
    let o = drive(&sup, &s, 300, 8).await;
    assert_all_answered(&o, 300);
    let ort = unit_view(&sup, "ort:cpu");
    assert_eq!(ort.state, UnitState::Quarantined, "{ort:?}");
    assert_eq!(ort.crashes, 3, "{ort:?}");
    assert!(ort.reason.as_deref().unwrap().contains("quarantined"), "{ort:?}");
    assert!(o.units.get("candle:cpu").copied().unwrap_or(0) > 200, "{:?}", o.units);
    assert_eq!(sup.units().serving.as_deref(), Some("candle:cpu"));
    sup.shutdown().await;
    drop(sup);

    // A new supervisor (a restarted bulkhead) with the same state directory does not walk into the crash again.
    let sup = Arc::new(Supervisor::start(s.model.clone(), &chain("ort:cpu,candle:cpu"), engines(), cfg));
    assert_eq!(sup.wait_ready().await.unwrap().to_string(), "candle:cpu");
    let ort = unit_view(&sup, "ort:cpu");
    assert_eq!(ort.state, UnitState::Quarantined);
    assert_eq!(ort.generations, 0, "no worker was started on the quarantined unit");
    assert!(ort.reason.as_deref().unwrap().contains("crash history"), "{ort:?}");
    let o = drive(&sup, &s, 50, 4).await;
    assert_all_answered(&o, 50);
    sup.shutdown().await;

    // `bulkhead units` shows the history; --clear-history forgets it.
    let dir = state.path().to_str().unwrap();
    let out = common::bulkhead(&["units", "--json", "--state-dir", dir], &[]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rec = &v["crash_history"][0];
    assert_eq!((rec["unit"].as_str(), rec["quarantined"].as_bool()), (Some("ort:cpu"), Some(true)), "{v}");
    assert_eq!(rec["crashes"], 3);
    let out = common::bulkhead(&["units", "--state-dir", dir], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("QUARANTINED"));
    let out = common::bulkhead(&["units", "--json", "--clear-history", "--state-dir", dir], &[]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["crash_history"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaking_worker_is_recycled_without_a_failed_request() {
    let Some(s) = setup() else { return };
    let rules = r#"[{"unit": "ort:cpu", "kind": "leak", "mb": 8}]"#;
    let growth = 256u64 << 20;
    let cfg = SupervisorConfig { recycle_growth_bytes: Some(growth), ..config(rules) };
    let sup = Arc::new(Supervisor::start(s.model.clone(), &chain("ort:cpu"), engines(), cfg));
    sup.wait_ready().await.unwrap();
    let peak = Arc::new(AtomicUsize::new(0));
    let base = unit_view(&sup, "ort:cpu").resident_after_warmup_bytes;
    let sampler = {
        let (sup, peak) = (sup.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                let u = unit_view(&sup, "ort:cpu");
                peak.fetch_max(u.resident_bytes as usize, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let o = drive(&sup, &s, 2000, 16).await;
    sampler.abort();
    assert_all_answered(&o, 2000);
    let u = unit_view(&sup, "ort:cpu");
    assert!(u.recycles >= 1, "{u:?}");
    assert_eq!(u.crashes, 0, "{u:?}");
    let peak = peak.load(Ordering::Relaxed) as u64;
    // Bounded: past 1.5x the limit the old worker stops taking predictions until its replacement serves.
    assert!(peak < base + growth * 3 / 2 + (64 << 20), "peak {} MiB, base {} MiB", peak >> 20, base >> 20);
    eprintln!("leak: {} recycles, peak {} MiB (base {} MiB)", u.recycles, peak >> 20, base >> 20);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_request_fails_alone() {
    let Some(s) = setup() else { return };
    let rules = r#"[{"unit": "ort:cpu", "kind": "segv", "match": "POISON"}]"#;
    let sup = Arc::new(Supervisor::start(s.model.clone(), &chain("ort:cpu,candle:cpu"), engines(), config(rules)));
    sup.wait_ready().await.unwrap();
    let background = {
        let sup = sup.clone();
        let s2 = Setup {
            model: s.model.clone(),
            tokenizer: Tokenizer::load(&s.model).unwrap(),
            reference: reference(),
            rows: s.rows.clone(),
        };
        tokio::spawn(async move { drive(&sup, &s2, 400, 8).await })
    };
    // A batch of four requests, one of them poison, sent beside the background load.
    let poison_text = "this sentence is POISON for the runtime".to_string();
    let poison_rows = s.tokenizer.encode(std::slice::from_ref(&poison_text)).unwrap();
    let mut jobs: Vec<Job> = (0..3)
        .map(|k| Job { rows: vec![s.rows[k].clone()], texts: vec![s.reference.sentences[k].clone()], ..Job::default() })
        .collect();
    jobs.insert(1, Job { rows: poison_rows, texts: vec![poison_text], ..Job::default() });
    let results = sup.predict(jobs).await;
    let o = background.await.unwrap();
    assert_all_answered(&o, 400);
    match &results[1] {
        Err(PredictError::Poison(msg)) => {
            assert!(msg.contains("crashed 2 workers") && msg.contains("SIGSEGV"), "{msg}");
        }
        other => panic!("the poison request should fail as poison, got {other:?}"),
    }
    for (i, k) in [(0usize, 0usize), (2, 1), (3, 2)] {
        let a = results[i].as_ref().unwrap_or_else(|e| panic!("request {i} beside the poison one failed: {e}"));
        assert!(cosine(&a.vectors[0], &s.reference.embeddings[k]) >= 0.99999);
    }
    let u = unit_view(&sup, "ort:cpu");
    assert_eq!(u.crashes, 2, "exactly two workers died for the poison request: {u:?}");
    assert_eq!(u.state, UnitState::Serving, "two crashes do not quarantine: {u:?}");
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_failures_fall_through_the_chain() {
    let Some(s) = setup() else { return };
    // ort:cuda cannot run here; ort:cpu crashes while loading on every generation; candle:cpu serves.
    let rules = r#"[{"unit": "ort:cpu", "kind": "load_crash"}]"#;
    let sup =
        Arc::new(Supervisor::start(s.model.clone(), &chain("ort:cuda,ort:cpu,candle:cpu"), engines(), config(rules)));
    assert_eq!(sup.wait_ready().await.unwrap().to_string(), "candle:cpu");
    let v = sup.units();
    assert_eq!(v.units[0].state, UnitState::Unavailable);
    assert!(v.units[0].reason.as_deref().unwrap().contains("CUDA"), "{:?}", v.units[0]);
    assert_eq!(v.units[1].state, UnitState::Quarantined, "{:?}", v.units[1]);
    assert_eq!(v.units[1].crashes_by_exit.get("SIGSEGV"), Some(&3), "{:?}", v.units[1]);
    let o = drive(&sup, &s, 40, 4).await;
    assert_all_answered(&o, 40);
    sup.shutdown().await;

    // Nothing can serve: a clear error naming every unit, no hang.
    let rules = r#"[{"unit": "ort:cpu", "kind": "load_fail"}]"#;
    let sup = Supervisor::start(s.model.clone(), &chain("ort:cuda,ort:cpu"), engines(), config(rules));
    let err = sup.wait_ready().await.unwrap_err().to_string();
    assert!(err.contains("ort:cuda") && err.contains("ort:cpu: fault injection: load_fail"), "{err}");
    let r = sup.embed(vec![s.rows[0].clone()], vec![]).await;
    assert!(matches!(r, Err(PredictError::Unavailable(_))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_isolation_gives_the_same_answers() {
    let Some(s) = setup() else { return };
    let cfg = SupervisorConfig { isolation: Isolation::None, ..config("[]") };
    let sup = Arc::new(Supervisor::start(s.model.clone(), &chain("ort:cpu"), engines(), cfg));
    sup.wait_ready().await.unwrap();
    let o = drive(&sup, &s, 100, 4).await;
    assert_all_answered(&o, 100);
    assert_eq!(sup.units().isolation, Isolation::None);
    sup.shutdown().await;
}
