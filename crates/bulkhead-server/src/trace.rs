//! OpenTelemetry traces of requests, exported over OTLP/HTTP (`--otlp-endpoint`, off by default).
//!
//! Every request becomes one server span (`POST /v1/embeddings`) with the model, the unit that computed it, its
//! weight precision, the worker's pid and the retries as attributes, and, for inference requests, one child span
//! per stage: `parse` (reading and parsing the body), `tokenize`, `queue` (the batcher, the supervisor and the
//! pipes), `worker run` (with its own children `infer` and `post`) and `respond` (encoding the response). The
//! stages' durations are the ones measured for `Server-Timing`; they are laid end to end backwards from the moment
//! the answer came back, so the children tile their parent.
//!
//! A W3C `traceparent` header from the client is honoured: the server span joins the client's trace as a child of
//! the client's span, and a client that did not sample its trace (flags `00`) gets no spans exported (parent-based
//! sampling, OpenTelemetry's default). A missing or malformed header starts a new trace.
//!
//! Spans are handed to one exporter thread through a bounded queue (a full queue drops spans, counted in
//! `bulkhead_trace_spans_dropped_total`, never blocks a request) and posted as OTLP/HTTP JSON
//! (`ExportTraceServiceRequest`) to `ENDPOINT/v1/traces` about once a second, or as soon as 512 spans are waiting.
//! An unreachable collector costs a warning a minute, never a request.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bulkhead_core::{Precision, Unit};
use bulkhead_embed::StageTiming;
use serde_json::{json, Value};

use crate::metrics::Metrics;

/// Spans waiting for the exporter at most; past it new spans are dropped (and counted).
const QUEUE: usize = 4096;
/// Spans posted in one request at most.
const MAX_BATCH: usize = 512;

/// Where and how traces are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceConfig {
    /// The collector's OTLP/HTTP base URL (`http://localhost:4318`); spans go to `ENDPOINT/v1/traces` (an endpoint
    /// that already ends in `/v1/traces` is used as it is).
    pub endpoint: String,
    /// `service.name` of the resource (default `bulkhead`).
    pub service_name: String,
    /// How often waiting spans are posted (default 1 s).
    pub flush_every: Duration,
}

impl TraceConfig {
    /// Traces to `endpoint` with the defaults.
    pub fn new(endpoint: impl Into<String>) -> TraceConfig {
        TraceConfig { endpoint: endpoint.into(), service_name: "bulkhead".into(), flush_every: Duration::from_secs(1) }
    }

    /// The URL spans are posted to.
    pub fn traces_url(&self) -> String {
        let base = self.endpoint.trim_end_matches('/');
        if base.ends_with("/v1/traces") {
            base.to_string()
        } else {
            format!("{base}/v1/traces")
        }
    }
}

/// A W3C trace context (`traceparent: 00-<trace id>-<parent span id>-<flags>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id (16 bytes, not all zero).
    pub trace_id: [u8; 16],
    /// The caller's span id (8 bytes, not all zero).
    pub span_id: [u8; 8],
    /// Whether the caller samples this trace (flag bit 0).
    pub sampled: bool,
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl TraceParent {
    /// Parses a `traceparent` header value as the W3C Trace Context recommendation says: lower-case hex, version
    /// `ff` invalid, ids not all zero; a later version may carry more fields after the flags. `None` when invalid.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let value = value.trim();
        let mut parts = value.split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        let version = hex_bytes::<1>(version)?[0];
        if version == 0xff || (version == 0 && parts.next().is_some()) {
            return None;
        }
        let trace_id = hex_bytes::<16>(trace)?;
        let span_id = hex_bytes::<8>(span)?;
        let flags = hex_bytes::<1>(flags)?[0];
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent { trace_id, span_id, sampled: flags & 1 == 1 })
    }

    /// The header value.
    pub fn to_header(&self) -> String {
        format!("00-{}-{}-{:02x}", hex(&self.trace_id), hex(&self.span_id), u8::from(self.sampled))
    }
}

/// What an inference response tells its trace: who computed it and how long each stage took. Inserted into the
/// response's extensions by the handlers' header helper.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AnswerFacts {
    /// The unit that computed it.
    pub unit: Unit,
    /// Its weight precision, when known.
    pub precision: Option<Precision>,
    /// The worker process that computed it (`None` in-process).
    pub worker_pid: Option<u32>,
    /// Workers the request was retried after.
    pub retries: u32,
    /// The stage durations.
    pub timing: StageTiming,
    /// When the answer was back in the handler (the end of `worker run`, the start of `respond`).
    pub answered_at: Instant,
}

