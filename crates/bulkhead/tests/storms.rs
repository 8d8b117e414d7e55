//! Supervision under storms, with real worker processes of the real binary, the real default model and real signals
//! from outside: who ended a worker and what that counts toward, a stopped worker replaced, replicas serving while
//! one restarts, the floor that is never quarantined, an OOM kill in a memory cgroup, and the worker client.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bulkhead_core::{Row, Unit};
use bulkhead_supervisor::history::{model_digest, HistoryKey};
use bulkhead_supervisor::{
    Answer, ClientError, ExitCause, History, Payload, RunError, Supervisor, SupervisorConfig, UnitState, WorkerClient,
    WorkerCommand, WorkerSpec,
};
use common::cosine;
use common::supervise::{assert_all_answered, chain, config, drive, engines, setup, unit_view, Outcome, Setup};

/// Token rows without a prompt.
fn tokens(rows: &[Vec<i64>]) -> Payload {
    Payload::Rows(rows.iter().cloned().map(Row::tokens).collect())
}

/// Drives checked requests in rounds until `done` is set (at least one round).
async fn drive_until(sup: &Arc<Supervisor>, s: &Setup, done: &AtomicBool) -> Outcome {
    let mut total = Outcome::default();
    loop {
        let o = drive(sup, s, 200, 16).await;
        total.ok += o.ok;
        total.wrong.extend(o.wrong);
        total.failed.extend(o.failed);
        if done.load(Ordering::SeqCst) {
            return total;
        }
    }
}

/// The pid of a serving worker of `unit`.
fn serving_pid(sup: &Supervisor, unit: &str) -> Option<u32> {
    let u = unit_view(sup, unit);
    u.workers.iter().find(|w| w.state == bulkhead_supervisor::WorkerState::Serving).and_then(|w| w.pid)
}

