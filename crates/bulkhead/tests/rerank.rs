//! Rerankers and classifiers end to end: the tiny random-weight cross-encoders of `tests/fixtures/cross/` (made by
//! `scripts/fixtures/make_cross_encoders.py` with transformers' logits and sentence-transformers CrossEncoder scores;
//! one per classification head the graph builder writes: BERT, XLM-RoBERTa, GTE, ModernBERT, Qwen3, Qwen2) served
//! by the real binary, called on every route; the wrong kinds and bad inputs refused with 4xx; a poison document
//! failing its request alone; the CLI; the official Cohere client.

mod common;

use common::{need, venv_python, Server};
use serde_json::{json, Value};

const TOLERANCE: f32 = 1e-4;

fn fixture(name: &str) -> std::path::PathBuf {
    common::repo().join("tests/fixtures/cross").join(name)
}

fn reference(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("reference.json")).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn rows(v: &Value) -> Vec<Vec<f32>> {
    v.as_array().unwrap().iter().map(floats).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// Indices from the best score to the worst.
fn order(scores: &[f32]) -> Vec<usize> {
    let mut o: Vec<usize> = (0..scores.len()).collect();
    o.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    o
}

/// The largest absolute difference, asserted within [`TOLERANCE`].
fn close(got: &[f32], want: &[f32], what: &str) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}");
    let err = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(err <= TOLERANCE, "{what}: largest error {err} (got {got:?}, want {want:?})");
    err
}

/// The one-label fixtures, one per head (BERT pooler, RoBERTa, ModernBERT with mean pooling, Qwen3 last token, GTE
/// pooler on the rotary encoder).
const RERANKERS: &[&str] = &["bert-reranker", "xlmr-reranker", "modernbert-reranker", "qwen3-reranker", "gte-reranker"];
/// The several-label fixtures (ModernBERT with cls pooling, Qwen2 last token before a trailing pad token).
const CLASSIFIERS: &[&str] = &["xlmr-classifier", "bert-classifier", "modernbert-classifier", "qwen2-classifier"];

/// `--model name=folder` values: the BERT and XLM-RoBERTa fixtures, and with `every_head` the others too (the
/// first is always `bert-reranker`, the default reranker).
fn models(every_head: bool) -> Vec<String> {
    let base = ["bert-reranker", "xlmr-reranker", "xlmr-classifier", "bert-classifier"];
    let names: Vec<&str> = if every_head { [RERANKERS, CLASSIFIERS].concat() } else { base.to_vec() };
    names.iter().map(|n| format!("{n}={}", fixture(n).display())).collect()
}

fn server_with(extra: &[&str], env: &[(&str, &str)]) -> Server {
    serve(models(false), extra, env)
}

fn serve(models: Vec<String>, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut args = vec!["--compute-units", "ort:cpu"];
    args.extend(extra);
    for m in &models {
        args.extend(["--model", m.as_str()]);
    }
    Server::start(&args, env)
}

/// /rerank on one reranker: logits and scores against the reference, best first; the largest error.
fn check_tei_rerank(server: &Server, name: &str) -> f32 {
    let r = reference(name);
    let docs = strings(&r["documents"]);
    let logits: Vec<f32> = rows(&r["logits"]).iter().map(|l| l[0]).collect();
    let scores: Vec<f32> = rows(&r["scores"]).iter().map(|s| s[0]).collect();
    let mut worst = 0.0f32;
    for (raw, want) in [(true, &logits), (false, &scores)] {
        let body = json!({"query": r["query"], "texts": docs, "raw_scores": raw, "truncate": true, "model": name,
            "return_text": true});
        let resp = server.post_json("/rerank", &body);
        assert_eq!(resp.status, 200, "{name}: {}", resp.body);
        assert_eq!(resp.header("x-bulkhead-unit"), Some("ort:cpu"));
        let ranks = resp.json();
        let ranks = ranks.as_array().unwrap();
        let got_order: Vec<usize> = ranks.iter().map(|x| x["index"].as_u64().unwrap() as usize).collect();
        assert_eq!(got_order, order(want), "{name} raw={raw}: the order is exact");
        let mut got = vec![0.0; docs.len()];
        for x in ranks {
            let i = x["index"].as_u64().unwrap() as usize;
            got[i] = x["score"].as_f64().unwrap() as f32;
            assert_eq!(x["text"], docs[i], "return_text gives each document back");
        }
        worst = worst.max(close(&got, want, &format!("{name} /rerank raw_scores={raw}")));
    }
    worst
}

