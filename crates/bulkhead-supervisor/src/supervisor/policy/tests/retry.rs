//! Retry and strikes, poison requests and clean rooms, batching of payload kinds.

use super::*;

#[test]
fn work_in_flight_on_a_dead_worker_is_retried_and_only_the_head_is_struck() {
    let mut sim = Sim::new(&[ORT], SupervisorConfig { max_inflight: 2, ..cfg() });
    let w = sim.ready_newest();
    let ids = sim.submit(1);
    let more = sim.submit(1);
    assert_eq!(sim.workers[&w].inbox.len(), 2, "two pipelined");
    sim.die(w, ExitCause::Crash);
    sim.advance(100);
    let w2 = sim.ready_newest();
    sim.drain(w2);
    let head = sim.answers[&ids[0]].as_ref().unwrap();
    let second = sim.answers[&more[0]].as_ref().unwrap();
    assert_eq!((head.retries, second.retries), (1, 1));
    assert_eq!(sim.unit(ORT).crashes, 1);
}

#[test]
fn a_struck_batch_is_split_into_its_requests() {
    let mut sim = Sim::new(&[ORT], cfg());
    let w = sim.ready_newest();
    let ids = sim.submit(3);
    assert_eq!(sim.workers[&w].inbox.len(), 1, "one batch of three");
    assert!(matches!(&sim.workers[&w].inbox[0].1, Payload::Rows(rows) if rows.len() == 3));
    sim.die(w, ExitCause::Crash);
    sim.advance(100);
    let w2 = sim.ready_newest();
    let sizes: Vec<usize> = sim.workers[&w2].inbox.iter().map(|(_, p, _)| p.rows()).collect();
    assert_eq!(sizes, vec![1, 1], "split, two pipelined");
    sim.drain(w2);
    assert!(sim.all_ok(&ids));
}

/// A step of a poison scenario.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Submit these texts as one batch.
    Submit(&'static [&'static str]),
    /// The newest worker becomes ready.
    Ready,
    /// The newest worker answers its oldest prediction.
    Answer,
    /// The newest worker crashes (SIGSEGV), and the restart backoff passes.
    Crash,
}

/// What happened to the request whose text is POISON.
#[derive(Debug, PartialEq)]
enum Outcome {
    Poison { crashes: u64 },
    Answered,
    Waiting,
}

#[test]
fn poison_needs_a_clean_room() {
    use Step::*;
    let table: [(&str, &[Step], Outcome); 4] = [
        (
            "alone on a fresh worker, twice: poison after two crashes",
            &[Ready, Submit(&["POISON"]), Crash, Ready, Crash],
            Outcome::Poison { crashes: 2 },
        ),
        (
            "one crash is never enough: the retry answers",
            &[Ready, Submit(&["POISON"]), Crash, Ready, Answer],
            Outcome::Answered,
        ),
        (
            "second behind another request twice: no clean room yet, it waits for one",
            &[Ready, Submit(&["a", "POISON"]), Crash, Ready, Answer, Crash],
            Outcome::Waiting,
        ),
        (
            "then alone on the fresh worker: poison after three crashes",
            &[Ready, Submit(&["a", "POISON"]), Crash, Ready, Answer, Crash, Ready, Crash],
            Outcome::Poison { crashes: 3 },
        ),
    ];
    for (name, steps, want) in table {
        let mut sim = Sim::new(&[ORT, CANDLE], cfg());
        let mut poison = None;
        for step in steps {
            match *step {
                Submit(texts) => {
                    let ids = sim.submit_texts(texts);
                    poison = texts.iter().position(|t| *t == "POISON").map(|i| ids[i]);
                }
                Ready => {
                    sim.ready_newest();
                }
                Answer => assert!(sim.answer_next(sim.newest()), "{name}: nothing to answer"),
                Crash => {
                    sim.die(sim.newest(), ExitCause::Crash);
                    sim.advance(5_000);
                }
            }
        }
        let id = poison.expect("a POISON request");
        let got = match sim.answers.get(&id) {
            Some(Err(PredictError::Poison(_))) => Outcome::Poison { crashes: sim.unit(ORT).crashes },
            Some(Ok(_)) => Outcome::Answered,
            Some(Err(e)) => panic!("{name}: {e}"),
            None => Outcome::Waiting,
        };
        assert_ne!(sim.state(ORT), UnitState::Quarantined, "{name}");
        if matches!(got, Outcome::Poison { .. }) {
            assert_eq!(sim.unit(ORT).crash_level, 0.0, "{name}: a poison request's crashes are forgiven");
        }
        assert_eq!(got, want, "{name}");
    }
}