/// Sends `sig` to the serving worker once it has answered `after` more predictions, and waits for another worker
/// to serve.
async fn hit(sup: &Supervisor, sig: i32, after: u64) {
    let start = unit_view(sup, "ort:cpu").predictions;
    while unit_view(sup, "ort:cpu").predictions < start + after {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid = serving_pid(sup, "ort:cpu").expect("a serving worker");
    // SAFETY: signalling a worker process of the supervisor this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
    while serving_pid(sup, "ort:cpu").is_none_or(|p| p == pid) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_from_outside_are_recorded_and_not_held_against_the_unit() {
    let Some(s) = setup() else { return };
    let sup = Arc::new(Supervisor::start(s.model.clone(), &chain("ort:cpu,candle:cpu"), engines(), config("[]")));
    sup.wait_ready().await.unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let storm = {
        let (sup, done) = (sup.clone(), done.clone());
        tokio::spawn(async move {
            for sig in [libc::SIGSEGV, libc::SIGABRT, libc::SIGKILL, libc::SIGSTOP] {
                hit(&sup, sig, 100).await;
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let o = drive_until(&sup, &s, &done).await;
    storm.await.unwrap();
    assert!(o.failed.is_empty(), "{} failed, first: {:?}", o.failed.len(), o.failed.first());
    assert!(o.wrong.is_empty(), "{:?}", o.wrong.first());
    let u = unit_view(&sup, "ort:cpu");
    assert_eq!(u.state, UnitState::Serving, "four deaths from outside do not quarantine: {u:?}");
    assert_eq!(u.crash_level, 0.0, "{u:?}");
    assert_eq!(u.crashes_by_cause.get("external"), Some(&3), "SIGSEGV, SIGABRT and SIGKILL from outside: {u:?}");
    assert_eq!(u.crashes_by_cause.get("stopped"), Some(&1), "the stopped worker was replaced: {u:?}");
    assert_eq!((u.crashes_by_exit.get("SIGSEGV"), u.crashes_by_exit.get("SIGABRT")), (Some(&1), Some(&1)), "{u:?}");
    assert!(u.last_exit.as_deref().unwrap_or("").contains("stopped"), "{u:?}");
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_serve_while_one_restarts() {
    let Some(s) = setup() else { return };
    let cfg = SupervisorConfig { workers: 2, worker_threads: Some(1), ..config("[]") };
    let sup = Arc::new(Supervisor::start(s.model.clone(), &chain("ort:cpu"), engines(), cfg));
    sup.wait_ready().await.unwrap();
    let killer = {
        let sup = sup.clone();
        tokio::spawn(async move {
            while unit_view(&sup, "ort:cpu").predictions < 300 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let u = unit_view(&sup, "ort:cpu");
            let served: Vec<u64> = u.workers.iter().map(|w| w.served).collect();
            let pid = u.workers[0].pid.expect("a worker process");
            // SAFETY: signalling a worker process of the supervisor this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            served
        })
    };
    let o = drive(&sup, &s, 1500, 16).await;
    let served = killer.await.unwrap();
    assert_all_answered(&o, 1500);
    assert_eq!(served.len(), 2, "two warm workers");
    assert!(served.iter().all(|&n| n > 20), "least-loaded dispatch uses both: {served:?}");
    let u = unit_view(&sup, "ort:cpu");
    assert_eq!((u.restarts, u.crashes_by_cause.get("external")), (1, Some(&1)), "{u:?}");
    assert_eq!(sup.units().workers, 2);
    sup.shutdown().await;
}

/// Every worker of the only unit crashes on its fourth prediction: the last unit is never quarantined, and every
/// request is answered (none is poison: the crashes follow the worker's age, not the request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_every_fourth_prediction_on_the_floor_answers_every_request() {
    let Some(s) = setup() else { return };
    let rules = r#"[{"unit": "ort:cpu", "kind": "segv", "after": 3}]"#;
    let cfg = SupervisorConfig { restart_backoff: Duration::from_millis(10), ..config(rules) };
    let sup = Arc::new(Supervisor::start(s.model.clone(), &chain("ort:cpu"), engines(), cfg));
    sup.wait_ready().await.unwrap();
    let o = drive(&sup, &s, 40, 4).await;
    assert_all_answered(&o, 40);
    let u = unit_view(&sup, "ort:cpu");
    assert!(u.crashes >= 8, "{u:?}");
    assert_ne!(u.state, UnitState::Quarantined, "{u:?}");
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persisted_quarantine_of_every_unit_starts_on_the_floor() {
    let Some(s) = setup() else { return };
    let state = tempfile::tempdir().unwrap();
    let weights = s.model.safetensors.clone().or(s.model.onnx.clone()).unwrap();
    let mut history = History::load(state.path());
    for unit in [Unit::ORT_CPU, Unit::CANDLE_CPU] {
        let key =
            HistoryKey { digest: model_digest(&weights), unit: unit.to_string(), runtime: engines().runtime(&unit) };
        history.entry(&key, &s.model.name).quarantined_until = Some(bulkhead_supervisor::history::unix_now() + 3600.0);
    }
    history.save();
    let cfg = SupervisorConfig { state_dir: Some(state.path().to_path_buf()), ..config("[]") };
    let sup = Arc::new(Supervisor::start(s.model.clone(), &chain("ort:cpu,candle:cpu"), engines(), cfg));
    assert_eq!(sup.wait_ready().await.unwrap().to_string(), "candle:cpu", "the server starts, on the floor");
    let floor = unit_view(&sup, "candle:cpu");
    assert!(floor.floor, "{floor:?}");
    assert!(floor.reason.as_deref().unwrap_or("").contains("serving on the floor"), "{floor:?}");
    assert_eq!(unit_view(&sup, "ort:cpu").state, UnitState::Quarantined);
    let o = drive(&sup, &s, 20, 2).await;
    assert_all_answered(&o, 20);
    sup.shutdown().await;
}

/// A child memory cgroup (v1) that this process may create, or `None` (not root, no memory controller).
fn memory_cgroup(limit: u64) -> Option<std::path::PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| {
        let mut p = l.splitn(3, ':');
        let (_, controllers, path) = (p.next()?, p.next()?, p.next()?);
        controllers.split(',').any(|c| c == "memory").then(|| path.trim_start_matches('/').to_string())
    })?;
    let dir =
        std::path::Path::new("/sys/fs/cgroup/memory").join(path).join(format!("bulkhead-oom-{}", std::process::id()));
    std::fs::create_dir(&dir).ok()?;
    let ok = std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string()).is_ok();
    let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), limit.to_string());
    if !ok {
        let _ = std::fs::remove_dir(&dir);
        return None;
    }
    Some(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_kill_is_pressure_not_a_broken_unit() {
    let Some(s) = setup() else { return };
    let Some(cg) = memory_cgroup(700 << 20) else {
        bulkhead_testkit::skip("no writable memory cgroup (v1) here; needs root and the memory controller");
        return;
    };
    // The worker moves itself into the cgroup before it starts (`sh` execs the real worker).
    let script = format!("echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"", cg.display());
    let command = WorkerCommand {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script, env!("CARGO_BIN_EXE_bulkhead").into(), "worker".into()],
    };
    let rules = r#"[{"unit": "ort:cpu", "kind": "leak", "mb": 64}]"#;
    let cfg = SupervisorConfig { worker_command: command, ..config(rules) };
    let sup = Arc::new(Supervisor::start(s.model.clone(), &chain("ort:cpu,candle:cpu"), engines(), cfg));
    sup.wait_ready().await.unwrap();
    let o = drive(&sup, &s, 60, 1).await;
    let u = unit_view(&sup, "ort:cpu");
    sup.shutdown().await;
    drop(sup);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = std::fs::remove_dir(&cg);
    assert_all_answered(&o, 60);
    assert!(u.crashes_by_cause.get("oom").is_some_and(|&n| n >= 1), "{u:?}");
    assert_eq!(u.crash_level, 0.0, "an OOM kill does not count toward a quarantine: {u:?}");
    assert_eq!(u.state, UnitState::Serving, "{u:?}");
    assert!(u.recycle_rss_limit_bytes.is_some(), "the recycle limit was learnt from the kill: {u:?}");
    assert!(u.recycles >= 1, "later workers are recycled before the kernel kills them: {u:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_client_runs_every_payload_and_reports_how_the_worker_ended() {
    let Some(s) = setup() else { return };
    let spec = WorkerSpec {
        command: WorkerCommand { program: env!("CARGO_BIN_EXE_bulkhead").into(), args: vec!["worker".into()] },
        model: s.model.clone(),
        unit: Unit::ORT_CPU,
        generation: 0,
        faults: vec![],
        threads: Some(1),
        warmup_iterations: 1,
        memory: None,
    };
    let (mut client, ready) = WorkerClient::start(&spec, Duration::from_secs(120)).await.unwrap();
    assert!(ready.timing.total_ms >= ready.timing.warmup_ms && !ready.warmup.is_empty());
    let t = Duration::from_secs(30);
    let ran = client.run(tokens(&s.rows[..2]), &[], t).await.unwrap();
    let Answer::Vectors(v) = ran.answer else { panic!("{:?}", ran.answer) };
    assert!(cosine(&v[1], &s.reference.embeddings[1]) >= 0.99999);
    let probe = client.run(Payload::Probe, &[], t).await.unwrap();
    assert!(matches!(probe.answer, Answer::Vectors(ref v) if v.len() == 1), "the worker's own warm-up row");
    let pairs = Payload::Rows(vec![Row::Pair { ids: vec![101, 102], type_ids: vec![0, 0] }]);
    match client.run(pairs, &[], t).await {
        Err(ClientError::Run(RunError::Unsupported(m))) => assert!(m.contains("embedding model"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A SIGSEGV from outside: the worker records its sender before it dies of it.
    let pid = client.pid().unwrap();
    // SAFETY: signalling the worker process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGSEGV) };
    match client.run(tokens(&s.rows[..1]), &[], t).await {
        Err(ClientError::Died { exit, .. }) => {
            assert_eq!(exit.signal.as_deref(), Some("SIGSEGV"), "{exit:?}");
            assert_eq!(exit.cause, ExitCause::External { sender: Some(std::process::id()) }, "{exit:?}");
        }
        other => panic!("{other:?}"),
    }
    let (client, _) = WorkerClient::start(&spec, Duration::from_secs(120)).await.unwrap();
    assert_eq!(client.shutdown().await.cause, ExitCause::Clean);
}
