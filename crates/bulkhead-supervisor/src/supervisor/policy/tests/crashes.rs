//! Causes of death, the crash bucket and its forgiveness, restart backoff, quarantine, the floor, re-probes and
//! start-up failures.

use super::super::exit::consequence;
use super::*;

fn watchdog() -> ExitCause {
    ExitCause::Killed { reason: KillReason::Watchdog("watchdog".into()) }
}

/// cause -> (fills the bucket, strikes the request, restart waits): the table of the policy.
#[test]
fn what_each_cause_of_death_counts_toward() {
    let table = [
        (ExitCause::Crash, (true, true, true)),
        (watchdog(), (true, true, true)),
        (ExitCause::Killed { reason: KillReason::LoadTimeout("load".into()) }, (true, true, true)),
        (ExitCause::Killed { reason: KillReason::Protocol("junk".into()) }, (true, true, true)),
        (ExitCause::Killed { reason: KillReason::Stopped("SIGSTOP".into()) }, (false, false, false)),
        (ExitCause::External { sender: Some(42) }, (false, false, false)),
        (ExitCause::External { sender: None }, (false, false, false)),
        (ExitCause::OutOfMemory, (false, true, true)),
    ];
    for (cause, (counts, strike, backoff)) in table {
        let c = consequence(&cause);
        assert_eq!((c.counts, c.strike, c.backoff), (counts, strike, backoff), "{cause:?}");
        // The same, seen from the outside: one worker dies with this cause while running a request.
        let mut sim = Sim::new(&[ORT, CANDLE], cfg());
        let w = sim.ready_newest();
        let id = sim.submit(1)[0];
        sim.die(w, cause.clone());
        let u = sim.unit(ORT);
        assert_eq!(u.crash_level, if counts { 1.0 } else { 0.0 }, "{cause:?}");
        assert_eq!(u.crashes_by_cause.get(cause.label()), Some(&1), "{cause:?}");
        assert_eq!(sim.spawned(), if backoff { 1 } else { 2 }, "{cause:?}: a restart at once or after the backoff");
        sim.advance(100);
        let w2 = sim.ready_newest();
        sim.drain(w2);
        assert!(sim.ok(id), "{cause:?}: the request is retried");
    }
}

/// Crash times (s) -> quarantined? Three crashes fill the bucket; one is forgiven per 5 minutes.
#[test]
fn the_crash_bucket_forgives_one_crash_per_five_minutes() {
    let table: [(&[u64], bool); 4] =
        [(&[0, 10, 20], true), (&[0, 10], false), (&[0, 301, 602], false), (&[0, 200, 301, 310], true)];
    for (times, quarantined) in table {
        let mut sim = Sim::new(&[ORT, CANDLE], cfg());
        let mut clock = 0;
        for &t in times {
            sim.advance(t.saturating_sub(clock) * 1000);
            clock = t;
            let w = match sim.alive().into_iter().find(|w| sim.workers[w].unit == Some(ORT)) {
                Some(w) => w,
                None => panic!("{times:?}: no ORT worker at {t}"),
            };
            if !sim.workers[&w].ready {
                sim.make_ready(w);
            }
            sim.die(w, ExitCause::Crash);
            sim.advance(1_000);
            clock = clock.max(t) + 1;
        }
        assert_eq!(sim.state(ORT) == UnitState::Quarantined, quarantined, "{times:?}: {:?}", sim.unit(ORT));
        if quarantined {
            assert_eq!(sim.view().units[1].state, UnitState::Loading, "the next unit starts");
            assert!(sim.saves > 0, "the quarantine is persisted");
        }
    }
}

/// Consecutive crashes -> restart delays: 100 ms doubling, capped at 5 s.
#[test]
fn restarts_back_off_exponentially_up_to_five_seconds() {
    let mut sim = Sim::new(&[ORT], cfg());
    let want = [100u64, 200, 400, 800, 1600, 3200, 5000, 5000, 5000];
    for (i, &delay) in want.iter().enumerate() {
        let w = sim.newest();
        sim.die(w, ExitCause::Crash);
        let before = sim.spawned();
        sim.advance(delay - 25);
        assert_eq!(sim.spawned(), before, "crash {i}: no restart before {delay} ms");
        sim.advance(25);
        assert_eq!(sim.spawned(), before + 1, "crash {i}: a restart at {delay} ms");
    }
    assert_eq!(sim.state(ORT), UnitState::Loading, "a single unit is the floor: never quarantined");
    assert!(sim.unit(ORT).floor || sim.view().units.len() == 1);
    // An answer resets the backoff.
    let w = sim.ready_newest();
    sim.submit(1);
    sim.drain(w);
    sim.die(w, ExitCause::Crash);
    let before = sim.spawned();
    sim.advance(100);
    assert_eq!(sim.spawned(), before + 1);
}

