//! Prometheus metrics. Every metric name is defined here, once ([`Metric`]); handlers, the batcher and the
//! listener record through [`Metrics`], and the supervisor's counters (crashes by signal, recycles, quarantines,
//! resident memory) are read from its typed view ([`ModelUnits`]) at scrape time.

use std::time::Duration;

use crate::api::units::{ModelUnits, UnitState, UnitView};
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

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
    /// Tokens of the rows themselves, summed over every forward pass.
    BatchRealTokens,
    /// Padding tokens (padded minus real), summed over every forward pass.
    BatchPaddingTokens,
    /// Padding tokens per real token over every forward pass so far.
    PaddingShare,
    /// Seconds per stage (tokenize, queue, infer, post).
    StageDuration,
    /// Worker crashes by unit and signal (or exit code).
    WorkerCrashes,
    /// Unplanned worker deaths by unit and cause (`crash`, `hang`, `oom`...).
    WorkerDeaths,
    /// The memory ceiling of each worker process, by mechanism.
    WorkerMemoryCeiling,
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
    /// HTTP connections open now.
    HttpConnections,
    /// HTTP connections closed, by why.
    HttpConnectionsClosed,
    /// HTTP connections refused at the connection limit.
    HttpConnectionsRefused,
    /// Trace spans dropped because the exporter's queue was full.
    TraceSpansDropped,
    /// Model loads (on demand or explicit), by model.
    ModelLoads,
    /// Model loads that failed, by model.
    ModelLoadFailures,
    /// Seconds the last load of each model took.
    ModelLoadSeconds,
    /// Model unloads, by model and why (`idle`, `evicted`, `asked`).
    ModelUnloads,
    /// Models unloaded to make room for another, by model.
    ModelEvictions,
    /// 1 for each model's current lifecycle state.
    ModelState,
    /// Resident memory of a loaded model's workers.
    ModelResidentBytes,
}

/// Why an HTTP connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionClose {
    /// The client closed it, or shutdown let it finish.
    Ended,
    /// Its request head was not complete in time (half-open or too slow).
    HeaderTimeout,
    /// It stayed idle between requests too long.
    IdleTimeout,
    /// It had not sent a request when the connection limit was reached, and made room for a new one.
    GaveWay,
}

impl ConnectionClose {
    fn label(self) -> &'static str {
        match self {
            ConnectionClose::Ended => "ended",
            ConnectionClose::HeaderTimeout => "header_timeout",
            ConnectionClose::IdleTimeout => "idle_timeout",
            ConnectionClose::GaveWay => "gave_way",
        }
    }
}

