//! Prometheus metrics. Every metric name is defined here, once ([`Metric`]); handlers and the batcher record
//! through [`Metrics`], and the supervisor's counters (crashes by signal, recycles, quarantines, resident memory)
//! are read from its state at scrape time.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// The metric names.
#[derive(Debug, Clone, Copy)]
pub enum Metric {
    /// Requests by route, model, unit and status.
    Requests,
    /// Requests waiting in a model's queue.
    QueueDepth,
    /// Rows per batch.
    BatchSize,
    /// Padded tokens per batch.
    BatchTokens,
    /// Seconds per stage (tokenize, queue, infer, post).
    StageDuration,
    /// Worker crashes by unit and signal (or exit code).
    WorkerCrashes,
    /// Worker restarts by unit.
    WorkerRestarts,
    /// Worker recycles by unit.
    WorkerRecycles,
    /// 1 while a unit is quarantined.
    UnitQuarantined,
    /// 1 for a unit's current state.
    UnitState,
    /// Resident memory of the unit's worker.
    WorkerResidentBytes,
}

impl Metric {
    /// The exported name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Requests => "bulkhead_requests_total",
            Metric::QueueDepth => "bulkhead_queue_depth",
            Metric::BatchSize => "bulkhead_batch_size",
            Metric::BatchTokens => "bulkhead_batch_tokens",
            Metric::StageDuration => "bulkhead_stage_duration_seconds",
            Metric::WorkerCrashes => "bulkhead_worker_crashes_total",
            Metric::WorkerRestarts => "bulkhead_worker_restarts_total",
            Metric::WorkerRecycles => "bulkhead_worker_recycles_total",
            Metric::UnitQuarantined => "bulkhead_unit_quarantined",
            Metric::UnitState => "bulkhead_unit_state",
            Metric::WorkerResidentBytes => "bulkhead_worker_resident_bytes",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Metric::Requests => "HTTP requests by route, model, computing unit and status code",
            Metric::QueueDepth => "Requests waiting in the model's batch queue",
            Metric::BatchSize => "Rows per batch sent to a worker",
            Metric::BatchTokens => "Padded tokens per batch sent to a worker",
            Metric::StageDuration => "Seconds spent per request stage",
            Metric::WorkerCrashes => "Worker deaths by unit and signal name or exit code",
            Metric::WorkerRestarts => "Worker restarts by unit",
            Metric::WorkerRecycles => "Planned worker replacements (prediction count or memory growth)",
            Metric::UnitQuarantined => "1 while the unit is quarantined for the model",
            Metric::UnitState => "1 for the unit's current state",
            Metric::WorkerResidentBytes => "Resident memory of the unit's current worker",
        }
    }
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    queue_depth: IntGaugeVec,
    batch_size: HistogramVec,
    batch_tokens: HistogramVec,
    stage: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn opts(m: Metric) -> Opts {
    Opts::new(m.name(), m.help())
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(opts(Metric::Requests), &["route", "model", "unit", "status"]).unwrap();
        let queue_depth = IntGaugeVec::new(opts(Metric::QueueDepth), &["model"]).unwrap();
        let hist = |m: Metric, buckets: Vec<f64>| HistogramOpts::new(m.name(), m.help()).buckets(buckets);
        let batch_size =
            HistogramVec::new(hist(Metric::BatchSize, vec![1., 2., 4., 8., 16., 32., 64., 128., 256.]), &["model"])
                .unwrap();
        let batch_tokens = HistogramVec::new(
            hist(Metric::BatchTokens, prometheus::exponential_buckets(16., 2., 12).unwrap()),
            &["model"],
        )
        .unwrap();
        let stage = HistogramVec::new(
            hist(Metric::StageDuration, prometheus::exponential_buckets(0.0001, 2.5, 14).unwrap()),
            &["model", "stage"],
        )
        .unwrap();
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(queue_depth.clone()),
            Box::new(batch_size.clone()),
            Box::new(batch_tokens.clone()),
            Box::new(stage.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics { registry, requests, queue_depth, batch_size, batch_tokens, stage }
    }

    /// Counts a finished request.
    pub fn request(&self, route: &str, model: &str, unit: &str, status: u16) {
        self.requests.with_label_values(&[route, model, unit, &status.to_string()]).inc();
    }

    /// Sets a model's queue depth.
    pub fn queue_depth(&self, model: &str, depth: usize) {
        self.queue_depth.with_label_values(&[model]).set(depth as i64);
    }

    /// Records a batch.
    pub fn batch(&self, model: &str, rows: usize, padded_tokens: usize) {
        self.batch_size.with_label_values(&[model]).observe(rows as f64);
        self.batch_tokens.with_label_values(&[model]).observe(padded_tokens as f64);
    }

    /// Records a stage duration in milliseconds.
    pub fn stage_ms(&self, model: &str, stage: &str, ms: f64) {
        self.stage.with_label_values(&[model, stage]).observe(ms / 1e3);
    }

    /// The text exposition, plus the supervisor's state of every model rendered as gauges and counters.
    pub fn render(&self, units: &[(String, serde_json::Value)]) -> String {
        let mut buf = vec![];
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        let mut out = String::from_utf8(buf).unwrap_or_default();
        out.push_str(&render_units(units));
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Renders the supervisor's per-unit state (as served on `/units`) in the text format.
fn render_units(models: &[(String, serde_json::Value)]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let header = |out: &mut String, m: Metric, kind: &str| {
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {kind}", m.name(), m.help(), m.name());
    };
    let units_of = |v: &serde_json::Value| v.get("units").and_then(|u| u.as_array()).cloned().unwrap_or_default();
    let num = |u: &serde_json::Value, k: &str| u.get(k).and_then(|x| x.as_f64()).unwrap_or(0.0);
    let s = |u: &serde_json::Value, k: &str| u.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();

    header(&mut out, Metric::WorkerCrashes, "counter");
    for (model, v) in models {
        for u in units_of(v) {
            if let Some(by) = u.get("crashes_by_exit").and_then(|c| c.as_object()) {
                for (exit, n) in by {
                    let _ = writeln!(
                        out,
                        "{}{{model=\"{}\",unit=\"{}\",signal=\"{}\"}} {}",
                        Metric::WorkerCrashes.name(),
                        escape(model),
                        escape(&s(&u, "unit")),
                        escape(exit),
                        n.as_f64().unwrap_or(0.0)
                    );
                }
            }
        }
    }
    for (metric, key, kind) in [
        (Metric::WorkerRestarts, "restarts", "counter"),
        (Metric::WorkerRecycles, "recycles", "counter"),
        (Metric::WorkerResidentBytes, "resident_bytes", "gauge"),
    ] {
        header(&mut out, metric, kind);
        for (model, v) in models {
            for u in units_of(v) {
                let _ = writeln!(
                    out,
                    "{}{{model=\"{}\",unit=\"{}\"}} {}",
                    metric.name(),
                    escape(model),
                    escape(&s(&u, "unit")),
                    num(&u, key)
                );
            }
        }
    }
    header(&mut out, Metric::UnitQuarantined, "gauge");
    header(&mut out, Metric::UnitState, "gauge");
    for (model, v) in models {
        for u in units_of(v) {
            let state = s(&u, "state");
            let _ = writeln!(
                out,
                "{}{{model=\"{}\",unit=\"{}\"}} {}",
                Metric::UnitQuarantined.name(),
                escape(model),
                escape(&s(&u, "unit")),
                u8::from(state == "quarantined")
            );
            let _ = writeln!(
                out,
                "{}{{model=\"{}\",unit=\"{}\",state=\"{}\"}} 1",
                Metric::UnitState.name(),
                escape(model),
                escape(&s(&u, "unit")),
                escape(&state)
            );
        }
    }
    out
}