/// The poison request of the integration test: a batch of four with the poison in second place crashes the worker;
/// the split requests are retried; the poison one crashes a used worker, then a fresh one alone: poison. Its three
/// crashes are forgiven: the unit keeps serving.
#[test]
fn a_poison_request_fails_alone_and_its_crashes_are_forgiven() {
    let mut sim = Sim::new(&[ORT, CANDLE], cfg());
    let mut w = sim.ready_newest();
    let ids = sim.submit_texts(&["a", "POISON", "b", "c"]);
    for _ in 0..10 {
        // The worker crashes on any prediction that holds the poison text, and answers the others.
        loop {
            let front = sim.workers[&w].inbox.front().map(|(_, _, t)| t.clone());
            match front {
                Some(texts) if texts.iter().any(|t| t == "POISON") => {
                    sim.die(w, ExitCause::Crash);
                    sim.advance(2_000);
                    break;
                }
                Some(_) => {
                    sim.answer_next(w);
                }
                None => break,
            }
        }
        if ids.iter().all(|id| sim.answers.contains_key(id)) {
            break;
        }
        w = sim.ready_newest();
    }
    assert!(sim.ok(ids[0]) && sim.ok(ids[2]) && sim.ok(ids[3]), "{:?}", sim.answers);
    match sim.error(ids[1]) {
        Some(PredictError::Poison(msg)) => assert!(msg.contains("crashed 3 workers"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let ort = sim.unit(ORT);
    assert_eq!(ort.crashes, 3);
    assert_eq!(ort.crash_level, 0.0, "a poison request's crashes are not the unit's");
    assert_eq!(ort.state, UnitState::Serving);
}

/// Every worker crashes on its fourth prediction (a crash that follows the worker's age): every request is
/// answered, none is poison, and the last unit that can serve is never quarantined.
#[test]
fn a_crash_every_fourth_prediction_answers_every_request() {
    for (chain, batch) in [(&[ORT][..], 1usize), (&[ORT, CANDLE][..], 1), (&[ORT][..], 8), (&[ORT, CANDLE][..], 8)] {
        let mut sim = Sim::new(chain, cfg());
        let mut ids = vec![];
        let mut deaths = 0;
        for round in 0..2_000 {
            if round < 100 {
                ids.extend(sim.submit(batch));
            }
            for w in sim.alive() {
                let sw = &sim.workers[&w];
                if sw.killed.is_some() || sw.shutdown_sent {
                    continue;
                }
                if !sw.ready {
                    sim.make_ready(w);
                    continue;
                }
                // It answers what it holds, and crashes on its fourth prediction.
                loop {
                    let sw = &sim.workers[&w];
                    if sw.answered == 3 && !sw.inbox.is_empty() {
                        sim.die(w, ExitCause::Crash);
                        deaths += 1;
                        break;
                    }
                    if !sim.answer_next(w) {
                        break;
                    }
                }
            }
            sim.reap();
            sim.advance(100);
            if round >= 100 && ids.iter().all(|id| sim.answers.contains_key(id)) {
                break;
            }
        }
        let bad: Vec<_> = ids.iter().filter(|id| !sim.ok(**id)).map(|id| sim.answers.get(id)).collect();
        assert!(bad.is_empty(), "chain {chain:?} batch {batch}: {} not answered: {:?}", bad.len(), bad.first());
        assert!(deaths >= 20, "{deaths}");
        let last = *chain.last().unwrap();
        assert_ne!(sim.state(last), UnitState::Quarantined, "the floor is never quarantined");
    }
}

#[test]
fn payload_kinds_are_batched_only_with_their_own_kind() {
    use crate::payload::PayloadKind::{Audio, Tensors};
    const TOKENS: crate::payload::PayloadKind = crate::payload::PayloadKind::Rows(bulkhead_core::RowKind::Tokens);
    use bulkhead_core::{NamedTensor, TensorData};
    let mut sim = Sim::new(&[ORT], SupervisorConfig { max_inflight: 8, ..cfg() });
    let w = sim.ready_newest();
    let t = NamedTensor::new("x", vec![1, 1], TensorData::F32(vec![1.0])).unwrap();
    // One submission (a batch of the batcher): tokens merge, tensors go alone, in order.
    let jobs = [
        Job::tokens(vec![vec![1, 2]], vec![]),
        Job::tokens(vec![vec![3]], vec![]),
        Job::tensors(vec![t.clone()]),
        Job::tensors(vec![t]),
        Job::tokens(vec![vec![4]], vec![]),
        Job::audio(audio(3)),
        Job::audio(audio(5)),
    ];
    let submitted: Vec<Submitted> = jobs
        .into_iter()
        .enumerate()
        .map(|(i, job)| Submitted { id: RequestId(100 + i as u64), job, enqueued: sim.now().at })
        .collect();
    let ids: Vec<RequestId> = submitted.iter().map(|s| s.id).collect();
    sim.feed(Event::Submit(submitted));
    let kinds: Vec<_> = sim.workers[&w].inbox.iter().map(|(_, p, _)| (p.kind(), p.rows())).collect();
    assert_eq!(kinds, vec![(TOKENS, 2), (Tensors, 1), (Tensors, 1), (TOKENS, 1), (Audio, 1), (Audio, 1)]);
    sim.drain(w);
    assert!(sim.all_ok(&ids));
    let answer = |i: usize| sim.answers[&ids[i]].as_ref().unwrap().answer.clone();
    assert_eq!(answer(0), Answer::Vectors(vec![vec![2.0]]), "each request gets its own rows back");
    let first = sim.answers[&ids[0]].as_ref().unwrap();
    assert_eq!((first.unit, first.precision), (ORT, Some(bulkhead_core::Precision::Fp32)), "who computed it");
    assert_eq!(answer(1), Answer::Vectors(vec![vec![1.0]]));
    assert!(matches!(answer(2), Answer::Tensors(_)));
    let heard = |i: usize| answer(i).into_transcript().map(|t| t.text);
    assert_eq!((heard(5), heard(6)), (Some("3 samples".into()), Some("5 samples".into())), "one audio per prediction");
}

fn audio(samples: usize) -> crate::audio::AudioRequest {
    crate::audio::AudioRequest { samples: vec![0.0; samples], rate: 16000, options: Default::default() }
}

#[test]
fn options_the_model_cannot_take_are_the_request_s_fault_and_the_worker_stays() {
    let mut sim = Sim::new(&[ORT], cfg());
    let w = sim.ready_newest();
    let id = sim.submit_job(Job::audio(audio(16000)));
    let (run, _, _) = sim.workers.get_mut(&w).unwrap().inbox.pop_front().unwrap();
    let error = crate::protocol::RunError::Invalid("<|yue|> is not one of the model's languages".into());
    sim.feed(Event::Message { worker: w, msg: Response::Failed { id: run, error } });
    assert!(matches!(sim.error(id), Some(PredictError::Invalid(m)) if m.contains("yue")));
    assert_eq!(sim.state(ORT), UnitState::Serving, "the worker stays");
}

#[test]
fn a_payload_the_model_cannot_run_is_answered_unsupported() {
    let mut sim = Sim::new(&[ORT], cfg());
    let w = sim.ready_newest();
    let id = sim.submit_job(Job::rows(vec![bulkhead_core::Row::Pair { ids: vec![1], type_ids: vec![0] }]));
    let (run, _, _) = sim.workers.get_mut(&w).unwrap().inbox.pop_front().unwrap();
    let error = crate::protocol::RunError::Unsupported("an embedding model takes token rows".into());
    sim.feed(Event::Message { worker: w, msg: Response::Failed { id: run, error } });
    assert!(matches!(sim.error(id), Some(PredictError::Unsupported(m)) if m.contains("token rows")));
    assert_eq!(sim.state(ORT), UnitState::Serving, "the worker stays");
}