impl Metric {
    /// The exported name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Requests => "bulkhead_requests_total",
            Metric::QueueDepth => "bulkhead_queue_depth",
            Metric::BatchSize => "bulkhead_batch_size",
            Metric::BatchTokens => "bulkhead_batch_tokens",
            Metric::BatchRealTokens => "bulkhead_batch_real_tokens_total",
            Metric::BatchPaddingTokens => "bulkhead_batch_padding_tokens_total",
            Metric::PaddingShare => "bulkhead_padding_share",
            Metric::StageDuration => "bulkhead_stage_duration_seconds",
            Metric::WorkerCrashes => "bulkhead_worker_crashes_total",
            Metric::WorkerDeaths => "bulkhead_worker_deaths_total",
            Metric::WorkerMemoryCeiling => "bulkhead_worker_memory_ceiling_bytes",
            Metric::WorkerRestarts => "bulkhead_worker_restarts_total",
            Metric::WorkerRecycles => "bulkhead_worker_recycles_total",
            Metric::UnitQuarantined => "bulkhead_unit_quarantined",
            Metric::UnitState => "bulkhead_unit_state",
            Metric::WorkerResidentBytes => "bulkhead_worker_resident_bytes",
            Metric::HttpConnections => "bulkhead_http_connections",
            Metric::HttpConnectionsClosed => "bulkhead_http_connections_closed_total",
            Metric::HttpConnectionsRefused => "bulkhead_http_connections_refused_total",
            Metric::TraceSpansDropped => "bulkhead_trace_spans_dropped_total",
            Metric::ModelLoads => "bulkhead_model_loads_total",
            Metric::ModelLoadFailures => "bulkhead_model_load_failures_total",
            Metric::ModelLoadSeconds => "bulkhead_model_load_seconds",
            Metric::ModelUnloads => "bulkhead_model_unloads_total",
            Metric::ModelEvictions => "bulkhead_model_evictions_total",
            Metric::ModelState => "bulkhead_model_state",
            Metric::ModelResidentBytes => "bulkhead_model_resident_bytes",
        }
    }

    /// The help text.
    pub fn help(self) -> &'static str {
        match self {
            Metric::Requests => "HTTP requests by route, model, computing unit and status code",
            Metric::QueueDepth => "Requests waiting in the model's batch queue",
            Metric::BatchSize => "Rows per batch sent to a worker",
            Metric::BatchTokens => "Padded tokens per batch sent to a worker",
            Metric::BatchRealTokens => "Tokens of the rows themselves sent to a worker, summed over forward passes",
            Metric::BatchPaddingTokens => "Padding tokens (rows x longest row - real tokens) computed by workers",
            Metric::PaddingShare => "Padding tokens per real token over every forward pass so far",
            Metric::StageDuration => "Seconds spent per request stage",
            Metric::WorkerCrashes => "Worker deaths by unit and signal name or exit code",
            Metric::WorkerDeaths => {
                "Unplanned worker deaths by unit and cause (crash, hang, stopped, external, oom, killed)"
            }
            Metric::WorkerMemoryCeiling => {
                "Memory ceiling of each worker process (--worker-memory-mb), by enforcing mechanism"
            }
            Metric::WorkerRestarts => "Worker restarts by unit",
            Metric::WorkerRecycles => "Planned worker replacements (prediction count or memory growth)",
            Metric::UnitQuarantined => "1 while the unit is quarantined for the model",
            Metric::UnitState => "1 for the unit's current state",
            Metric::WorkerResidentBytes => "Resident memory of the unit's current worker",
            Metric::HttpConnections => "HTTP connections open now",
            Metric::HttpConnectionsClosed => {
                "HTTP connections closed, by why (ended, header_timeout, idle_timeout, gave_way)"
            }
            Metric::HttpConnectionsRefused => {
                "HTTP connections refused at --max-connections (503, or closed when too many arrive at once)"
            }
            Metric::TraceSpansDropped => "Trace spans dropped because the OTLP exporter's queue was full",
            Metric::ModelLoads => "Model loads that succeeded (at start, on demand or asked for)",
            Metric::ModelLoadFailures => "Model loads that failed",
            Metric::ModelLoadSeconds => {
                "Seconds the model's last load took (workers started, warmed up, first request)"
            }
            Metric::ModelUnloads => "Model unloads by why: idle (keep-alive), evicted (room for another), asked",
            Metric::ModelEvictions => "Models unloaded to make room for another under the limits",
            Metric::ModelState => "1 for the model's lifecycle state (available, loading, loaded, draining, failed)",
            Metric::ModelResidentBytes => "Resident memory of the loaded model's worker processes",
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
    real_tokens: IntCounterVec,
    padding_tokens: IntCounterVec,
    padding_share: GaugeVec,
    stage: HistogramVec,
    connections: IntGauge,
    connections_closed: IntCounterVec,
    connections_refused: IntCounter,
    spans_dropped: IntCounter,
    model_loads: IntCounterVec,
    model_load_failures: IntCounterVec,
    model_load_seconds: GaugeVec,
    model_unloads: IntCounterVec,
    model_evictions: IntCounterVec,
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
        let real_tokens = IntCounterVec::new(opts(Metric::BatchRealTokens), &["model"]).unwrap();
        let padding_tokens = IntCounterVec::new(opts(Metric::BatchPaddingTokens), &["model"]).unwrap();
        let padding_share = GaugeVec::new(opts(Metric::PaddingShare), &["model"]).unwrap();
        let stage = HistogramVec::new(
            hist(Metric::StageDuration, prometheus::exponential_buckets(0.0001, 2.5, 14).unwrap()),
            &["model", "stage"],
        )
        .unwrap();
        let connections = IntGauge::with_opts(opts(Metric::HttpConnections)).unwrap();
        let connections_closed = IntCounterVec::new(opts(Metric::HttpConnectionsClosed), &["why"]).unwrap();
        let connections_refused = IntCounter::with_opts(opts(Metric::HttpConnectionsRefused)).unwrap();
        let spans_dropped = IntCounter::with_opts(opts(Metric::TraceSpansDropped)).unwrap();
        let model_loads = IntCounterVec::new(opts(Metric::ModelLoads), &["model"]).unwrap();
        let model_load_failures = IntCounterVec::new(opts(Metric::ModelLoadFailures), &["model"]).unwrap();
        let model_load_seconds = GaugeVec::new(opts(Metric::ModelLoadSeconds), &["model"]).unwrap();
        let model_unloads = IntCounterVec::new(opts(Metric::ModelUnloads), &["model", "why"]).unwrap();
        let model_evictions = IntCounterVec::new(opts(Metric::ModelEvictions), &["model"]).unwrap();
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(queue_depth.clone()),
            Box::new(batch_size.clone()),
            Box::new(batch_tokens.clone()),
            Box::new(real_tokens.clone()),
            Box::new(padding_tokens.clone()),
            Box::new(padding_share.clone()),
            Box::new(stage.clone()),
            Box::new(connections.clone()),
            Box::new(connections_closed.clone()),
            Box::new(connections_refused.clone()),
            Box::new(spans_dropped.clone()),
            Box::new(model_loads.clone()),
            Box::new(model_load_failures.clone()),
            Box::new(model_load_seconds.clone()),
            Box::new(model_unloads.clone()),
            Box::new(model_evictions.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            queue_depth,
            batch_size,
            batch_tokens,
            real_tokens,
            padding_tokens,
            padding_share,
            stage,
            connections,
            connections_closed,
            connections_refused,
            spans_dropped,
            model_loads,
            model_load_failures,
            model_load_seconds,
            model_unloads,
            model_evictions,
        }
    }

    /// Counts a model loaded, and how long the load took.
    pub fn model_loaded(&self, model: &str, took: Duration) {
        self.model_loads.with_label_values(&[model]).inc();
        self.model_load_seconds.with_label_values(&[model]).set(took.as_secs_f64());
    }

    /// Counts a model whose load failed.
    pub fn model_load_failed(&self, model: &str) {
        self.model_load_failures.with_label_values(&[model]).inc();
    }

    /// Counts a model unloaded, and why.
    pub fn model_unloaded(&self, model: &str, why: &str) {
        self.model_unloads.with_label_values(&[model, why]).inc();
    }

    /// Counts a model unloaded to make room for another.
    pub fn model_evicted(&self, model: &str) {
        self.model_evictions.with_label_values(&[model]).inc();
    }

    /// Counts a connection taken.
    pub fn connection_opened(&self) {
        self.connections.inc();
    }

    /// Counts a connection ended, and why.
    pub fn connection_closed(&self, why: ConnectionClose) {
        self.connections.dec();
        self.connections_closed.with_label_values(&[why.label()]).inc();
    }

    /// Counts a connection refused at the limit.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// Counts trace spans dropped at a full exporter queue.
    pub fn trace_spans_dropped(&self, n: u64) {
        self.spans_dropped.inc_by(n);
    }

    /// Counts a finished request.
    pub fn request(&self, route: &str, model: &str, unit: &str, status: u16) {
        self.requests.with_label_values(&[route, model, unit, &status.to_string()]).inc();
    }

    /// Sets a model's queue depth.
    pub fn queue_depth(&self, model: &str, depth: usize) {
        self.queue_depth.with_label_values(&[model]).set(depth as i64);
    }

    /// Records a forward pass of `rows` rows, `real_tokens` tokens of their own, `padded_tokens` once padded.
    pub fn batch(&self, model: &str, rows: usize, real_tokens: usize, padded_tokens: usize) {
        self.batch_size.with_label_values(&[model]).observe(rows as f64);
        self.batch_tokens.with_label_values(&[model]).observe(padded_tokens as f64);
        let real = self.real_tokens.with_label_values(&[model]);
        let padding = self.padding_tokens.with_label_values(&[model]);
        real.inc_by(real_tokens as u64);
        padding.inc_by(padded_tokens.saturating_sub(real_tokens) as u64);
        if real.get() > 0 {
            self.padding_share.with_label_values(&[model]).set(padding.get() as f64 / real.get() as f64);
        }
    }

    /// Records a stage duration in milliseconds.
    pub fn stage_ms(&self, model: &str, stage: &str, ms: f64) {
        self.stage.with_label_values(&[model, stage]).observe(ms / 1e3);
    }

    /// The text exposition, plus the supervisor's state of every model rendered as gauges and counters.
    pub fn render(&self, units: &[ModelUnits]) -> String {
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

/// The `state` label of a unit (the same words `/units` uses).
fn state_label(s: UnitState) -> &'static str {
    match s {
        UnitState::Standby => "standby",
        UnitState::Loading => "loading",
        UnitState::Warming => "warming",
        UnitState::Serving => "serving",
        UnitState::Crashed => "crashed",
        UnitState::Quarantined => "quarantined",
        UnitState::Unavailable => "unavailable",
    }
}

