//! The watchdog: deadlines from observed latency, stopped workers, load hangs, and health probes.

use super::*;

/// Serves `n` single-row predictions taking `ms` each on worker `w` (the unit learns their latency).
fn serve_observed(sim: &mut Sim, w: WorkerId, n: usize, ms: u64) {
    for _ in 0..n {
        sim.submit(1);
        sim.clock += Duration::from_millis(ms);
        sim.answer_next(w);
    }
}

/// (observed predictions of the class, elapsed ms with no answer) -> killed as a hang?
#[test]
fn the_deadline_follows_observed_latency_with_a_one_second_floor() {
    let table: [(usize, u64, u64, bool); 6] = [
        // Warm: 8+ observations of 5 ms: the deadline is the 1 s floor.
        (20, 5, 900, false),
        (20, 5, 1_100, true),
        // Slow predictions of 300 ms: p99 x 10 = 3 s.
        (20, 300, 2_500, false),
        (20, 300, 3_100, true),
        // Not observed yet: the warm-up estimate, at least 5 s.
        (0, 0, 4_900, false),
        (0, 0, 5_100, true),
    ];
    for (observed, ms, elapsed, killed) in table {
        let mut sim = Sim::new(&[ORT], cfg());
        sim.answer_probes = false;
        let w = sim.ready_newest();
        serve_observed(&mut sim, w, observed, ms);
        sim.submit(1);
        sim.advance(elapsed);
        let got = sim.workers[&w].killed.clone();
        assert_eq!(got.is_some(), killed, "{observed} x {ms} ms, {elapsed} ms: {got:?}");
        if let Some(reason) = got {
            assert!(matches!(reason, KillReason::Watchdog(_)), "{reason:?}");
        }
    }
}

/// (CPU used while late, ms late) -> killed? Past the soft deadline (1 s here) only a worker that stopped computing
/// is killed; past the hard deadline (5 s), any.
#[test]
fn a_late_worker_that_still_computes_is_given_until_the_hard_deadline() {
    let table: [(bool, u64, bool); 4] =
        [(false, 1_600, true), (true, 1_600, false), (true, 4_900, false), (true, 5_100, true)];
    for (computing, ms, killed) in table {
        let mut sim = Sim::new(&[ORT], cfg());
        sim.answer_probes = false;
        let w = sim.ready_newest();
        serve_observed(&mut sim, w, 20, 5);
        sim.submit(1);
        let start = sim.clock;
        let mut ticks = 0;
        while sim.clock - start < Duration::from_millis(ms) {
            sim.clock += Duration::from_millis(25);
            if computing {
                ticks += 1;
            }
            sim.sample_cpu(&[(w, false, 100 << 20, ticks)], None);
        }
        let got = sim.workers[&w].killed.clone();
        assert_eq!(got.is_some(), killed, "computing {computing}, {ms} ms: {got:?}");
    }
}

#[test]
fn a_hung_request_is_retried_with_twice_the_deadline() {
    let mut sim = Sim::new(&[ORT], cfg());
    sim.answer_probes = false;
    let w = sim.ready_newest();
    serve_observed(&mut sim, w, 20, 5);
    let id = sim.submit(1)[0];
    sim.advance(1_100);
    sim.reap();
    assert_eq!(sim.unit(ORT).crashes_by_cause.get("hang"), Some(&1));
    sim.advance(100);
    let w2 = sim.ready_newest();
    // The replacement runs it; 1.5 s is past the 1 s floor but within twice it.
    sim.advance(1_500);
    assert!(sim.workers[&w2].killed.is_none(), "the retried request has 2 s");
    sim.answer_next(w2);
    assert!(sim.ok(id));
}

/// (stopped, work held or waiting, ms stopped) -> replaced?
#[test]
fn a_stopped_worker_holding_work_is_replaced_after_a_short_grace() {
    let table: [(bool, bool, u64, bool); 4] =
        [(true, true, 300, true), (true, true, 200, false), (true, false, 5_000, false), (false, true, 300, false)];
    for (stopped, busy, ms, replaced) in table {
        let mut sim = Sim::new(&[ORT], cfg());
        sim.answer_probes = false;
        let w = sim.ready_newest();
        serve_observed(&mut sim, w, 20, 5);
        if busy {
            sim.submit(1);
        }
        let start = sim.clock;
        while sim.clock - start < Duration::from_millis(ms) {
            sim.clock += Duration::from_millis(25);
            sim.sample(&[(w, stopped, 100 << 20)], None);
        }
        let killed = sim.workers[&w].killed.clone();
        assert_eq!(matches!(killed, Some(KillReason::Stopped(_))), replaced, "{stopped} {busy} {ms}: {killed:?}");
        if replaced {
            sim.reap();
            let u = sim.unit(ORT);
            assert_eq!(u.crashes_by_cause.get("stopped"), Some(&1));
            assert_eq!(u.crash_level, 0.0, "a stop from outside is not the unit's fault");
            assert_eq!(sim.spawned(), 2, "replaced at once");
        }
    }
}

#[test]
fn a_load_that_hangs_is_killed_after_the_load_timeout() {
    let mut sim = Sim::new(&[ORT], SupervisorConfig { load_timeout: Duration::from_secs(10), ..cfg() });
    let w = sim.newest();
    sim.advance(9_900);
    assert!(sim.workers[&w].killed.is_none());
    sim.advance(200);
    assert!(matches!(sim.workers[&w].killed, Some(KillReason::LoadTimeout(_))));
    sim.reap();
    assert_eq!(sim.unit(ORT).crashes_by_cause.get("hang"), Some(&1));
}

#[test]
fn an_idle_worker_is_probed_with_its_own_warm_up_input() {
    let mut sim = Sim::new(&[ORT], cfg());
    sim.answer_probes = false;
    let w = sim.ready_newest();
    sim.advance(19_000);
    assert!(sim.workers[&w].inbox.is_empty());
    sim.advance(1_100);
    let probe = sim.workers[&w].inbox.front().map(|(_, p, _)| p.clone());
    assert_eq!(probe, Some(Payload::Probe), "the worker's own warm-up input, no token ids from the supervisor");
    let before = sim.core.health().last_ok;
    sim.answer_next(w);
    assert!(sim.core.health().last_ok > before, "a probe answer is a real forward pass");
    assert!(sim.answers.is_empty(), "nobody waits for a probe");
}