/// (chain, units that crash) -> which unit ends up serving and which are quarantined.
#[test]
fn a_quarantine_takes_a_unit_out_only_while_another_can_serve() {
    type Row = (&'static [Unit], &'static [Unit], Unit, &'static [Unit]);
    let table: [Row; 4] = [
        (&[ORT, CANDLE], &[ORT], CANDLE, &[ORT]),
        (&[ORT, CANDLE], &[ORT, CANDLE], CANDLE, &[ORT]),
        (&[ORT], &[ORT], ORT, &[]),
        (&[CUDA, ORT, CANDLE], &[CUDA, ORT, CANDLE], CANDLE, &[CUDA, ORT]),
    ];
    for (chain, crashing, serving, quarantined) in table {
        let mut sim = Sim::new(chain, SupervisorConfig { restart_backoff: Duration::from_millis(25), ..cfg() });
        for _ in 0..40 {
            let w = sim.newest();
            let unit = sim.workers[&w].unit.unwrap();
            if crashing.contains(&unit) {
                sim.die(w, ExitCause::Crash);
                sim.advance(6_000);
            } else {
                break;
            }
        }
        let w = sim.ready_newest();
        let id = sim.submit(1)[0];
        sim.drain(w);
        assert_eq!(sim.answered_by(id), Some(serving), "{chain:?} crashing {crashing:?}");
        for &u in chain {
            assert_eq!(sim.state(u) == UnitState::Quarantined, quarantined.contains(&u), "{chain:?}: {u}");
        }
        assert!(sim.unit(serving).floor || chain.len() == 1 || !crashing.contains(&serving));
    }
}

#[test]
fn when_every_unit_is_quarantined_the_server_starts_on_the_floor() {
    let mut history = CrashBook::default();
    for unit in [ORT, CANDLE] {
        let key = super::super::HistoryKey {
            digest: "digest".into(),
            unit: unit.to_string(),
            runtime: format!("{:?} 1.0", unit.engine),
        };
        history.entry(&key, "m").quarantined_until = Some(1_800_000_000.0 + 3600.0);
    }
    let mut sim = Sim::with_history(&[ORT, CANDLE], cfg(), history);
    let waiter = sim.wait_ready();
    assert_eq!(sim.state(ORT), UnitState::Quarantined);
    let w = sim.ready_newest();
    assert_eq!(sim.workers[&w].unit, Some(CANDLE), "the floor is the last unit");
    assert!(matches!(sim.ready.get(&waiter), Some(Ok(CANDLE))));
    let floor = sim.unit(CANDLE);
    assert!(floor.floor && floor.reason.as_deref().unwrap_or("").contains("serving on the floor"), "{floor:?}");
}

#[test]
fn a_quarantined_unit_comes_back_when_its_fallback_cannot_run() {
    let cfg = SupervisorConfig { restart_backoff: Duration::from_millis(25), ..cfg() };
    let mut sim = Sim::with_unavailable(&[ORT, CANDLE], cfg, &[CANDLE]);
    for _ in 0..3 {
        let w = sim.newest();
        sim.die(w, ExitCause::Crash);
        sim.advance(1_000);
    }
    // ORT was quarantined while CANDLE looked eligible; CANDLE turned out unavailable: ORT is the floor again.
    assert_eq!(sim.state(CANDLE), UnitState::Unavailable);
    assert_ne!(sim.state(ORT), UnitState::Quarantined);
    let w = sim.ready_newest();
    assert_eq!(sim.workers[&w].unit, Some(ORT));
    assert!(sim.unit(ORT).floor);
}

#[test]
fn a_quarantined_unit_is_re_probed_and_takes_over_again() {
    let mut sim = Sim::new(&[ORT, CANDLE], SupervisorConfig { restart_backoff: Duration::from_millis(25), ..cfg() });
    for _ in 0..3 {
        let w = sim.newest();
        sim.die(w, ExitCause::Crash);
        sim.advance(1_000);
    }
    assert_eq!(sim.state(ORT), UnitState::Quarantined);
    let candle = sim.ready_newest();
    sim.advance(600_000);
    // Re-probed after 10 minutes: a worker starts on ORT while CANDLE serves.
    let ort = sim.newest();
    assert_eq!(sim.workers[&ort].unit, Some(ORT));
    assert_eq!(sim.state(CANDLE), UnitState::Serving);
    sim.make_ready(ort);
    sim.advance(25);
    assert!(sim.workers[&candle].shutdown_sent, "the fallback drains once the preferred unit serves");
    let id = sim.submit(1)[0];
    sim.drain(ort);
    assert_eq!(sim.answered_by(id), Some(ORT));
}

#[test]
fn a_unit_that_cannot_start_is_a_start_error_and_an_unavailable_chain_too() {
    // Every unit unavailable: a start error naming each, and requests are refused at once.
    let mut sim = Sim::with_unavailable(&[CUDA, ORT], cfg(), &[CUDA, ORT]);
    let waiter = sim.wait_ready();
    match sim.ready.get(&waiter) {
        Some(Err(e)) => assert!(e.reasons.contains("ort:cuda") && e.reasons.contains("ort:cpu"), "{e}"),
        other => panic!("{other:?}"),
    }
    let id = sim.submit(1)[0];
    assert!(matches!(sim.error(id), Some(PredictError::Unavailable(_))));

    // The floor crashes while loading, three times, never ready: waiters are told; it keeps being retried.
    let mut sim = Sim::new(&[ORT], SupervisorConfig { restart_backoff: Duration::from_millis(25), ..cfg() });
    let waiter = sim.wait_ready();
    for _ in 0..3 {
        let w = sim.newest();
        sim.die(w, ExitCause::Crash);
        sim.advance(1_000);
    }
    assert!(matches!(sim.ready.get(&waiter), Some(Err(_))), "{:?}", sim.ready);
    assert_eq!(sim.state(ORT), UnitState::Loading, "still retried");
}

#[test]
fn a_load_failure_marks_the_unit_unavailable_and_the_chain_walks_on() {
    let mut sim = Sim::new(&[ORT, CANDLE], cfg());
    let w = sim.newest();
    let msg = Response::LoadFailed {
        kind: crate::protocol::LoadFailureKind::ModelRejected,
        reason: "unsupported operator".into(),
    };
    sim.feed(Event::Message { worker: w, msg });
    sim.exit(w, WorkerExit { code: Some(3), cause: ExitCause::Crash, ..WorkerExit::default() });
    assert_eq!(sim.state(ORT), UnitState::Unavailable);
    assert_eq!(sim.unit(ORT).reason.as_deref(), Some("unsupported operator"));
    assert_eq!(sim.unit(ORT).crashes, 0, "a load failure is not a crash");
    let w = sim.ready_newest();
    assert_eq!(sim.workers[&w].unit, Some(CANDLE));
}

#[test]
fn an_oom_kill_shrinks_the_recycle_limit_instead_of_counting() {
    let mut sim = Sim::new(&[ORT], cfg());
    let w = sim.ready_newest();
    let id = sim.submit(1)[0];
    sim.sample(&[(w, false, 900 << 20)], None);
    sim.die(w, ExitCause::OutOfMemory);
    let u = sim.unit(ORT);
    assert_eq!(u.crash_level, 0.0);
    // Halfway between 100 MiB after warm-up and 900 MiB at the kill.
    assert_eq!(u.recycle_rss_limit_bytes, Some(500 << 20));
    sim.advance(100);
    let w2 = sim.ready_newest();
    sim.drain(w2);
    assert_eq!(sim.answers[&id].as_ref().unwrap().retries, 1);
    // The next worker is recycled past the learnt limit.
    let more = sim.submit(1);
    sim.answer_next_with(w2, 600 << 20);
    assert!(sim.all_ok(&more));
    assert_eq!(sim.unit(ORT).recycles, 1);
}
