//! The seam between the HTTP layer and whatever computes a model: in production the supervisor of worker
//! processes ([`bulkhead_supervisor::Supervisor`]), in either isolation mode. This is the one module of the server
//! that names the supervisor crate (the crate's `tests/invariants.rs` checks it): its job and answer types are
//! re-exported here for the batcher, and its `/units` view is converted here into the server's wire type
//! ([`crate::api::units`]).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bulkhead_core::NamedTensor;
use bulkhead_segment::SegmentJob;
/// The CPU priority of threads that run work that may wait (see [`crate::bulk`]).
pub(crate) use bulkhead_supervisor::priority::{lower_this_thread, BACKGROUND_NICE};
pub use bulkhead_supervisor::{
    Answer, Answered as BackendOutput, Job as BackendJob, Payload, PredictError as BackendError,
};
pub use bulkhead_supervisor::{
    AudioRequest, FallbackChecks, SpeechOptions, SpeechTask, SpeechTiming, Transcript, TranscriptSegment,
};
use bulkhead_supervisor::{Job, Supervisor};

use crate::api::units::{
    Isolation, MemoryCeiling, ModelUnits, UnitState, UnitView, WarmupShape, WorkerState, WorkerView,
};

/// A boxed future (the trait is object-safe without extra crates).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the server needs from a model's compute side.
pub trait Backend: Send + Sync + 'static {
    /// Runs a batch of jobs (one per request, each a [`Payload`]); one result per job, so that a poison request
    /// fails alone. Each answer says which unit computed it, at which precision.
    fn predict(&self, jobs: Vec<Job>) -> BoxFuture<'_, Vec<Result<BackendOutput, BackendError>>>;
    /// Runs a tensor model on named inputs (one request, never batched). Backends of embedding models only keep
    /// the default, which refuses.
    fn infer(&self, inputs: Vec<NamedTensor>) -> BoxFuture<'_, Result<BackendOutput, BackendError>> {
        let _ = inputs;
        Box::pin(async { Err(BackendError::Failed("this backend runs only embedding models".into())) })
    }
    /// Runs a segmentation job (one request, never batched). Backends of other models keep the default, which
    /// refuses.
    fn segment(&self, job: SegmentJob) -> BoxFuture<'_, Result<BackendOutput, BackendError>> {
        let _ = job;
        Box::pin(async { Err(BackendError::Failed("this backend runs no segmentation model".into())) })
    }

    /// Transcribes one decoded audio on a speech model (one request, never batched). Backends of other models only
    /// keep the default, which refuses.
    fn transcribe(&self, audio: AudioRequest) -> BoxFuture<'_, Result<BackendOutput, BackendError>> {
        let _ = audio;
        Box::pin(async { Err(BackendError::Unsupported("this backend runs no speech models".into())) })
    }
    /// Whether jobs should carry their input texts (only a fault rule that matches on text reads them); by default
    /// they do not.
    fn wants_texts(&self) -> bool {
        false
    }
    /// The `/units` view of this model: chain and per-unit state.
    fn units(&self) -> ModelUnits;
    /// True when a unit answered a real forward pass within `window`.
    fn healthy(&self, window: Duration) -> bool;
    /// True once a unit is serving (after warm-up).
    fn ready(&self) -> bool;
    /// Stops the workers (after in-flight work).
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

impl Backend for Supervisor {
    fn predict(&self, jobs: Vec<Job>) -> BoxFuture<'_, Vec<Result<BackendOutput, BackendError>>> {
        Box::pin(Supervisor::predict(self, jobs))
    }

    fn infer(&self, inputs: Vec<NamedTensor>) -> BoxFuture<'_, Result<BackendOutput, BackendError>> {
        Box::pin(Supervisor::infer(self, inputs))
    }

    fn segment(&self, job: SegmentJob) -> BoxFuture<'_, Result<BackendOutput, BackendError>> {
        Box::pin(Supervisor::run(self, Job::segment(job)))
    }

    fn transcribe(&self, audio: AudioRequest) -> BoxFuture<'_, Result<BackendOutput, BackendError>> {
        Box::pin(Supervisor::transcribe(self, audio))
    }

    fn wants_texts(&self) -> bool {
        Supervisor::wants_texts(self)
    }

    fn units(&self) -> ModelUnits {
        model_units(Supervisor::units(self))
    }

    fn healthy(&self, window: Duration) -> bool {
        self.is_healthy(window)
    }

    fn ready(&self) -> bool {
        self.is_ready()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(Supervisor::shutdown(self))
    }
}