/// One finished request, as the router's middleware saw it.
pub(crate) struct RequestRecord {
    /// The client's trace context, if it sent a valid one.
    pub parent: Option<TraceParent>,
    /// `GET`, `POST`.
    pub method: String,
    /// The route template (`/v2/models/{name}/infer`) or the path for unmatched ones.
    pub route: String,
    /// The response status.
    pub status: u16,
    /// The model the response was for (empty when none).
    pub model: String,
    /// Wall-clock and monotonic start of the request.
    pub started: (SystemTime, Instant),
    /// Monotonic end (the response head is ready).
    pub ended: Instant,
    /// What the answer said, for inference responses.
    pub facts: Option<AnswerFacts>,
}

/// A random, non-zero id of `N` bytes.
fn random_id<const N: usize>() -> [u8; N] {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let mut out = [0u8; N];
    while out.iter().all(|&b| b == 0) {
        for chunk in out.chunks_mut(8) {
            // Every RandomState has fresh random keys (seeded by the OS once per thread, then stepped).
            let mut h = RandomState::new().build_hasher();
            h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
            let v = h.finish().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    out
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()).to_string()
}

fn attr(key: &str, value: Value) -> Value {
    let value = match value {
        Value::String(s) => json!({ "stringValue": s }),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({ "intValue": n.to_string() }),
        Value::Number(n) => json!({ "doubleValue": n }),
        Value::Bool(b) => json!({ "boolValue": b }),
        other => json!({ "stringValue": other.to_string() }),
    };
    json!({ "key": key, "value": value })
}

/// The name of a precision as the spans give it.
fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::Fp32 => "fp32",
        Precision::Fp16 => "fp16",
        Precision::Bf16 => "bf16",
        Precision::Int8 => "int8",
        Precision::Unknown => "unknown",
    }
}

/// Span kinds of OTLP (`SPAN_KIND_INTERNAL`, `SPAN_KIND_SERVER`).
const INTERNAL: u8 = 1;
const SERVER: u8 = 2;

struct SpanOut<'a> {
    trace_id: &'a str,
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    name: &'a str,
    kind: u8,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<Value>,
    error: bool,
}

impl SpanOut<'_> {
    fn json(self) -> Value {
        let mut span = json!({
            "traceId": self.trace_id,
            "spanId": hex(&self.span_id),
            "name": self.name,
            "kind": self.kind,
            "startTimeUnixNano": nanos(self.start),
            "endTimeUnixNano": nanos(self.end.max(self.start)),
            "attributes": self.attributes,
            "status": { "code": if self.error { 2 } else { 0 } },
        });
        if let Some(p) = self.parent {
            span["parentSpanId"] = json!(hex(&p));
        }
        span
    }
}

/// The spans of one request in OTLP JSON: the server span first, then the stages.
pub(crate) fn spans_of(r: &RequestRecord) -> Vec<Value> {
    let trace_id = hex(&r.parent.map_or_else(random_id::<16>, |p| p.trace_id));
    let root_id = random_id::<8>();
    let (wall0, mono0) = r.started;
    let at = |t: Instant| wall0 + t.saturating_duration_since(mono0);
    let end = at(r.ended);
    let mut attributes = vec![
        attr("http.request.method", json!(r.method)),
        attr("http.route", json!(r.route)),
        attr("http.response.status_code", json!(r.status)),
    ];
    if !r.model.is_empty() {
        attributes.push(attr("bulkhead.model", json!(r.model)));
    }
    if let Some(f) = &r.facts {
        attributes.push(attr("bulkhead.unit", json!(f.unit.to_string())));
        if let Some(p) = f.precision {
            attributes.push(attr("bulkhead.precision", json!(precision_name(p))));
        }
        if let Some(pid) = f.worker_pid {
            attributes.push(attr("bulkhead.worker.pid", json!(pid)));
        }
        attributes.push(attr("bulkhead.retries", json!(f.retries)));
    }
    let name = format!("{} {}", r.method, r.route);
    let mut out = vec![SpanOut {
        trace_id: &trace_id,
        span_id: root_id,
        parent: r.parent.map(|p| p.span_id),
        name: &name,
        kind: SERVER,
        start: wall0,
        end,
        attributes,
        error: r.status >= 500,
    }
    .json()];
    let Some(f) = &r.facts else { return out };

    // The stages, backwards from the moment the answer was back in the handler.
    let ms = |v: f64| Duration::from_secs_f64((v.max(0.0)) / 1e3);
    let answered = at(f.answered_at).min(end).max(wall0);
    let post_start = answered.checked_sub(ms(f.timing.post_ms)).unwrap_or(wall0).max(wall0);
    let infer_start = post_start.checked_sub(ms(f.timing.infer_ms)).unwrap_or(wall0).max(wall0);
    let queue_start = infer_start.checked_sub(ms(f.timing.queue_ms)).unwrap_or(wall0).max(wall0);
    let tokenize_start = queue_start.checked_sub(ms(f.timing.tokenize_ms)).unwrap_or(wall0).max(wall0);
    let child =
        |name: &'static str, start: SystemTime, end: SystemTime, parent: [u8; 8], attributes: Vec<Value>| SpanOut {
            trace_id: &trace_id,
            span_id: random_id::<8>(),
            parent: Some(parent),
            name,
            kind: INTERNAL,
            start,
            end,
            attributes,
            error: false,
        };
    let run = child("worker run", infer_start, answered, root_id, {
        let mut a = vec![attr("bulkhead.unit", json!(f.unit.to_string()))];
        if let Some(pid) = f.worker_pid {
            a.push(attr("bulkhead.worker.pid", json!(pid)));
        }
        a
    });
    let run_id = run.span_id;
    out.push(child("parse", wall0, tokenize_start, root_id, vec![]).json());
    out.push(child("tokenize", tokenize_start, queue_start, root_id, vec![]).json());
    out.push(child("queue", queue_start, infer_start, root_id, vec![]).json());
    out.push(run.json());
    out.push(child("infer", infer_start, post_start, run_id, vec![]).json());
    out.push(child("post", post_start, answered, run_id, vec![]).json());
    out.push(child("respond", answered, end, root_id, vec![]).json());
    out
}

