//! The HTTP layer's limits on a real server: half-open connections are closed by the header timeout, idle
//! keep-alive connections by the keep-alive timeout, a request past `--request-timeout-s` gets a 504 JSON answer,
//! and at `--max-connections` a silent connection gives way to a new one while a surplus connection, when all have
//! sent requests, gets a 503 JSON answer. No timing is asserted: each check waits (with a generous bound) for the
//! server to act.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{need, Server};

/// Reads until the server closes the connection; what it sent.
fn read_until_closed(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut out = vec![];
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return String::from_utf8_lossy(&out).into_owned(),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return String::from_utf8_lossy(&out).into_owned()
            }
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
}

fn metric(server: &Server, line_start: &str) -> f64 {
    metric_in(&server.request("GET", "/metrics", &[], None).body, line_start)
}

fn metric_in(body: &str, line_start: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{body}"))
}

/// Sends one embeddings request on a keep-alive connection and reads its answer (the connection stays open).
fn request_on(s: &mut TcpStream, body: &str) -> String {
    let req = format!(
        "POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange_on(s, &req)
}

/// Writes one raw request on a keep-alive connection and reads its whole answer (the connection stays open).
fn exchange_on(s: &mut TcpStream, req: &str) -> String {
    s.write_all(req.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut out = vec![];
    let mut buf = [0u8; 16 << 10];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before answering: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
    }
}

#[test]
fn half_open_and_idle_connections_are_closed_and_slow_requests_time_out() {
    if need(common::minilm_folder(), "the all-MiniLM-L6-v2 package").is_none() {
        return;
    }
    let faults = r#"[{"unit": "ort:cpu", "kind": "slow", "ms": 3000, "match": "slow please"}]"#;
    let server = Server::start(
        &[
            "--compute-units",
            "ort:cpu",
            "--header-timeout-s",
            "1",
            "--keep-alive-timeout-s",
            "2",
            "--request-timeout-s",
            "1.5",
        ],
        &[("BULKHEAD_FAULTS", faults)],
    );

    // Half-open: part of a request head, then nothing. The server closes it without answering.
    let mut half = TcpStream::connect(&server.addr).unwrap();
    half.write_all(b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\n").unwrap();
    let said = read_until_closed(&mut half);
    assert!(said.is_empty(), "a half-open connection gets no answer, only a close: {said:?}");
    // Silent from the start: closed too.
    let mut silent = TcpStream::connect(&server.addr).unwrap();
    assert!(read_until_closed(&mut silent).is_empty());

    // Idle keep-alive: one request answered, then the connection is closed once idle.
    let mut idle = TcpStream::connect(&server.addr).unwrap();
    let said = request_on(&mut idle, r#"{"input": "keep me alive"}"#);
    assert!(said.starts_with("HTTP/1.1 200"), "{said}");
    assert!(read_until_closed(&mut idle).is_empty());

    // A request past the deadline: 504 with the JSON error body; the server stays healthy.
    let slow = server.post_json("/v1/embeddings", &serde_json::json!({"input": "slow please"}));
    assert_eq!(slow.status, 504, "{}", slow.body);
    let e = slow.json();
    assert_eq!(e["error"]["type"], "timeout_error", "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("--request-timeout-s"), "{e}");

    assert!(metric(&server, "bulkhead_http_connections_closed_total{why=\"header_timeout\"}") >= 2.0);
    assert!(metric(&server, "bulkhead_http_connections_closed_total{why=\"idle_timeout\"}") >= 1.0);
    assert!(
        metric(&server, "bulkhead_requests_total{model=\"\",route=\"/v1/embeddings\",status=\"504\",unit=\"\"}") >= 1.0
    );
    assert_eq!(server.request("GET", "/health", &[], None).status, 200);
}

/// At the limit, a connection that has not sent a request gives way to a new one; when every connection has sent
/// one, the newcomer is answered 503 with the JSON error body. (Connections are accepted in arrival order.)
#[test]
fn at_the_connection_limit_silent_connections_give_way_and_the_rest_is_refused() {
    if need(common::minilm_folder(), "the all-MiniLM-L6-v2 package").is_none() {
        return;
    }
    let server = Server::start(
        &[
            "--compute-units",
            "ort:cpu",
            "--max-connections",
            "4",
            "--header-timeout-s",
            "60",
            "--keep-alive-timeout-s",
            "60",
        ],
        &[],
    );
    let ok = |s: &mut TcpStream, text: &str| {
        let said = request_on(s, &serde_json::json!({ "input": text }).to_string());
        assert!(said.starts_with("HTTP/1.1 200"), "{said}");
    };
    // Three clients that have sent a request (idle now), and one connection that never sends anything.
    let mut clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&server.addr).unwrap()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        ok(c, &format!("client {i}"));
    }
    let mut silent = TcpStream::connect(&server.addr).unwrap();
    // A fifth connection with a request: the silent one gives way, and it is served.
    let mut fifth = TcpStream::connect(&server.addr).unwrap();
    ok(&mut fifth, "a newcomer with a request");
    assert!(read_until_closed(&mut silent).is_empty(), "the silent connection was closed without an answer");
    // Every connection has sent a request now: one more is refused cleanly.
    let mut extra = TcpStream::connect(&server.addr).unwrap();
    let said = read_until_closed(&mut extra);
    assert!(said.starts_with("HTTP/1.1 503"), "{said}");
    assert!(said.to_ascii_lowercase().contains("retry-after: 1"), "{said}");
    let json: serde_json::Value = serde_json::from_str(said.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["error"]["type"], "overloaded_error", "{json}");
    assert!(json["error"]["message"].as_str().unwrap().contains("--max-connections"), "{json}");
    // The clients that were served keep their connections.
    for (i, c) in clients.iter_mut().enumerate() {
        ok(c, &format!("client {i} again"));
    }
    // The metrics are read on a connection the server already holds: a new one could be refused until the
    // server has noticed the others close, which no client can wait for.
    let metrics = exchange_on(&mut fifth, "GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metric_in(&metrics, "bulkhead_http_connections_closed_total{why=\"gave_way\"}") >= 1.0);
    assert!(metric_in(&metrics, "bulkhead_http_connections_refused_total") >= 1.0);
}
