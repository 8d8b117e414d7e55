//! Texts of megabytes through a real server: each is read only as far as its tokens reach the model, so a 7 MB
//! text gets the same answer as the prefix that holds its first 256 tokens, a text past the limit with
//! `truncate: false` is still refused, and short requests sent meanwhile are all answered. Tokenization runs on the
//! blocking pool; no timing is asserted here (the CPU per request is measured by
//! `cargo run --release -p bulkhead-embed --example tokenize_bench`).

mod common;

use common::{need, Server};
use serde_json::json;

fn embedding(server: &Server, text: &str, truncate: bool) -> common::HttpResponse {
    server.post_json("/embed", &json!({"inputs": text, "truncate": truncate}))
}

fn vector(r: &common::HttpResponse) -> Vec<f32> {
    assert_eq!(r.status, 200, "{}", &r.body[..r.body.len().min(400)]);
    r.json()[0].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn same(a: &[f32], b: &[f32], what: &str) {
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(a.len() == b.len() && diff <= 1e-6, "{what}: max abs difference {diff}");
}

#[test]
fn megabyte_texts_answer_as_their_prefix_and_short_requests_are_answered_meanwhile() {
    if need(common::minilm_folder(), "the all-MiniLM-L6-v2 package").is_none() {
        return;
    }
    let server = Server::start(&["--compute-units", "ort:cpu"], &[]);
    let words = ["harbour", "lantern", "quietly", "seventeen", "orbit", "maple", "granite", "velvet"];
    let prose: String = (0..1_000_000).map(|i| words[(i * 7 + i / 3) % words.len()]).collect::<Vec<_>>().join(" ");
    assert!(prose.len() > 7 << 20, "{} bytes", prose.len());

    std::thread::scope(|s| {
        // Short requests on another connection while the long ones are tokenized and run.
        let addr = server.addr.clone();
        let short = s.spawn(move || {
            let body = json!({"inputs": "a short query about the weather"}).to_string();
            let headers = [("content-type", "application/json")];
            (0..40).filter(|_| common::http(&addr, "POST", "/embed", &headers, Some(&body)).status == 200).count()
        });

        // 7 MB of prose: truncated, the same vector as its first 20 KB (both hold far more than 256 tokens).
        let long = vector(&embedding(&server, &prose, true));
        let prefix = vector(&embedding(&server, &prose[..prose[..20_000].rfind(' ').unwrap()], true));
        same(&long, &prefix, "7 MB of prose against its first 20 KB");

        // Not truncated: still refused, naming the limit.
        let refused = embedding(&server, &prose, false);
        assert_eq!(refused.status, 422, "{}", &refused.body[..refused.body.len().min(400)]);
        assert!(refused.body.contains("256"), "{}", refused.body);

        // A 7 MB word is one unknown token, as full tokenization makes it: the vector of any over-long word.
        let word = "a".repeat(7 << 20);
        same(
            &vector(&embedding(&server, &word, false)),
            &vector(&embedding(&server, &"a".repeat(300), false)),
            "7 MB word",
        );

        // A million emoji with no space between them: one word again.
        let emoji = "😀".repeat(1_000_000);
        same(
            &vector(&embedding(&server, &emoji, false)),
            &vector(&embedding(&server, &"😀".repeat(200), false)),
            "emoji",
        );

        assert_eq!(short.join().unwrap(), 40, "every short request is answered");
    });
}