/// Renders the supervisor's per-unit state (as served on `/units`) in the text format.
fn render_units(models: &[ModelUnits]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let header = |out: &mut String, m: Metric, kind: &str| {
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {kind}", m.name(), m.help(), m.name());
    };
    let units = || models.iter().flat_map(|m| m.units.iter().map(move |u| (escape(&m.model), u)));

    header(&mut out, Metric::WorkerCrashes, "counter");
    for (model, u) in units() {
        for (exit, n) in &u.crashes_by_exit {
            let (name, unit) = (Metric::WorkerCrashes.name(), escape(&u.unit));
            let _ = writeln!(out, "{name}{{model=\"{model}\",unit=\"{unit}\",signal=\"{}\"}} {n}", escape(exit));
        }
    }
    header(&mut out, Metric::WorkerDeaths, "counter");
    for (model, u) in units() {
        for (cause, n) in &u.crashes_by_cause {
            let (name, unit) = (Metric::WorkerDeaths.name(), escape(&u.unit));
            let _ = writeln!(out, "{name}{{model=\"{model}\",unit=\"{unit}\",cause=\"{}\"}} {n}", escape(cause));
        }
    }
    header(&mut out, Metric::WorkerMemoryCeiling, "gauge");
    for m in models {
        if let Some(c) = &m.memory_ceiling {
            let (name, model, how) = (Metric::WorkerMemoryCeiling.name(), escape(&m.model), escape(&c.mechanism));
            let _ = writeln!(out, "{name}{{model=\"{model}\",mechanism=\"{how}\"}} {}", c.limit_bytes);
        }
    }
    type Field = fn(&UnitView) -> u64;
    let per_unit: [(Metric, &str, Field); 3] = [
        (Metric::WorkerRestarts, "counter", |u| u.restarts),
        (Metric::WorkerRecycles, "counter", |u| u.recycles),
        (Metric::WorkerResidentBytes, "gauge", |u| u.resident_bytes),
    ];
    for (metric, kind, value) in per_unit {
        header(&mut out, metric, kind);
        for (model, u) in units() {
            let _ = writeln!(out, "{}{{model=\"{model}\",unit=\"{}\"}} {}", metric.name(), escape(&u.unit), value(u));
        }
    }
    header(&mut out, Metric::UnitQuarantined, "gauge");
    for (model, u) in units() {
        let quarantined = u8::from(u.state == UnitState::Quarantined);
        let (name, unit) = (Metric::UnitQuarantined.name(), escape(&u.unit));
        let _ = writeln!(out, "{name}{{model=\"{model}\",unit=\"{unit}\"}} {quarantined}");
    }
    header(&mut out, Metric::UnitState, "gauge");
    for (model, u) in units() {
        let (name, unit, state) = (Metric::UnitState.name(), escape(&u.unit), state_label(u.state));
        let _ = writeln!(out, "{name}{{model=\"{model}\",unit=\"{unit}\",state=\"{state}\"}} 1");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::units::Isolation;

    fn unit(name: &str, state: UnitState) -> UnitView {
        // Every field spelled out, so that a field added to the view is a compile error here, not a silent zero.
        let mut v = UnitView {
            unit: name.into(),
            state,
            reason: None,
            floor: false,
            runtime: "test".into(),
            crashes: 0,
            crashes_by_exit: Default::default(),
            crashes_by_cause: Default::default(),
            crash_level: 0.0,
            last_exit: None,
            stderr_tail: None,
            predictions: 0,
            resident_bytes: 0,
            resident_after_warmup_bytes: 0,
            recycles: 0,
            restarts: 0,
            generations: 0,
            pid: None,
            workers: vec![],
            quarantined_until: None,
            load_ms: None,
            warmup_ms: None,
            warmup: vec![],
            precision: None,
            placement: vec![],
            deadline_ms: None,
            recycle_rss_limit_bytes: None,
        };
        v.restarts = 2;
        v.resident_bytes = 123 << 20;
        v.crashes_by_exit.insert("SIGSEGV".into(), 3);
        v.crashes_by_cause.insert("oom".into(), 2);
        v
    }

    #[test]
    fn renders_the_supervisor_view_from_its_fields() {
        let m = ModelUnits {
            model: "m\"x".into(),
            chain: vec!["ort:cpu".into(), "candle:cpu".into()],
            serving: Some("candle:cpu".into()),
            isolation: Isolation::Process,
            workers: 1,
            queued: 0,
            units: vec![unit("ort:cpu", UnitState::Quarantined), unit("candle:cpu", UnitState::Serving)],
            inputs: vec![],
            outputs: vec![],
            memory_ceiling: Some(crate::api::units::MemoryCeiling {
                limit_bytes: 400 << 20,
                mechanism: "rlimit_data".into(),
                cgroup_parent: None,
                why_not_cgroup: None,
            }),
        };
        let text = Metrics::new().render(&[m]);
        for line in [
            "bulkhead_worker_crashes_total{model=\"m\\\"x\",unit=\"ort:cpu\",signal=\"SIGSEGV\"} 3",
            "bulkhead_worker_restarts_total{model=\"m\\\"x\",unit=\"candle:cpu\"} 2",
            "bulkhead_worker_resident_bytes{model=\"m\\\"x\",unit=\"ort:cpu\"} 128974848",
            "bulkhead_unit_quarantined{model=\"m\\\"x\",unit=\"ort:cpu\"} 1",
            "bulkhead_unit_state{model=\"m\\\"x\",unit=\"candle:cpu\",state=\"serving\"} 1",
            "bulkhead_worker_deaths_total{model=\"m\\\"x\",unit=\"ort:cpu\",cause=\"oom\"} 2",
            "bulkhead_worker_memory_ceiling_bytes{model=\"m\\\"x\",mechanism=\"rlimit_data\"} 419430400",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        // Each family's samples follow its own TYPE line.
        let state_type = text.find("# TYPE bulkhead_unit_state").unwrap();
        let last_quarantined = text.rfind("bulkhead_unit_quarantined{").unwrap();
        assert!(last_quarantined < state_type);
    }

    #[test]
    fn state_labels_are_the_words_of_units() {
        use UnitState::*;
        for s in [Standby, Loading, Warming, Serving, Crashed, Quarantined, Unavailable] {
            assert_eq!(serde_json::to_value(s).unwrap(), state_label(s));
        }
    }
}
