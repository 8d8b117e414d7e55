//! Hostile inputs against a real server (port 0, the real MiniLM on `ort:cpu`), each followed by a normal request
//! that must still be answered: ten thousand one-character inputs in one request (refused, naming the limit and its
//! flag), JSON nested a hundred thousand levels deep (400, no stack overflow), a body that stops before its
//! `Content-Length` and a connection closed mid-body, a 7 MB word without a space and a million emoji (one unknown
//! token each, as the tokenizer of transformers makes them; answered with or without truncation), 7 MB of prose
//! (answered truncated, refused without). No timing is asserted here (`scripts/bench_long_texts.sh` measures).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{need, HttpResponse, Server};
use serde_json::json;

/// The server still answers a normal request, with a 384-dimension vector.
fn still_serves(server: &Server, after: &str) {
    let r = server.post_json("/embed", &json!({"inputs": "a normal request after the bad one"}));
    assert_eq!(r.status, 200, "after {after}: {}\n{}", r.body, server.stderr());
    assert_eq!(r.json()[0].as_array().map(Vec::len), Some(384), "after {after}");
}

fn error_type(r: &HttpResponse) -> String {
    r.json()["error"]["type"].as_str().unwrap_or("").to_string()
}

fn start() -> Option<Server> {
    need(common::minilm_folder(), "the all-MiniLM-L6-v2 package")?;
    Some(Server::start(&["--compute-units", "ort:cpu"], &[]))
}

#[test]
fn ten_thousand_one_character_inputs_are_refused_naming_the_limit() {
    let Some(server) = start() else { return };
    let inputs: Vec<String> = (0..10_000).map(|i| ((b'a' + (i % 26) as u8) as char).to_string()).collect();
    for (path, body) in [
        ("/embed", json!({"inputs": inputs})),
        ("/v1/embeddings", json!({"input": inputs, "model": "all-MiniLM-L6-v2"})),
    ] {
        let r = server.post_json(path, &body);
        assert_eq!(r.status, 422, "{path}: {}", r.body);
        let msg = r.json()["error"]["message"].as_str().unwrap_or("").to_string();
        assert!(msg.contains("10000 inputs") && msg.contains("2048"), "{path}: {msg}");
        assert!(msg.contains("--max-client-batch-size"), "{path}: {msg}");
        still_serves(&server, "10,000 inputs");
    }
    // At the limit, every input is answered.
    let r = server.post_json("/embed", &json!({"inputs": &inputs[..2048]}));
    assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(300)]);
    assert_eq!(r.json().as_array().map(Vec::len), Some(2048));
    drop(server);

    // The TEI name of the option sets the same limit.
    let Some(server) = need(common::minilm_folder(), "MiniLM")
        .map(|_| Server::start(&["--compute-units", "ort:cpu", "--max-client-batch-size", "32"], &[]))
    else {
        return;
    };
    let r = server.post_json("/embed", &json!({"inputs": &inputs[..33]}));
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("the limit is 32"), "{}", r.body);
    still_serves(&server, "33 inputs over a limit of 32");
}

#[test]
fn deeply_nested_json_is_a_quick_400_not_a_stack_overflow() {
    let Some(server) = start() else { return };
    let depth = 100_000;
    for (path, body) in [
        ("/embed", format!("{{\"inputs\": {}\"x\"{}}}", "[".repeat(depth), "]".repeat(depth))),
        ("/v1/embeddings", format!("{{\"input\": {}{}}}", "[".repeat(depth), "]".repeat(depth))),
        ("/embed", format!("{}{}", "{\"a\":".repeat(depth), "}".repeat(depth))),
    ] {
        let r = server.request("POST", path, &[("content-type", "application/json")], Some(&body));
        assert!(r.status == 400 || r.status == 422, "{path}: {} {}", r.status, r.body);
        assert!(!error_type(&r).is_empty(), "{path}: a JSON error body: {}", r.body);
        still_serves(&server, "JSON nested 100,000 deep");
    }
}

/// Sends `head` and `body` on a raw connection, then closes the writing side; returns what the server answered
/// (possibly nothing).
fn send_raw(addr: &str, head: &str, body: &[u8], close_write: bool) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    if close_write {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut out = vec![];
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_body_that_stops_midway_is_dropped_and_the_server_keeps_serving() {
    let Some(server) = start() else { return };
    let body = br#"{"inputs": ["this body promises more than it sends"#;
    let head = |len: usize| {
        format!("POST /embed HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n")
    };
    // Half-closed after part of the body: the request cannot complete; whatever comes back is not a success.
    let answer = send_raw(&server.addr, &head(10_000), body, true);
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    if !answer.is_empty() {
        assert!(answer.starts_with("HTTP/1.1 4"), "a client error or nothing: {answer}");
    }
    still_serves(&server, "a body cut short");
    // Closed outright mid-body, many times over.
    for _ in 0..50 {
        let mut s = TcpStream::connect(&server.addr).unwrap();
        s.write_all(head(1 << 20).as_bytes()).unwrap();
        s.write_all(&body[..20]).unwrap();
        drop(s);
    }
    still_serves(&server, "50 connections closed mid-body");
    // A body longer than its Content-Length: the rest is not a second request the server acts on as JSON.
    let answer = send_raw(&server.addr, &head(5), br#"{"inputs": "x"}"#, true);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    still_serves(&server, "a body longer than its Content-Length");
    assert!(server.stderr().matches("panicked").count() == 0, "{}", server.stderr());
}

fn embed(server: &Server, text: &str, truncate: bool) -> HttpResponse {
    server.post_json("/embed", &json!({"inputs": text, "truncate": truncate}))
}

#[test]
fn megabyte_words_and_emoji_are_one_token_and_megabytes_of_prose_are_refused_untruncated() {
    let Some(server) = start() else { return };
    let word = "a".repeat(7 << 20);
    let emoji = "😀".repeat(1_000_000);
    let words = ["harbour", "lantern", "quietly", "seventeen", "orbit", "maple"];
    let prose: String = (0..1_000_000).map(|i| words[(i * 7 + i / 3) % words.len()]).collect::<Vec<_>>().join(" ");
    assert!(prose.len() > 7 << 20);
    let unk = embed(&server, &"b".repeat(300), false).body;
    for (what, text) in [("a 7 MB word", &word), ("a million emoji", &emoji)] {
        // One word longer than WordPiece's limit is one [UNK], however long: it fits, truncated or not, and embeds
        // as any other over-long word does.
        for truncate in [true, false] {
            let r = embed(&server, text, truncate);
            assert_eq!(r.status, 200, "{what} (truncate {truncate}): {}", &r.body[..r.body.len().min(300)]);
            assert!(r.header("server-timing").is_some_and(|t| t.contains("tokenize")), "{what}");
            assert_eq!(r.body, unk, "{what}: the vector of [CLS] [UNK] [SEP]");
            still_serves(&server, what);
        }
    }
    let r = embed(&server, &prose, true);
    assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(300)]);
    still_serves(&server, "7 MB of prose, truncated");
    let r = embed(&server, &prose, false);
    assert_eq!(r.status, 422, "{}", &r.body[..r.body.len().min(300)]);
    assert!(r.body.contains("256"), "the refusal names the limit: {}", r.body);
    still_serves(&server, "7 MB of prose, not truncated");
}