/// The OTLP `ExportTraceServiceRequest` body holding `spans`.
pub(crate) fn export_body(service_name: &str, spans: Vec<Value>) -> Value {
    json!({
        "resourceSpans": [{
            "resource": { "attributes": [
                attr("service.name", json!(service_name)),
                attr("service.version", json!(env!("CARGO_PKG_VERSION"))),
                attr("process.pid", json!(std::process::id())),
            ]},
            "scopeSpans": [{
                "scope": { "name": "bulkhead", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans,
            }],
        }],
    })
}

/// The exporter: a bounded queue in front of one thread that posts batches of spans.
pub struct Tracer {
    tx: Mutex<Option<SyncSender<Vec<Value>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
}

impl Tracer {
    /// Starts the exporter thread.
    pub fn start(config: TraceConfig, metrics: Arc<Metrics>) -> Tracer {
        let (tx, rx) = sync_channel::<Vec<Value>>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || export_loop(&config, rx))
            .map_err(|e| tracing::warn!("traces are off: the exporter thread did not start: {e}"))
            .ok();
        let tx = thread.as_ref().map(|_| tx);
        Tracer { tx: Mutex::new(tx), thread: Mutex::new(thread), metrics }
    }

    /// Queues the spans of one request (never blocks: a full queue drops them, counted).
    pub(crate) fn record(&self, r: &RequestRecord) {
        if r.parent.is_some_and(|p| !p.sampled) {
            return;
        }
        let spans = spans_of(r);
        let n = spans.len() as u64;
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = tx.as_ref() else { return };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(spans) {
            self.metrics.trace_spans_dropped(n);
        }
    }

    /// Posts what is waiting and stops the exporter (waiting at most `timeout`).
    pub fn shutdown(&self, timeout: Duration) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        let deadline = Instant::now() + timeout;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.shutdown(Duration::from_secs(2));
    }
}

