//! Replicas (several warm workers on the serving unit), least-loaded dispatch, and the queue deadline.

use super::*;

#[test]
fn n_warm_workers_share_the_load_and_the_others_serve_while_one_restarts() {
    let cfg = SupervisorConfig { workers: 3, max_inflight: 2, worker_threads: Some(1), ..cfg() };
    let mut sim = Sim::new(&[ORT], cfg);
    assert_eq!(sim.spawned(), 3, "three workers start together");
    let ws = sim.alive();
    for &w in &ws {
        sim.make_ready(w);
    }
    // Six requests: two each (least loaded first).
    let ids = sim.submit(6);
    // One submission of six single-row jobs is one batch: it goes to one worker.
    assert_eq!(ws.iter().map(|w| sim.workers[w].inbox.len()).sum::<usize>(), 1);
    for &w in &ws {
        sim.drain(w);
    }
    assert!(sim.all_ok(&ids));
    let mut ids = vec![];
    for _ in 0..6 {
        ids.extend(sim.submit(1));
    }
    let loads: Vec<usize> = ws.iter().map(|w| sim.workers[w].inbox.len()).collect();
    assert_eq!(loads, vec![2, 2, 2], "least loaded: {loads:?}");
    // One dies: its two requests go to the others at once, which keep serving while it restarts.
    sim.die(ws[0], ExitCause::Crash);
    assert_eq!(sim.spawned(), 3, "the restart waits for the backoff");
    sim.drain(ws[1]);
    sim.drain(ws[2]);
    assert!(sim.all_ok(&ids), "{:?}", sim.answers);
    assert_eq!(sim.state(ORT), UnitState::Serving);
    sim.advance(100);
    assert_eq!(sim.spawned(), 4, "back to three warm workers");
    let v = sim.unit(ORT);
    assert_eq!(v.workers.len(), 3);
    assert_eq!(sim.view().workers, 3);
}

#[test]
fn replicas_follow_the_chain_and_a_quarantine_moves_all_of_them() {
    let cfg = SupervisorConfig { workers: 2, restart_backoff: Duration::from_millis(25), ..cfg() };
    let mut sim = Sim::new(&[ORT, CANDLE], cfg);
    for _ in 0..3 {
        let w = sim.alive().into_iter().find(|w| sim.workers[w].unit == Some(ORT)).unwrap();
        sim.die(w, ExitCause::Crash);
        sim.advance(1_000);
    }
    sim.reap();
    assert_eq!(sim.state(ORT), UnitState::Quarantined);
    let candle: Vec<_> = sim.alive().into_iter().filter(|w| sim.workers[w].unit == Some(CANDLE)).collect();
    assert_eq!(candle.len(), 2);
    assert!(sim.alive().iter().all(|w| sim.workers[w].unit == Some(CANDLE)), "the quarantined unit's workers are gone");
}