/// /v1/rerank (Cohere) and KServe v2 infer on one reranker: every document's score against CrossEncoder's, best
/// first; the largest error.
fn check_cohere_and_kserve(server: &Server, name: &str) -> f32 {
    let r = reference(name);
    let docs = strings(&r["documents"]);
    let scores: Vec<f32> = rows(&r["scores"]).iter().map(|s| s[0]).collect();
    let resp = server.post_json("/v1/rerank", &json!({"model": name, "query": r["query"], "documents": docs}));
    assert_eq!(resp.status, 200, "{name}: {}", resp.body);
    let v = resp.json();
    let results = v["results"].as_array().unwrap();
    let got_order: Vec<usize> = results.iter().map(|x| x["index"].as_u64().unwrap() as usize).collect();
    assert_eq!(got_order, order(&scores), "{name} /v1/rerank: the order is exact");
    let mut got = vec![0.0; docs.len()];
    for x in results {
        got[x["index"].as_u64().unwrap() as usize] = x["relevance_score"].as_f64().unwrap() as f32;
    }
    let worst = close(&got, &scores, &format!("{name} /v1/rerank"));

    let n = docs.len();
    let body = json!({"inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [n], "data": vec![r["query"].clone(); n]},
        {"name": "text_pair", "datatype": "BYTES", "shape": [n], "data": docs}]});
    let resp = server.post_json(&format!("/v2/models/{name}/infer"), &body);
    assert_eq!(resp.status, 200, "{name}: {}", resp.body);
    let out = &resp.json()["outputs"][0];
    assert_eq!((out["name"].as_str(), out["shape"].clone()), (Some("scores"), json!([n, 1])));
    worst.max(close(&floats(&out["data"]), &scores, &format!("{name} kserve scores")))
}

/// /predict on one classifier: pairs and one single text, logits and softmax scores against the reference, labels
/// best first; the largest error.
fn check_predict(server: &Server, name: &str) -> f32 {
    let r = reference(name);
    let labels = strings(&r["labels"]);
    let pairs: Vec<Value> = strings(&r["documents"]).iter().map(|d| json!([r["query"], d])).collect();
    let mut worst = 0.0f32;
    for (raw, want) in [(true, rows(&r["logits"])), (false, rows(&r["scores"]))] {
        let body = json!({"inputs": pairs, "raw_scores": raw, "truncate": true, "model": name});
        let resp = server.post_json("/predict", &body);
        assert_eq!(resp.status, 200, "{name}: {}", resp.body);
        for (got, want) in resp.json().as_array().unwrap().iter().zip(&want) {
            let got = got.as_array().unwrap();
            let by_label: Vec<f32> = labels
                .iter()
                .map(|l| got.iter().find(|p| p["label"] == *l).unwrap()["score"].as_f64().unwrap() as f32)
                .collect();
            worst = worst.max(close(&by_label, want, &format!("{name} /predict raw_scores={raw}")));
            let best: Vec<&str> = got.iter().map(|p| p["label"].as_str().unwrap()).collect();
            let want_best: Vec<&str> = order(want).iter().map(|&i| labels[i].as_str()).collect();
            assert_eq!(best, want_best, "{name}: labels best first");
        }
    }
    let texts = strings(&r["texts"]);
    let resp = server.post_json("/predict", &json!({"inputs": texts[0], "raw_scores": true, "model": name}));
    assert_eq!(resp.status, 200, "{}", resp.body);
    let one = resp.json();
    let got: Vec<f32> = labels
        .iter()
        .map(|l| one.as_array().unwrap().iter().find(|p| p["label"] == *l).unwrap()["score"].as_f64().unwrap())
        .map(|x| x as f32)
        .collect();
    worst.max(close(&got, &rows(&r["text_logits"])[0], &format!("{name} one text")))
}

