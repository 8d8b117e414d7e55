//! The HTTP layer's limits on a real server: half-open connections are closed by the header timeout, idle
//! keep-alive connections by the keep-alive timeout, one connection beyond `--max-connections` gets a 503 JSON
//! answer, and a request past `--request-timeout-s` gets a 504 JSON answer. No timing is asserted: each check waits
//! (with a generous bound) for the server to act.

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
    let body = server.request("GET", "/metrics", &[], None).body;
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{body}"))
}

#[test]
fn slow_idle_and_surplus_connections_are_closed_and_slow_requests_time_out() {
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
            "--max-connections",
            "6",
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

    // Idle keep-alive: one request answered, then the connection is closed once idle.
    let mut idle = TcpStream::connect(&server.addr).unwrap();
    let body = r#"{"input": "keep me alive"}"#;
    let req = format!(
        "POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    idle.write_all(req.as_bytes()).unwrap();
    let said = read_until_closed(&mut idle);
    assert!(said.starts_with("HTTP/1.1 200"), "{said}");

    // The connection limit: fill it with silent connections; one more is refused with a JSON 503.
    let held: Vec<TcpStream> = (0..6).map(|_| TcpStream::connect(&server.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(&server.addr).unwrap();
    let said = read_until_closed(&mut extra);
    assert!(said.starts_with("HTTP/1.1 503"), "{said}");
    assert!(said.to_ascii_lowercase().contains("retry-after: 1"), "{said}");
    let json: serde_json::Value = serde_json::from_str(said.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["error"]["type"], "overloaded_error", "{json}");
    assert!(json["error"]["message"].as_str().unwrap().contains("--max-connections"), "{json}");
    // The silent connections are closed by the header timeout, and the server serves again.
    for mut c in held {
        read_until_closed(&mut c);
    }
    let ok = server.post_json("/v1/embeddings", &serde_json::json!({"input": "after the storm"}));
    assert_eq!(ok.status, 200, "{}", ok.body);

    // A request past the deadline: 504 with the JSON error body; the server stays healthy.
    let slow = server.post_json("/v1/embeddings", &serde_json::json!({"input": "slow please"}));
    assert_eq!(slow.status, 504, "{}", slow.body);
    let e = slow.json();
    assert_eq!(e["error"]["type"], "timeout_error", "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("--request-timeout-s"), "{e}");

    assert!(metric(&server, "bulkhead_http_connections_closed_total{why=\"header_timeout\"}") >= 7.0);
    assert!(metric(&server, "bulkhead_http_connections_closed_total{why=\"idle_timeout\"}") >= 1.0);
    assert!(metric(&server, "bulkhead_http_connections_refused_total") >= 1.0);
    assert!(
        metric(&server, "bulkhead_requests_total{model=\"\",route=\"/v1/embeddings\",status=\"504\",unit=\"\"}") >= 1.0
    );
    assert_eq!(server.request("GET", "/health", &[], None).status, 200);
}