/// The supervisor's view as the server's wire type, field by field.
fn model_units(v: bulkhead_supervisor::ModelUnits) -> ModelUnits {
    use bulkhead_supervisor as s;
    let isolation = match v.isolation {
        s::Isolation::Process => Isolation::Process,
        s::Isolation::None => Isolation::None,
    };
    let state = |st: s::UnitState| match st {
        s::UnitState::Standby => UnitState::Standby,
        s::UnitState::Loading => UnitState::Loading,
        s::UnitState::Warming => UnitState::Warming,
        s::UnitState::Serving => UnitState::Serving,
        s::UnitState::Crashed => UnitState::Crashed,
        s::UnitState::Quarantined => UnitState::Quarantined,
        s::UnitState::Unavailable => UnitState::Unavailable,
    };
    let worker = |w: s::WorkerView| WorkerView {
        pid: w.pid,
        generation: w.generation,
        state: match w.state {
            s::WorkerState::Loading => WorkerState::Loading,
            s::WorkerState::Warming => WorkerState::Warming,
            s::WorkerState::Serving => WorkerState::Serving,
            s::WorkerState::Retiring => WorkerState::Retiring,
            s::WorkerState::Draining => WorkerState::Draining,
            s::WorkerState::Stopping => WorkerState::Stopping,
        },
        in_flight: w.in_flight,
        served: w.served,
        resident_bytes: w.resident_bytes,
        replaced_because: w.replaced_because,
    };
    let unit = |u: s::UnitView| UnitView {
        unit: u.unit,
        state: state(u.state),
        reason: u.reason,
        floor: u.floor,
        runtime: u.runtime,
        crashes: u.crashes,
        crashes_by_exit: u.crashes_by_exit,
        crashes_by_cause: u.crashes_by_cause,
        crash_level: u.crash_level,
        last_exit: u.last_exit,
        stderr_tail: u.stderr_tail,
        predictions: u.predictions,
        resident_bytes: u.resident_bytes,
        resident_after_warmup_bytes: u.resident_after_warmup_bytes,
        recycles: u.recycles,
        restarts: u.restarts,
        generations: u.generations,
        pid: u.pid,
        workers: u.workers.into_iter().map(worker).collect(),
        quarantined_until: u.quarantined_until,
        load_ms: u.load_ms,
        warmup_ms: u.warmup_ms,
        warmup: u.warmup.into_iter().map(|w| WarmupShape { batch: w.batch, seq: w.seq, ms: w.ms }).collect(),
        precision: u.precision,
        placement: u.placement,
        deadline_ms: u.deadline_ms,
        recycle_rss_limit_bytes: u.recycle_rss_limit_bytes,
    };
    ModelUnits {
        model: v.model,
        chain: v.chain,
        serving: v.serving,
        isolation,
        workers: v.workers,
        queued: v.queued,
        units: v.units.into_iter().map(unit).collect(),
        inputs: v.inputs,
        outputs: v.outputs,
        memory_ceiling: v.memory_ceiling.map(|c| MemoryCeiling {
            limit_bytes: c.limit_bytes,
            mechanism: c.mechanism,
            cgroup_parent: c.cgroup_parent,
            why_not_cgroup: c.why_not_cgroup,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_view_serializes_as_the_supervisor_view_does() {
        // Every field of the supervisor's view survives the conversion with the same JSON.
        let json = serde_json::json!({
            "model": "m", "chain": ["ort:cpu", "candle:cpu"], "serving": "ort:cpu", "isolation": "process",
            "workers": 2, "queued": 3,
            "units": [{
                "unit": "ort:cpu", "state": "serving", "reason": null, "floor": false, "runtime": "onnxruntime 1.31.1",
                "crashes": 4, "crashes_by_exit": {"SIGSEGV": 3}, "crashes_by_cause": {"crash": 3, "external": 1},
                "crash_level": 1.0, "last_exit": "signal SIGSEGV", "stderr_tail": "boom", "predictions": 10,
                "resident_bytes": 5, "resident_after_warmup_bytes": 6, "recycles": 1, "restarts": 2,
                "generations": 3, "pid": 42,
                "workers": [{"pid": 42, "generation": 2, "state": "retiring", "in_flight": 1, "served": 9,
                             "resident_bytes": 5, "replaced_because": "leak"}],
                "quarantined_until": null, "load_ms": 1.5, "warmup_ms": 2.5,
                "warmup": [{"batch": 1, "seq": 8, "ms": 0.5}], "precision": "int8", "placement": [],
                "deadline_ms": 1000.0, "recycle_rss_limit_bytes": null
            }],
            "memory_ceiling": {"limit_bytes": 419430400, "mechanism": "cgroup_v1",
                               "cgroup_parent": "/sys/fs/cgroup/memory/app", "why_not_cgroup": null}
        });
        let view: bulkhead_supervisor::ModelUnits = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&view).unwrap(), json, "the fixture is the supervisor's own JSON");
        assert_eq!(serde_json::to_value(model_units(view)).unwrap(), json);
    }
}