#[test]
fn rerankers_and_classifiers_match_transformers_on_every_route() {
    let server = serve(models(true), &[], &[]);
    // Every head on every route; the largest error per fixture is printed (run with --nocapture to see it).
    let mut worst = vec![];
    for name in RERANKERS {
        worst.push((name, check_tei_rerank(&server, name).max(check_cohere_and_kserve(&server, name))));
    }
    for name in CLASSIFIERS {
        worst.push((name, check_predict(&server, name)));
    }
    for (name, err) in &worst {
        eprintln!("{name}: largest score or logit error {err:.1e} over every route");
    }

    // Cohere / Jina: both document shapes, top_n, return_documents, usage; the model field omitted picks the
    // first reranker.
    let r = reference("xlmr-reranker");
    let docs = strings(&r["documents"]);
    let scores: Vec<f32> = rows(&r["scores"]).iter().map(|s| s[0]).collect();
    let shapes: Vec<Value> =
        docs.iter().enumerate().map(|(i, d)| if i % 2 == 0 { json!(d) } else { json!({"text": d}) }).collect();
    let body = json!({"model": "xlmr-reranker", "query": r["query"], "documents": shapes, "top_n": 3,
        "return_documents": true});
    let resp = server.post_json("/v1/rerank", &body);
    assert_eq!(resp.status, 200, "{}", resp.body);
    let v = resp.json();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "top_n");
    for (x, &want) in results.iter().zip(&order(&scores)[..3]) {
        assert_eq!(x["index"], want);
        assert!((x["relevance_score"].as_f64().unwrap() as f32 - scores[want]).abs() <= TOLERANCE, "{x}");
        assert_eq!(x["document"]["text"], docs[want]);
    }
    assert_eq!(v["meta"]["billed_units"]["search_units"], 1);
    assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 100 && v["id"].is_string(), "{v}");
    let resp = server.post_json("/v1/rerank", &json!({"query": "q", "documents": ["a b", "c"], "top_n": 5}));
    assert_eq!(resp.status, 200, "{}", resp.body);
    let v = resp.json();
    assert_eq!(v["model"], "bert-reranker", "the first reranker when no model is named");
    assert_eq!(v["results"].as_array().unwrap().len(), 2);
    assert!(v["results"][0].get("document").is_none(), "no documents unless asked");
    assert!(v["meta"]["warnings"][0].as_str().unwrap().contains("top_n 5"), "the clamp is said: {v}");

    assert_eq!(reference("xlmr-classifier")["labels"], json!(["negative", "neutral", "positive"]));
    for (name, labels) in [("xlmr-classifier", 3), ("modernbert-classifier", 3), ("qwen2-classifier", 2)] {
        let meta = server.request("GET", &format!("/v2/models/{name}"), &[], None).json();
        assert_eq!(meta["outputs"][0]["shape"], json!([-1, labels]), "{meta}");
    }
}

#[test]
fn each_route_refuses_the_other_kinds_and_bad_input_with_4xx() {
    let minilm = common::minilm_folder();
    let minilm_arg = minilm.as_ref().map(|m| format!("minilm={}", m.display()));
    let extra: Vec<&str> = minilm_arg.iter().flat_map(|m| ["--model", m.as_str()]).collect();
    let server = server_with(&extra, &[]);
    let post = |path: &str, body: Value| {
        let r = server.post_json(path, &body);
        let v: Value = serde_json::from_str(&r.body).unwrap_or_else(|_| panic!("{path}: not JSON: {}", r.body));
        assert!(v["error"]["message"].is_string(), "{path}: the JSON error body: {v}");
        (r.status, v["error"]["message"].as_str().unwrap_or_default().to_string())
    };
    // The wrong kinds: 400 naming the route to use.
    let (s, m) = post("/v1/embeddings", json!({"input": "x", "model": "bert-reranker"}));
    assert!(s == 400 && m.contains("reranker") && m.contains("POST /rerank"), "{s} {m}");
    let (s, m) = post("/embed", json!({"inputs": "x", "model": "xlmr-classifier"}));
    assert!(s == 400 && m.contains("POST /predict"), "{s} {m}");
    let (s, m) = post("/rerank", json!({"query": "q", "texts": ["a"], "model": "xlmr-classifier"}));
    assert!(s == 400 && m.contains("classifier") && m.contains("POST /predict"), "a query sent to a classifier: {m}");
    let (s, m) = post("/predict", json!({"inputs": "a", "model": "bert-reranker"}));
    assert!(s == 400 && m.contains("POST /rerank"), "{s} {m}");
    if minilm.is_some() {
        let (s, m) = post("/v1/rerank", json!({"query": "q", "documents": ["a"], "model": "minilm"}));
        assert!(s == 400 && m.contains("embedding model") && m.contains("/v1/embeddings"), "{s} {m}");
    }
    // Bad input: 422 with the reason.
    let long = "word ".repeat(200);
    for (path, body, says) in [
        ("/v1/rerank", json!({"query": "q", "documents": []}), "no document"),
        ("/v1/rerank", json!({"query": "q", "documents": ["a"], "top_n": 0}), "top_n must be at least 1"),
        ("/v1/rerank", json!({"query": "q", "documents": ["a"], "top_n": -3}), "top_n must be at least 1"),
        ("/rerank", json!({"query": "", "texts": ["a"]}), "empty"),
        ("/rerank", json!({"query": "q", "texts": ["a", "  "]}), "text 1 (its second text) is empty"),
        ("/rerank", json!({"query": "q", "texts": ["a", long]}), "longer than the model's maximum of 40"),
        ("/predict", json!({"inputs": long}), "input 0 is longer than the model's maximum"),
        ("/predict", json!({"inputs": [["a", "b", "c"]]}), "one text or a pair"),
        ("/predict", json!({"inputs": []}), "one text or a pair"),
    ] {
        let (s, m) = post(path, body.clone());
        assert!(s == 422 && m.contains(says), "{path} {body}: {s} {m}");
    }
    // The same over-long document is cut with `truncate` (and always on the Cohere route).
    let r = server.post_json("/rerank", &json!({"query": "q", "texts": ["a", long], "truncate": true}));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = server.post_json("/v1/rerank", &json!({"query": "q", "documents": [long]}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(server.request("GET", "/health", &[], None).status == 200);
}

#[test]
fn a_poison_document_fails_its_request_alone() {
    // A worker crashes on any prediction holding a text with POISON in it.
    let faults = r#"[{"unit": "ort:cpu", "kind": "segv", "match": "POISON"}]"#;
    let server = server_with(&[], &[("BULKHEAD_FAULTS", faults)]);
    let addr = server.addr.clone();
    let innocent: Vec<_> = (0..4)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let body = json!({"query": "q", "texts": [format!("innocent {i}"), "another one"]}).to_string();
                common::http(&addr, "POST", "/rerank", &[("content-type", "application/json")], Some(&body))
            })
        })
        .collect();
    let poison = server.post_json("/rerank", &json!({"query": "q", "texts": ["fine", "a POISON document"]}));
    assert_eq!(poison.status, 422, "{}", poison.body);
    assert!(poison.body.contains("poison_request_error"), "{}", poison.body);
    for t in innocent {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "an innocent request shares no fate with the poison one: {}", r.body);
    }
    let after = server.post_json("/rerank", &json!({"query": "q", "texts": ["still served"]}));
    assert_eq!(after.status, 200, "{}", after.body);
}

