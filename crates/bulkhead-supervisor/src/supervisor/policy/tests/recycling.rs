//! Recycling and draining: the replacement warms up while the old worker serves; memory limits; drain first when
//! two copies would not fit; a leak past 1.5x the limit pauses the old worker.

use super::*;

#[test]
fn a_recycled_worker_serves_until_its_replacement_is_ready_then_drains() {
    let mut sim = Sim::new(&[ORT], SupervisorConfig { recycle_after: Some(3), ..cfg() });
    let old = sim.ready_newest();
    let mut ids = vec![];
    for _ in 0..3 {
        ids.extend(sim.submit(1));
        sim.answer_next(old);
    }
    assert_eq!(sim.spawned(), 2, "the replacement starts after the third prediction");
    // While it warms up, the old worker still serves.
    ids.extend(sim.submit(1));
    assert_eq!(sim.workers[&old].inbox.len(), 1);
    let new = sim.newest();
    sim.make_ready(new);
    // The old one finishes what it holds, then gets Shutdown.
    sim.advance(25);
    assert!(!sim.workers[&old].shutdown_sent, "it still holds a prediction");
    sim.answer_next(old);
    sim.advance(25);
    assert!(sim.workers[&old].shutdown_sent);
    ids.extend(sim.submit(1));
    assert_eq!(sim.workers[&new].inbox.len(), 1, "new work goes to the replacement");
    sim.drain(new);
    sim.reap();
    assert!(sim.all_ok(&ids));
    let u = sim.unit(ORT);
    assert_eq!((u.recycles, u.crashes, u.restarts), (1, 0, 0));
    assert_eq!(u.state, UnitState::Serving);
}

/// (rss limit, growth limit, MemAvailable, resident after the answer) -> what happens to the worker.
#[test]
fn memory_limits_recycle_and_drain_first_when_two_copies_would_not_fit() {
    #[derive(Debug, PartialEq)]
    enum Then {
        Nothing,
        Replaced,
        DrainsFirst,
    }
    const MIB: u64 = 1 << 20;
    let table = [
        (Some(500 * MIB), None, None, 400 * MIB, Then::Nothing),
        (Some(500 * MIB), None, None, 600 * MIB, Then::Replaced),
        (None, Some(200 * MIB), None, 250 * MIB, Then::Nothing),
        (None, Some(200 * MIB), None, 350 * MIB, Then::Replaced),
        (Some(500 * MIB), None, Some(8_000 * MIB), 600 * MIB, Then::Replaced),
        (Some(500 * MIB), None, Some(200 * MIB), 600 * MIB, Then::DrainsFirst),
    ];
    for (rss_limit, growth, avail, rss, then) in table {
        let cfg = SupervisorConfig { recycle_rss_bytes: rss_limit, recycle_growth_bytes: growth, ..cfg() };
        let mut sim = Sim::new(&[ORT], cfg);
        let w = sim.ready_newest();
        if avail.is_some() {
            sim.sample(&[(w, false, 100 * MIB)], avail);
        }
        let id = sim.submit(1)[0];
        sim.answer_next_with(w, rss);
        let more = sim.submit(1)[0];
        let got = match (sim.spawned(), sim.workers[&w].inbox.len()) {
            (1, 1) => Then::Nothing,
            (2, 1) => Then::Replaced,
            (1, 0) => Then::DrainsFirst,
            other => panic!("{other:?}"),
        };
        assert_eq!(got, then, "{rss_limit:?} {growth:?} {avail:?} {rss}");
        // Whatever happened, both requests are answered.
        sim.advance(25);
        sim.reap();
        sim.advance(25);
        for w in sim.alive() {
            if !sim.workers[&w].ready {
                sim.make_ready(w);
            }
            sim.drain(w);
        }
        assert!(sim.ok(id) && sim.ok(more), "{:?}", sim.answers);
    }
}