fn export_loop(config: &TraceConfig, rx: Receiver<Vec<Value>>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .user_agent(format!("bulkhead/{}", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let url = config.traces_url();
    let mut pending: Vec<Value> = vec![];
    let mut last_flush = Instant::now();
    let mut last_warning: Option<Instant> = None;
    let mut post = |spans: Vec<Value>| {
        let body = export_body(&config.service_name, spans).to_string();
        let problem = match agent.post(&url).header("content-type", "application/json").send(&body) {
            Ok(resp) if resp.status().is_success() => None,
            Ok(resp) => Some(format!("it answered {}", resp.status())),
            Err(e) => Some(e.to_string()),
        };
        if let Some(problem) = problem {
            if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                tracing::warn!("traces were not exported to {url}: {problem} (warned at most once a minute)");
                last_warning = Some(Instant::now());
            }
        }
    };
    loop {
        let wait = config.flush_every.saturating_sub(last_flush.elapsed());
        let closed = match rx.recv_timeout(wait) {
            Ok(spans) => {
                pending.extend(spans);
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        let due = last_flush.elapsed() >= config.flush_every;
        while pending.len() >= MAX_BATCH || ((due || closed) && !pending.is_empty()) {
            let rest = pending.split_off(pending.len().min(MAX_BATCH));
            post(std::mem::replace(&mut pending, rest));
        }
        if due {
            last_flush = Instant::now();
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parses_as_the_recommendation_says() {
        let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(hex(&tp.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&tp.span_id), "00f067aa0ba902b7");
        assert!(tp.sampled);
        assert_eq!(tp.to_header(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert!(!TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().sampled);
        // A later version may add fields; version 00 may not.
        assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn random_ids_are_nonzero_and_differ() {
        let a = random_id::<16>();
        let b = random_id::<16>();
        assert_ne!(a, [0; 16]);
        assert_ne!(a, b);
        assert_ne!(random_id::<8>(), random_id::<8>());
    }

    #[test]
    fn stage_spans_tile_the_request_and_join_the_clients_trace() {
        let t0 = Instant::now();
        let w0 = SystemTime::now();
        let timing = StageTiming { tokenize_ms: 2.0, queue_ms: 3.0, infer_ms: 10.0, post_ms: 1.0 };
        let parent = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let record = RequestRecord {
            parent,
            method: "POST".into(),
            route: "/v1/embeddings".into(),
            status: 200,
            model: "m".into(),
            started: (w0, t0),
            ended: t0 + Duration::from_millis(25),
            facts: Some(AnswerFacts {
                unit: Unit::ORT_CPU,
                precision: Some(Precision::Fp32),
                worker_pid: Some(42),
                retries: 0,
                timing,
                answered_at: t0 + Duration::from_millis(20),
            }),
        };
        let spans = spans_of(&record);
        let names: Vec<&str> = spans.iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["POST /v1/embeddings", "parse", "tokenize", "queue", "worker run", "infer", "post", "respond"]
        );
        let root = &spans[0];
        assert_eq!(root["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(root["parentSpanId"], "00f067aa0ba902b7");
        let ns = |s: &Value, k: &str| s[k].as_str().unwrap().parse::<u128>().unwrap();
        let dur_ms = |s: &Value| (ns(s, "endTimeUnixNano") - ns(s, "startTimeUnixNano")) as f64 / 1e6;
        assert!((dur_ms(root) - 25.0).abs() < 1e-3);
        let by = |n: &str| spans.iter().find(|s| s["name"] == n).unwrap();
        for (n, want) in
            [("parse", 4.0), ("tokenize", 2.0), ("queue", 3.0), ("infer", 10.0), ("post", 1.0), ("respond", 5.0)]
        {
            assert!((dur_ms(by(n)) - want).abs() < 1e-3, "{n}: {}", dur_ms(by(n)));
        }
        // Children of the server span tile it; infer and post are children of the worker run.
        for n in ["parse", "tokenize", "queue", "worker run", "respond"] {
            assert_eq!(by(n)["parentSpanId"], root["spanId"], "{n}");
            assert_eq!(by(n)["traceId"], root["traceId"]);
        }
        for n in ["infer", "post"] {
            assert_eq!(by(n)["parentSpanId"], by("worker run")["spanId"], "{n}");
        }
        assert_eq!(ns(by("parse"), "startTimeUnixNano"), ns(root, "startTimeUnixNano"));
        assert_eq!(ns(by("respond"), "endTimeUnixNano"), ns(root, "endTimeUnixNano"));
        let attrs: Vec<&str> =
            root["attributes"].as_array().unwrap().iter().map(|a| a["key"].as_str().unwrap()).collect();
        for k in ["bulkhead.unit", "bulkhead.precision", "bulkhead.worker.pid", "bulkhead.model", "http.route"] {
            assert!(attrs.contains(&k), "{k} in {attrs:?}");
        }
    }

    #[test]
    fn a_request_without_an_answer_is_one_span_and_a_5xx_is_an_error() {
        let t0 = Instant::now();
        let record = RequestRecord {
            parent: None,
            method: "POST".into(),
            route: "/v1/embeddings".into(),
            status: 503,
            model: String::new(),
            started: (SystemTime::now(), t0),
            ended: t0,
            facts: None,
        };
        let spans = spans_of(&record);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0]["status"]["code"], 2);
        assert!(spans[0].get("parentSpanId").is_none());
        assert_eq!(spans[0]["traceId"].as_str().unwrap().len(), 32);
    }

    #[test]
    fn the_url_takes_the_traces_path_once() {
        assert_eq!(TraceConfig::new("http://h:4318").traces_url(), "http://h:4318/v1/traces");
        assert_eq!(TraceConfig::new("http://h:4318/").traces_url(), "http://h:4318/v1/traces");
        assert_eq!(TraceConfig::new("http://h:4318/v1/traces").traces_url(), "http://h:4318/v1/traces");
    }
}