#[test]
fn the_cli_ranks_and_classifies_and_refuses_the_wrong_command() {
    let r = reference("bert-reranker");
    let docs = strings(&r["documents"]);
    let model = fixture("bert-reranker");
    let mut args = vec!["rerank", "--json", "--compute-units", "ort:cpu", "--model", model.to_str().unwrap()];
    args.push(r["query"].as_str().unwrap());
    args.extend(docs.iter().map(String::as_str));
    let out = common::bulkhead(&args, &[]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let scores: Vec<f32> = rows(&r["scores"]).iter().map(|s| s[0]).collect();
    let got: Vec<usize> =
        v["results"].as_array().unwrap().iter().map(|x| x["index"].as_u64().unwrap() as usize).collect();
    assert_eq!(got, order(&scores));
    assert_eq!(v["unit"], "ort:cpu");
    let best = v["results"][0]["score"].as_f64().unwrap() as f32;
    assert!((best - scores[got[0]]).abs() <= TOLERANCE);

    let classifier = fixture("xlmr-classifier");
    let texts = strings(&reference("xlmr-classifier")["texts"]);
    let mut args = vec!["classify", "--json", "--compute-units", "ort:cpu", "--model", classifier.to_str().unwrap()];
    args.extend(texts.iter().map(String::as_str));
    let out = common::bulkhead(&args, &[]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = rows(&reference("xlmr-classifier")["text_scores"]);
    for (p, want) in v["predictions"].as_array().unwrap().iter().zip(&want) {
        let top = want.iter().copied().fold(f32::MIN, f32::max);
        assert!((p[0]["score"].as_f64().unwrap() as f32 - top).abs() <= TOLERANCE, "{p}");
    }

    // The wrong command for the model: a usage error naming the right one.
    let out = common::bulkhead(&["embed", "--model", model.to_str().unwrap(), "x"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("bulkhead rerank"), "{}", common::stderr(&out));
    let out = common::bulkhead(&["classify", "--model", model.to_str().unwrap(), "x"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
}

/// The doctor and the bench measure a reranker and a classifier as they are served: pairs of (query, document), or
/// single texts, in worker processes; candle, which runs no classification heads, is `unusable` with the
/// engine's own classification of why (`unsupported`, branch 5a).
#[test]
fn doctor_and_bench_measure_cross_encoders() {
    // Seven timed iterations: the median of three is one scheduling hiccup away from a `slow` verdict on a busy machine.
    let quick = ["--batch-sizes", "1,8", "--iterations", "7", "--predictions", "12", "--seq-lengths", "8,16"];
    for name in ["bert-reranker", "xlmr-classifier", "qwen3-reranker"] {
        let model = fixture(name);
        let mut args = vec!["doctor", "--json", "--model", model.to_str().unwrap(), "--compute-units"];
        args.extend(["ort:cpu,candle:cpu"].iter().chain(&quick));
        let out = common::bulkhead(&args, &[]);
        assert!(out.status.success(), "{name}: {}", common::stderr(&out));
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        let unit = |u: &str| r["units"].as_array().unwrap().iter().find(|x| x["unit"] == u).unwrap().clone();
        let ort = unit("ort:cpu");
        assert_eq!(ort["verdict"], "ok", "{name}: {}", ort["evidence"]);
        let batches: Vec<u64> =
            ort["latency"].as_array().unwrap().iter().map(|l| l["batch"].as_u64().unwrap()).collect();
        assert_eq!(batches, vec![1, 8], "{name}");
        assert!(ort["shapes"]["rows"].as_array().is_some_and(|r| !r.is_empty()), "{name}: {}", ort["shapes"]);
        // The fp32 reference is ort:cpu itself: its logits over the 16 probes agree exactly.
        assert_eq!(
            (ort["accuracy"]["probes"].as_u64(), ort["accuracy"]["max_abs_diff"].as_f64()),
            (Some(16), Some(0.0))
        );
        let candle = unit("candle:cpu");
        assert_eq!(candle["verdict"], "unusable", "{name}");
        assert_eq!(
            (candle["load_error"]["kind"].as_str(), candle["load_error"]["branch"].as_str()),
            (Some("unsupported"), Some("5a"))
        );
        assert_eq!(r["recommendation"]["compute_units"], "ort:cpu");

        let args = [
            "bench",
            "--json",
            "--model",
            model.to_str().unwrap(),
            "--compute-units",
            "ort:cpu",
            "--batch-sizes",
            "1,4",
            "--seconds",
            "0.2",
        ];
        let out = common::bulkhead(&args, &[]);
        assert!(out.status.success(), "{name}: {}", common::stderr(&out));
        let b: Value = serde_json::from_slice(&out.stdout).unwrap();
        let rows = b["units"][0]["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2, "{name}: {b}");
        assert!(rows.iter().all(|row| row["throughput_per_s"].as_f64().unwrap() > 0.0), "{name}: {b}");
    }
}

#[test]
fn pairs_are_tokenized_as_transformers_tokenizes_them() {
    for name in RERANKERS.iter().chain(CLASSIFIERS) {
        let r = reference(name);
        let model = bulkhead_core::ModelFiles::open(&fixture(name)).unwrap();
        let want = if RERANKERS.contains(name) { 1 } else { r["labels"].as_array().unwrap().len() };
        assert!(model.task.is_cross_encoder() && model.task.outputs() == want, "{name}: {:?}", model.task);
        let tok = bulkhead_embed::Tokenizer::load(&model).unwrap();
        let docs = strings(&r["documents"]);
        let pairs: Vec<(&str, Option<&str>)> =
            docs.iter().map(|d| (r["query"].as_str().unwrap(), Some(d.as_str()))).collect();
        let got = tok.encode_pairs(&pairs, bulkhead_embed::Truncation::Right).unwrap();
        for (i, row) in got.rows.iter().enumerate() {
            let ids: Vec<i64> = r["token_ids"][i].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
            let types: Vec<i64> =
                r["token_type_ids"][i].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
            assert_eq!((row.ids(), row.type_ids()), (&ids[..], &types[..]), "{name} pair {i}");
        }
        assert!(got.truncated.iter().any(|&t| t), "{name}: the long pair is cut longest_first");
    }
}

#[test]
fn the_official_cohere_client_reranks_against_the_server() {
    let Some(python) = need(venv_python(), "the project's .venv") else { return };
    let has_cohere = std::process::Command::new(&python).args(["-c", "import cohere"]).output();
    if !has_cohere.is_ok_and(|o| o.status.success()) {
        bulkhead_testkit::skip("the cohere package is absent (run scripts/setup.sh --test)");
        return;
    }
    let server = server_with(&["--api-key", "k3y"], &[]);
    let r = reference("bert-reranker");
    let out = std::process::Command::new(python)
        .arg(common::repo().join("tests/python/cohere_client.py"))
        .args([&server.url(), "k3y", "bert-reranker"])
        .arg(fixture("bert-reranker").join("reference.json"))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(r["query"].is_string());
    eprintln!("{text}");
}