#[test]
fn a_request_waits_for_the_floor_to_restart_until_its_queue_deadline() {
    let cfg = SupervisorConfig { queue_timeout: Duration::from_secs(30), ..cfg() };
    let mut sim = Sim::new(&[ORT], cfg);
    let w = sim.ready_newest();
    sim.die(w, ExitCause::Crash);
    let early = sim.submit(1)[0];
    // The floor restarts (crashing while loading, again and again); requests wait.
    for _ in 0..5 {
        sim.advance(5_000);
        let w = sim.newest();
        sim.die(w, ExitCause::Crash);
    }
    assert!(sim.answers.is_empty(), "still waiting at 25 s");
    let late = sim.submit(1)[0];
    sim.advance(6_000);
    match sim.error(early) {
        Some(PredictError::Unavailable(m)) => assert!(m.contains("within 30 s"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(!sim.answers.contains_key(&late), "a later request keeps its own deadline");
    let w = sim.ready_newest();
    sim.drain(w);
    assert!(sim.ok(late));
    assert_eq!(sim.state(ORT), UnitState::Serving, "the floor was never quarantined");
}

#[test]
fn a_suspect_request_runs_alone_first_on_a_fresh_worker() {
    let mut sim = Sim::new(&[ORT, CANDLE], cfg());
    let w = sim.ready_newest();
    let ids = sim.submit_texts(&["a", "b"]);
    sim.die(w, ExitCause::Crash);
    sim.advance(100);
    let w = sim.ready_newest();
    // "a" runs first, "b" second (not its first prediction): "b" dies with it.
    sim.answer_next(w);
    sim.die(w, ExitCause::Crash);
    sim.advance(1_000);
    let w = sim.ready_newest();
    assert_eq!(sim.workers[&w].inbox.front().map(|(_, _, t)| t.clone()), Some(vec!["b".to_string()]));
    assert_eq!(sim.workers[&w].inbox.len(), 1, "alone in its clean room");
    sim.drain(w);
    assert!(sim.all_ok(&ids), "an innocent request passes its clean room");
}

#[test]
fn when_no_fresh_worker_is_coming_one_is_made_for_a_suspect() {
    use super::super::work::{Pending, Strike, Work};
    let mut sim = Sim::new(&[ORT], cfg());
    let old = sim.ready_newest();
    let first = sim.submit(1);
    sim.drain(old);
    assert!(sim.all_ok(&first));
    // A request already struck twice by crashes that were not clean rooms (its workers are long gone).
    let strike = |crash| Strike { unit: 0, label: "ort:cpu#9 signal SIGSEGV".into(), crash, clean: false, hang: false };
    let id = RequestId(999);
    let job = Job::tokens(vec![vec![1; 16]], vec!["suspect".into()]);
    let pending = Pending { id, job, enqueued: sim.now().at, strikes: vec![strike(7), strike(8)], retries: 2 };
    sim.core.queue.push_back(Work { jobs: vec![pending], probe: false });
    sim.tick();
    assert!(sim.workers[&old].inbox.is_empty(), "a used worker is no clean room");
    assert_eq!(sim.spawned(), 2, "the serving worker is replaced to make one");
    assert_eq!(sim.unit(ORT).recycles, 1);
    let other = sim.submit(1);
    assert_eq!(sim.workers[&old].inbox.len(), 1, "the old worker serves others meanwhile");
    let fresh = sim.newest();
    sim.make_ready(fresh);
    assert_eq!(sim.workers[&fresh].inbox.len(), 1);
    sim.drain(fresh);
    sim.drain(old);
    assert!(sim.ok(id) && sim.all_ok(&other));
}

/// Submits one request of one row of `tokens` tokens.
fn submit_row(sim: &mut Sim, tokens: usize) -> RequestId {
    sim.submit_job(Job::tokens(vec![vec![1; tokens]], vec![]))
}

/// The row widths each worker holds, oldest first.
fn inboxes(sim: &Sim, ws: &[WorkerId]) -> Vec<Vec<usize>> {
    ws.iter()
        .map(|w| {
            sim.workers[w]
                .inbox
                .iter()
                .map(|(_, p, _)| match p {
                    Payload::Rows(rows) => rows.iter().map(|r| r.len()).max().unwrap_or(0),
                    _ => 0,
                })
                .collect()
        })
        .collect()
}

#[test]
fn while_short_requests_arrive_long_ones_leave_a_worker_free_for_them() {
    let cfg = SupervisorConfig { workers: 2, max_inflight: 2, worker_threads: Some(1), ..cfg() };
    let mut sim = Sim::new(&[ORT], cfg);
    let ws = sim.alive();
    ws.iter().for_each(|&w| sim.make_ready(w));
    let short = submit_row(&mut sim, 12);
    sim.drain(ws[0]);
    sim.drain(ws[1]);
    assert!(sim.ok(short));
    // Four long requests arrive one by one: they queue for one worker; the other stays free of long work.
    let long: Vec<_> = (0..4).map(|_| submit_row(&mut sim, 256)).collect();
    let held = inboxes(&sim, &ws);
    assert_eq!(held.iter().filter(|h| h.is_empty()).count(), 1, "one worker is kept for short work: {held:?}");
    assert_eq!(held.iter().map(Vec::len).sum::<usize>(), 2, "the other takes two (pipelined): {held:?}");
    // A short request passes the long ones still queued and goes to the free worker at once.
    let short = submit_row(&mut sim, 9);
    let free = ws.iter().position(|w| !sim.workers[w].inbox.iter().any(|(_, p, _)| p.shape().1 > 128)).unwrap();
    assert_eq!(inboxes(&sim, &ws)[free], vec![9], "{:?}", inboxes(&sim, &ws));
    sim.answer_next(ws[free]);
    assert!(sim.ok(short));
    // Every long request is answered in turn.
    for _ in 0..8 {
        ws.iter().for_each(|&w| sim.drain(w));
    }
    assert!(sim.all_ok(&long), "{:?}", sim.answers);
}

#[test]
fn without_short_traffic_long_requests_use_every_worker() {
    let cfg = SupervisorConfig { workers: 2, max_inflight: 2, worker_threads: Some(1), ..cfg() };
    let mut sim = Sim::new(&[ORT], cfg);
    let ws = sim.alive();
    ws.iter().for_each(|&w| sim.make_ready(w));
    let long: Vec<_> = (0..4).map(|_| submit_row(&mut sim, 256)).collect();
    assert_eq!(inboxes(&sim, &ws), vec![vec![256, 256], vec![256, 256]], "no short work: both workers run long work");
    ws.iter().for_each(|&w| sim.drain(w));
    assert!(sim.all_ok(&long));
    // Short work seen, then none for longer than the window: the reservation ends.
    let short = submit_row(&mut sim, 12);
    ws.iter().for_each(|&w| sim.drain(w));
    assert!(sim.ok(short));
    let long: Vec<_> = (0..2).map(|_| submit_row(&mut sim, 256)).collect();
    assert_eq!(
        inboxes(&sim, &ws).iter().filter(|h| h.is_empty()).count(),
        1,
        "within the window: {:?}",
        inboxes(&sim, &ws)
    );
    ws.iter().for_each(|&w| sim.drain(w));
    sim.advance(crate::supervisor::config::SHORT_LANE_WINDOW.as_millis() as u64 + 25);
    let later: Vec<_> = (0..2).map(|_| submit_row(&mut sim, 256)).collect();
    assert_eq!(inboxes(&sim, &ws), vec![vec![256], vec![256]], "after the window: {:?}", inboxes(&sim, &ws));
    ws.iter().for_each(|&w| sim.drain(w));
    assert!(sim.all_ok(&long) && sim.all_ok(&later));
}

#[test]
fn with_one_worker_or_no_limit_long_requests_are_not_held_back() {
    for (workers, limit) in [(1, Some(128)), (2, None)] {
        let cfg = SupervisorConfig { workers, max_inflight: 2, long_row_tokens: limit, ..cfg() };
        let mut sim = Sim::new(&[ORT], cfg);
        let ws = sim.alive();
        ws.iter().for_each(|&w| sim.make_ready(w));
        let short = submit_row(&mut sim, 12);
        ws.iter().for_each(|&w| sim.drain(w));
        let long: Vec<_> = (0..2 * workers).map(|_| submit_row(&mut sim, 256)).collect();
        let held: usize = inboxes(&sim, &ws).iter().map(Vec::len).sum();
        assert_eq!(held, 2 * workers, "{workers} workers, limit {limit:?}: {:?}", inboxes(&sim, &ws));
        ws.iter().for_each(|&w| sim.drain(w));
        assert!(sim.ok(short) && sim.all_ok(&long));
    }
}

#[test]
fn when_short_requests_start_while_every_worker_runs_long_work_one_worker_drains_of_it() {
    let cfg = SupervisorConfig { workers: 2, max_inflight: 2, worker_threads: Some(1), ..cfg() };
    let mut sim = Sim::new(&[ORT], cfg);
    let ws = sim.alive();
    ws.iter().for_each(|&w| sim.make_ready(w));
    // No short traffic yet: long work fills both workers.
    let mut long: Vec<_> = (0..4).map(|_| submit_row(&mut sim, 256)).collect();
    assert_eq!(inboxes(&sim, &ws), vec![vec![256, 256], vec![256, 256]]);
    // Short requests start; long ones keep coming, one per answer, as clients sending them back to back do.
    let mut short = vec![];
    for round in 0..6 {
        let w = ws[round % 2];
        if sim.answer_next(w) {
            long.push(submit_row(&mut sim, 256));
        }
        short.push(submit_row(&mut sim, 9));
    }
    let held = inboxes(&sim, &ws);
    assert!(
        held.iter().any(|h| h.iter().all(|&n| n <= 128)),
        "one worker has drained of long work and serves the short requests: {held:?}"
    );
    for _ in 0..12 {
        ws.iter().for_each(|&w| sim.drain(w));
    }
    assert!(sim.all_ok(&long) && sim.all_ok(&short), "{:?}", sim.answers);
}
