//! Helpers of the supervisor tests: the engines, the default model with its reference embeddings, a supervisor
//! configuration that runs the real `bulkhead worker`, and a load of checked requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead_core::{Chain, ModelFiles, Platform};
use bulkhead_embed::{Engines, Tokenizer};
use bulkhead_supervisor::{faults, Supervisor, SupervisorConfig, WorkerCommand};

use super::{cosine, need, reference, Reference};

pub fn engines() -> Arc<Engines> {
    Arc::new(bulkhead_testkit::engines())
}

pub fn config(faults_json: &str) -> SupervisorConfig {
    SupervisorConfig {
        worker_command: WorkerCommand { program: env!("CARGO_BIN_EXE_bulkhead").into(), args: vec!["worker".into()] },
        faults: faults::parse(faults_json).expect("valid rules"),
        restart_backoff: Duration::from_millis(50),
        ..SupervisorConfig::default()
    }
}

pub struct Setup {
    pub model: ModelFiles,
    pub tokenizer: Tokenizer,
    pub reference: Reference,
    pub rows: Vec<Vec<i64>>,
}

pub fn setup() -> Option<Setup> {
    let folder = need(super::minilm_folder(), "the all-MiniLM-L6-v2 package")?;
    let model = ModelFiles::open(&folder).unwrap();
    let tokenizer = Tokenizer::load(&model).unwrap();
    let reference = reference();
    let rows = tokenizer.encode(&reference.sentences).unwrap();
    Some(Setup { model, tokenizer, reference, rows })
}

pub fn chain(spec: &str) -> Chain {
    Chain::parse(spec, &Platform::detect()).unwrap()
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub ok: usize,
    pub wrong: Vec<String>,
    pub failed: Vec<String>,
    pub units: std::collections::BTreeMap<String, usize>,
}

/// `total` single-sentence requests from `clients` concurrent clients; every answer is checked against the
/// reference embedding of its sentence.
pub async fn drive(sup: &Arc<Supervisor>, s: &Setup, total: usize, clients: usize) -> Outcome {
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
                        let c = cosine(&a.answer.as_vectors().unwrap()[0], &want[k]);
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

pub fn unit_view(sup: &Supervisor, unit: &str) -> bulkhead_supervisor::UnitView {
    sup.units().units.into_iter().find(|u| u.unit == unit).unwrap()
}

pub fn assert_all_answered(o: &Outcome, total: usize) {
    assert!(o.failed.is_empty(), "{} failed, first: {:?}", o.failed.len(), o.failed.first());
    assert!(o.wrong.is_empty(), "{} wrong, first: {:?}", o.wrong.len(), o.wrong.first());
    assert_eq!(o.ok, total);
}