#[test]
fn a_leak_past_one_and_a_half_times_the_limit_pauses_the_old_worker() {
    const MIB: u64 = 1 << 20;
    let mut sim = Sim::new(&[ORT], SupervisorConfig { recycle_rss_bytes: Some(400 * MIB), max_inflight: 1, ..cfg() });
    let old = sim.ready_newest();
    sim.submit(1);
    sim.answer_next_with(old, 450 * MIB);
    assert_eq!(sim.spawned(), 2, "recycling");
    sim.submit(1);
    sim.answer_next_with(old, 550 * MIB);
    let paused = sim.submit(1)[0];
    assert!(sim.workers[&old].inbox.len() == 1, "still serving below 1.5x");
    sim.answer_next_with(old, 650 * MIB);
    let waiting = sim.submit(1)[0];
    assert!(sim.workers[&old].inbox.is_empty(), "past 1.5x it takes nothing more");
    sim.advance(25);
    assert!(sim.workers[&old].shutdown_sent, "and stops, holding nothing");
    let new = sim.newest();
    sim.make_ready(new);
    sim.drain(new);
    assert!(sim.ok(paused) && sim.ok(waiting));
}

#[test]
fn in_process_workers_drain_before_their_replacement_starts() {
    let cfg = SupervisorConfig { isolation: Isolation::None, recycle_after: Some(1), ..cfg() };
    let mut sim = Sim::new(&[ORT], cfg);
    let old = sim.ready_newest();
    sim.submit(1);
    sim.answer_next(old);
    assert_eq!(sim.spawned(), 1, "no second copy in one process");
    let id = sim.submit(1)[0];
    sim.advance(25);
    assert!(sim.workers[&old].shutdown_sent);
    sim.reap();
    sim.advance(25);
    let new = sim.ready_newest();
    sim.drain(new);
    assert!(sim.ok(id));
}

#[test]
fn under_a_memory_ceiling_workers_are_recycled_below_it_and_an_oom_while_loading_makes_the_unit_unavailable() {
    use crate::supervisor::config::MemoryCeiling;
    const MIB: u64 = 1 << 20;
    let ceiling = SupervisorConfig { worker_memory: Some(MemoryCeiling::rlimit(500 * MIB)), ..cfg() };
    let mut sim = Sim::new(&[ORT], ceiling);
    let old = sim.ready_newest();
    // 100 MiB after warm-up leaves 400 of headroom: recycled past half of it, paused past three quarters.
    assert_eq!(sim.unit(ORT).recycle_rss_limit_bytes, Some(300 * MIB));
    sim.submit(1);
    sim.answer_next_with(old, 250 * MIB);
    assert_eq!(sim.spawned(), 1);
    sim.submit(1);
    sim.answer_next_with(old, 310 * MIB);
    assert_eq!(sim.spawned(), 2, "recycled below the ceiling");
    // While the replacement warms up, the old worker takes one prediction at a time.
    let two = [sim.submit(1)[0], sim.submit(1)[0]];
    assert_eq!(sim.workers[&old].inbox.len(), 1);
    sim.answer_next_with(old, 360 * MIB);
    assert_eq!(sim.workers[&old].inbox.len(), 1, "the next one, after its memory was seen");
    sim.answer_next_with(old, 410 * MIB);
    let waiting = sim.submit(1)[0];
    assert!(sim.workers[&old].inbox.is_empty(), "past three quarters of the headroom it takes nothing more");
    let new = sim.newest();
    sim.make_ready(new);
    sim.drain(new);
    assert!(sim.all_ok(&two) && sim.ok(waiting));

    // Out of memory while loading under the ceiling: the model does not fit, the unit is unavailable.
    let low = SupervisorConfig { worker_memory: Some(MemoryCeiling::rlimit(64 * MIB)), ..cfg() };
    let mut sim = Sim::new(&[ORT, CANDLE], low);
    let w = sim.newest();
    sim.die(w, ExitCause::OutOfMemory);
    let u = sim.unit(ORT);
    assert_eq!(u.state, UnitState::Unavailable, "{u:?}");
    assert!(u.reason.as_deref().unwrap_or("").contains("memory ceiling of 64 MiB"), "{u:?}");
    assert_eq!(u.crashes_by_cause.get("oom"), Some(&1));
    assert_eq!(sim.spawned(), 2, "the chain walks on");
}
