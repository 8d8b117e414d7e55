//! OpenTelemetry traces through a real server: an OTLP/HTTP receiver stand-in (a plain TCP listener that keeps
//! every posted `ExportTraceServiceRequest`) gets one server span per request with a child per stage, joined to the
//! client's W3C `traceparent`; an unsampled client trace exports nothing; an unreachable collector costs no request.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{need, Server};
use serde_json::{json, Value};

/// A collector stand-in: every JSON body posted to `/v1/traces`, answered 200.
struct Collector {
    addr: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let bodies = Arc::new(Mutex::new(vec![]));
        let paths = Arc::new(Mutex::new(vec![]));
        let (b, p) = (bodies.clone(), paths.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (b, p) = (b.clone(), p.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut stream = stream;
                    // Keep-alive: one request after another on the connection.
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                        let mut length = 0;
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            if h.trim().is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                if k.trim().eq_ignore_ascii_case("content-length") {
                                    length = v.trim().parse().unwrap_or(0);
                                }
                            }
                        }
                        let mut body = vec![0; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        p.lock().unwrap().push(path);
                        if let Ok(v) = serde_json::from_slice(&body) {
                            b.lock().unwrap().push(v);
                        }
                        let _ = stream.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
                        );
                    }
                });
            }
        });
        Collector { addr, bodies, paths }
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Value> {
        let bodies = self.bodies.lock().unwrap();
        bodies
            .iter()
            .flat_map(|b| b["resourceSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|rs| rs["scopeSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|ss| ss["spans"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// The spans of `trace_id`, waiting up to 20 s until at least `n` arrived.
    fn trace(&self, trace_id: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans: Vec<Value> = self.spans().into_iter().filter(|s| s["traceId"] == trace_id).collect();
            if spans.len() >= n || Instant::now() > deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"].as_array()?.iter().find(|a| a["key"] == key).map(|a| &a["value"])
}

fn nanos(span: &Value, key: &str) -> u128 {
    span[key].as_str().unwrap().parse().unwrap()
}

fn named<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no span {name:?} in {spans:#?}"))
}

#[test]
fn requests_become_spans_joined_to_the_clients_trace() {
    if need(common::minilm_folder(), "the all-MiniLM-L6-v2 package").is_none() {
        return;
    }
    let collector = Collector::start();
    let endpoint = format!("http://{}", collector.addr);
    let server = Server::start(&["--compute-units", "ort:cpu", "--otlp-endpoint", &endpoint], &[]);
    let units = server.request("GET", "/units", &[], None).json();
    let model = units["models"].as_object().unwrap().values().next().unwrap().clone();
    let pid = model["units"].as_array().unwrap().iter().find_map(|u| u["pid"].as_u64()).expect("a worker pid");

    // Not sampled by the client: nothing exported.
    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let r = server.request(
        "POST",
        "/v1/embeddings",
        &[("content-type", "application/json"), ("traceparent", unsampled)],
        Some(&json!({"input": "not traced"}).to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // Sampled: the server span is a child of the client's span, the stages its children.
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{client_trace}-{client_span}-01");
    let r = server.request(
        "POST",
        "/v1/embeddings",
        &[("content-type", "application/json"), ("traceparent", traceparent.as_str())],
        Some(&json!({"input": ["a traced request", "with two texts"]}).to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    let spans = collector.trace(client_trace, 8);
    let names: Vec<&str> = spans.iter().map(|s| s["name"].as_str().unwrap()).collect();
    let root = named(&spans, "POST /v1/embeddings");
    assert_eq!(root["parentSpanId"], client_span, "{root:#}");
    assert_eq!(root["kind"], 2, "a server span");
    assert_eq!(attr(root, "bulkhead.unit"), Some(&json!({"stringValue": "ort:cpu"})));
    assert_eq!(attr(root, "bulkhead.precision"), Some(&json!({"stringValue": "fp32"})));
    assert_eq!(attr(root, "bulkhead.worker.pid"), Some(&json!({"intValue": pid.to_string()})), "{root:#}");
    assert_eq!(attr(root, "http.response.status_code"), Some(&json!({"intValue": "200"})));
    assert!(attr(root, "bulkhead.model").is_some(), "{root:#}");
    let (start, end) = (nanos(root, "startTimeUnixNano"), nanos(root, "endTimeUnixNano"));
    for n in ["parse", "tokenize", "queue", "worker run", "respond"] {
        let s = named(&spans, n);
        assert_eq!(s["parentSpanId"], root["spanId"], "{n}: {names:?}");
        assert!(start <= nanos(s, "startTimeUnixNano") && nanos(s, "endTimeUnixNano") <= end, "{n} inside the request");
    }
    let run = named(&spans, "worker run");
    for n in ["infer", "post"] {
        assert_eq!(named(&spans, n)["parentSpanId"], run["spanId"], "{n}");
    }
    assert!(nanos(named(&spans, "infer"), "endTimeUnixNano") > nanos(named(&spans, "infer"), "startTimeUnixNano"));

    // The unsampled trace never arrived, though later spans did.
    assert!(collector.spans().iter().all(|s| s["traceId"] != "0af7651916cd43dd8448eb211c80319c"));

    // No traceparent: a trace of its own; a malformed one is ignored the same way. A 4xx is one span, not an error.
    let r = server.request(
        "POST",
        "/embed",
        &[("content-type", "application/json"), ("traceparent", "garbage")],
        Some("{not json"),
    );
    assert_eq!(r.status, 400);
    let deadline = Instant::now() + Duration::from_secs(20);
    let bad = loop {
        let found = collector.spans().into_iter().find(|s| s["name"] == "POST /embed");
        if let Some(s) = found {
            break s;
        }
        assert!(Instant::now() < deadline, "the 400's span never arrived");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(bad.get("parentSpanId").is_none(), "{bad:#}");
    assert_eq!(bad["traceId"].as_str().unwrap().len(), 32);
    assert_eq!(attr(&bad, "http.response.status_code"), Some(&json!({"intValue": "400"})));
    assert_eq!(bad["status"]["code"], 0, "a client error is not the server's");
    assert!(collector.paths.lock().unwrap().iter().all(|p| p == "/v1/traces"));
}

#[test]
fn an_unreachable_collector_costs_no_request_and_a_bad_endpoint_is_a_usage_error() {
    if need(common::minilm_folder(), "the all-MiniLM-L6-v2 package").is_none() {
        return;
    }
    // A port nothing listens on.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let server = Server::start(&["--compute-units", "ort:cpu", "--otlp-endpoint", &format!("http://{dead}")], &[]);
    for i in 0..5 {
        let r = server.post_json("/embed", &json!({"inputs": format!("request {i}")}));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(server.post_json("/embed", &json!({"inputs": "still served"})).status, 200);
    assert!(server.stderr().contains("traces were not exported"), "{}", server.stderr());

    let out = common::bulkhead(&["serve", "--port", "0", "--otlp-endpoint", "localhost:4318"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("--otlp-endpoint"), "{}", common::stderr(&out));
}
