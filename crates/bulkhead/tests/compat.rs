//! The small routes clients rely on, end to end: `bulkhead serve` on port 0 with the real all-MiniLM-L6-v2, called
//! with the official `ollama` Python client (`/api/*`) and plain HTTP (`/tokenize`, `/decode`, `/info`,
//! `/similarity`, the output encodings of `/v1/embeddings`). References come from the packages users compare
//! against, run at test time from `.venv` (`tests/python/references.py`): the `tokenizers` package for tokens and
//! texts, a numpy transcription of sentence-transformers' `quantize_embeddings` for the encodings.

mod common;

use std::process::{Command, Stdio};

use common::{need, venv_python, Server};
use serde_json::{json, Value};

const TEXTS: [&str; 6] = [
    "Crème brûlée à Zürich — naïve café",
    "東京タワーは333メートルです",
    "emoji 👩🏽‍💻 and ﬁ ligatures",
    "The quick brown fox jumps over the lazy dog.",
    "hello world",
    "Embeddings map sentences to vectors.",
];

fn server() -> Option<Server> {
    let minilm = need(common::minilm_folder(), "the all-MiniLM-L6-v2 package")?;
    let model = format!("minilm={}", minilm.display());
    Some(Server::start(&["--compute-units", "ort:cpu", "--model", &model], &[]))
}

/// Runs a script of `tests/python` with `.venv`'s Python, `input` on its standard input; its JSON output.
fn python(script: &str, args: &[&str], input: &Value) -> Value {
    use std::io::Write;
    let python = venv_python().unwrap();
    let mut child = Command::new(python)
        .arg(common::repo().join("tests/python").join(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {stderr}"))
}

fn has_python_package(name: &str) -> bool {
    let Some(python) = need(venv_python(), "the project's .venv") else { return false };
    let ok = Command::new(python).args(["-c", &format!("import {name}")]).output().is_ok_and(|o| o.status.success());
    if !ok {
        bulkhead_testkit::skip(&format!("the {name} package is absent (run scripts/setup.sh --test)"));
    }
    ok
}

fn floats(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect()
}

fn openai(server: &Server, body: Value) -> Value {
    let r = server.post_json("/v1/embeddings", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn openai_vectors(v: &Value) -> Vec<Vec<f32>> {
    floats(&json!(v["data"].as_array().unwrap().iter().map(|d| d["embedding"].clone()).collect::<Vec<_>>()))
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs())).fold(0.0, f32::max)
}

/// A 4xx with the JSON error body whose message names `what`.
fn refused(r: &common::HttpResponse, status: u16, what: &[&str]) {
    assert_eq!(r.status, status, "{}", r.body);
    let msg = r.json()["error"]["message"].as_str().unwrap_or_default().to_string();
    for w in what {
        assert!(msg.contains(w), "the message should name {w:?}: {msg}");
    }
}

#[test]
fn the_official_ollama_client_gets_the_openai_vectors() {
    if !has_python_package("ollama") {
        return;
    }
    let Some(server) = server() else { return };
    let want = openai(&server, json!({"input": TEXTS}));
    let got = python("ollama_client.py", &[&server.url(), "minilm"], &json!(TEXTS));

    let embed = &got["embed"];
    assert_eq!(embed["model"], "minilm:latest", "the model as the request named it");
    assert!(max_diff(&floats(&embed["embeddings"]), &openai_vectors(&want)) <= 1e-6, "/api/embed vs /v1/embeddings");
    assert_eq!(embed["prompt_eval_count"], want["usage"]["prompt_tokens"]);
    assert!(embed["total_duration"].as_u64().unwrap() > 0 && embed["load_duration"] == 0, "{embed}");
    // `dimensions` keeps the first 8 values, renormalised (Ollama normalises /api/embed).
    let one = &floats(&got["one"])[0];
    let norm: f32 = one.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(one.len() == 8 && (norm - 1.0).abs() < 1e-5, "{one:?}");
    let first: Vec<f32> = openai_vectors(&want)[0][..8].to_vec();
    let scale = first.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(max_diff(std::slice::from_ref(one), &[first.iter().map(|x| x / scale).collect()]) <= 1e-5);
    assert!(max_diff(&[floats(&json!([got["legacy"]]))[0].clone()], &openai_vectors(&want)[..1]) <= 1e-6);
    assert_eq!(got["empty"], json!([]), "no texts, no embeddings, as Ollama");

    let tags = got["tags"].as_array().unwrap();
    assert_eq!(tags.len(), 1, "{tags:?}");
    assert_eq!(tags[0]["model"], "minilm:latest");
    assert!(tags[0]["size"].as_u64().unwrap() > 80_000_000, "the safetensors weights: {}", tags[0]);
    let digest = tags[0]["digest"].as_str().unwrap();
    assert!(digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()), "{digest}");
    let details = &tags[0]["details"];
    assert_eq!((&details["format"], &details["family"]), (&json!("safetensors"), &json!("bert")));
    assert_eq!((&details["parameter_size"], &details["quantization_level"]), (&json!("22.7M"), &json!("F32")));

    let show = &got["show"];
    assert_eq!(show["capabilities"], json!(["embedding"]));
    let info = &show["model_info"];
    assert_eq!((&info["bert.embedding_length"], &info["bert.context_length"]), (&json!(384), &json!(256)), "{info}");
    assert_eq!(info["general.parameter_count"], 22_713_728, "{info}");

    let ps = got["ps"].as_array().unwrap();
    assert_eq!(ps[0]["model"], "minilm:latest");
    assert!(ps[0]["size"].as_u64().unwrap() > 20_000_000, "the worker's resident memory: {}", ps[0]);
    assert_eq!((&ps[0]["size_vram"], &ps[0]["context_length"]), (&json!(0), &json!(256)), "ort:cpu runs on the CPU");

    assert_eq!(got["unknown"]["status"], 404, "{}", got["unknown"]);
    assert!(got["unknown"]["error"].to_string().contains("no-such-model"), "{}", got["unknown"]);

    // Plain HTTP: the version, the older clients' `name`, and the refusals.
    let v = server.request("GET", "/api/version", &[], None);
    assert_eq!(v.json()["version"], env!("CARGO_PKG_VERSION"));
    let show = server.post_json("/api/show", &json!({"name": "minilm:latest"}));
    assert_eq!(show.status, 200, "{}", show.body);
    refused(&server.post_json("/api/show", &json!({})), 422, &["`model`"]);
    refused(&server.post_json("/api/embed", &json!({"model": "minilm", "input": 7})), 422, &["`input`"]);
    let long = "word ".repeat(400);
    refused(
        &server.post_json("/api/embed", &json!({"model": "minilm", "input": long, "truncate": false})),
        422,
        &["256"],
    );
    let r = server.post_json("/api/embed", &json!({"model": "minilm", "input": long}));
    assert_eq!(r.status, 200, "truncated by default, as Ollama: {}", r.body);
    assert_eq!(r.header("x-bulkhead-unit"), Some("ort:cpu"));
}

#[test]
fn tokens_info_similarity_and_encodings_match_their_references() {
    if need(venv_python(), "the project's .venv").is_none() {
        return;
    }
    let Some(server) = server() else { return };
    let floats_resp = openai(&server, json!({"input": TEXTS}));
    let vectors = openai_vectors(&floats_resp);
    let ranges = [vec![-0.2f32; 384], vec![0.2f32; 384]];
    let tokenizer = common::minilm_folder().unwrap().join("tokenizer.json");
    let refs = python(
        "references.py",
        &[],
        &json!({"tokenizer": tokenizer, "texts": TEXTS, "vectors": vectors, "ranges": ranges}),
    );

    check_tokens(&server, &refs["tokens"]);
    check_info(&server);
    check_similarity(&server, &vectors);

    // Encodings: each equals sentence-transformers' quantize_embeddings of the float vectors of the same request.
    let q = &refs["quantized"];
    for format in ["int8", "uint8", "binary", "ubinary"] {
        let got = openai(&server, json!({"input": TEXTS, "encoding_format": format}));
        let data: Vec<Value> = got["data"].as_array().unwrap().iter().map(|d| d["embedding"].clone()).collect();
        assert!(json!(data) == q[format], "{format}: {:?} vs {:?}", data[0], q[format][0]);
        let width = if format.ends_with("binary") { 48 } else { 384 };
        assert!(data.iter().all(|d| d.as_array().unwrap().len() == width), "{format}");
        if format.ends_with("int8") {
            // The same float32 values (Python writes them as doubles).
            let same = floats(&got["quantization_ranges"]) == floats(&q["ranges"]);
            assert!(same, "{format}: the ranges it used are the per-dimension minimum and maximum");
        } else {
            assert!(got.get("quantization_ranges").is_none(), "{format}");
        }
    }
    // Ranges given (sentence-transformers' `ranges`), and one input with them.
    for format in ["int8", "uint8"] {
        let got = openai(&server, json!({"input": TEXTS, "encoding_format": format, "quantization_ranges": ranges}));
        let data: Vec<Value> = got["data"].as_array().unwrap().iter().map(|d| d["embedding"].clone()).collect();
        let want = &q[format!("{format}_given")];
        assert!(json!(data) == *want, "{format} with ranges: {:?} vs {:?}", data[0], want[0]);
        let lone = json!({"input": TEXTS[3], "encoding_format": format, "quantization_ranges": ranges});
        assert_eq!(openai(&server, lone)["data"][0]["embedding"], q[format!("{format}_given")][3]);
    }
    refused(
        &server.post_json("/v1/embeddings", &json!({"input": "x", "encoding_format": "hex"})),
        422,
        &["hex", "float", "base64", "int8", "uint8", "binary", "ubinary"],
    );
    refused(
        &server.post_json("/v1/embeddings", &json!({"input": "x", "encoding_format": "int8"})),
        422,
        &["two inputs", "quantization_ranges"],
    );
    let bad = json!({"input": ["a", "b"], "encoding_format": "uint8", "quantization_ranges": [[0.0], [1.0]]});
    refused(&server.post_json("/v1/embeddings", &bad), 422, &["384 dimensions"]);
}

fn check_tokens(server: &Server, refs: &Value) {
    let r = server.post_json("/tokenize", &json!({"inputs": TEXTS}));
    assert_eq!(r.status, 200, "{}", r.body);
    let got = r.json();
    for (i, text) in TEXTS.iter().enumerate() {
        let tokens = got[i].as_array().unwrap();
        let want = &refs[i];
        let ids: Vec<Value> = tokens.iter().map(|t| t["id"].clone()).collect();
        assert_eq!(json!(ids), want["ids"], "ids of {text:?}");
        for (j, t) in tokens.iter().enumerate() {
            let special = t["special"].as_bool().unwrap();
            assert_eq!(special, want["special"][j] == 1, "{text:?} token {j}");
            if special {
                assert!(t["start"].is_null() && t["stop"].is_null(), "{t}");
                continue;
            }
            // Byte offsets, as text-embeddings-inference gives them; the tokenizers package counts characters.
            let (start, stop) = (t["start"].as_u64().unwrap() as usize, t["stop"].as_u64().unwrap() as usize);
            assert_eq!(t["text"].as_str().unwrap(), &text[start..stop], "{text:?} token {j}");
            let chars = |b: usize| text[..b].chars().count();
            assert_eq!(json!([chars(start), chars(stop)]), want["offsets"][j], "{text:?} token {j}");
        }
    }
    let plain = server.post_json("/tokenize", &json!({"inputs": TEXTS[4], "add_special_tokens": false})).json();
    let plain_ids: Vec<Value> = plain[0].as_array().unwrap().iter().map(|t| t["id"].clone()).collect();
    assert_eq!(json!(plain_ids), refs[4]["plain_ids"]);

    // Decode: the tokenizer's own text, a round trip on a plain text, special tokens kept on request.
    let all_ids: Vec<Value> = refs.as_array().unwrap().iter().map(|t| t["ids"].clone()).collect();
    let decoded = server.post_json("/decode", &json!({"ids": all_ids})).json();
    let want: Vec<Value> = refs.as_array().unwrap().iter().map(|t| t["decoded"].clone()).collect();
    assert_eq!(decoded, json!(want));
    assert_eq!(decoded[4], TEXTS[4], "a round trip");
    let kept = server.post_json("/decode", &json!({"ids": refs[4]["ids"], "skip_special_tokens": false})).json();
    assert_eq!(kept[0], refs[4]["decoded_with_special"]);
    refused(&server.post_json("/decode", &json!({"ids": [101, 30522, 102]})), 422, &["30522", "vocabulary"]);
    refused(&server.post_json("/decode", &json!({"ids": [[101], [40000]]})), 422, &["40000", "30522"]);
    refused(&server.post_json("/tokenize", &json!({"inputs": []})), 422, &["`inputs`"]);
    refused(&server.post_json("/tokenize", &json!({"inputs": "x", "model": "nope"})), 404, &["nope"]);
}

fn check_info(server: &Server) {
    let info = server.request("GET", "/info", &[], None);
    assert_eq!(info.status, 200, "{}", info.body);
    let i = info.json();
    assert_eq!(i["model_id"], "minilm");
    assert_eq!(i["model_type"], json!({"embedding": {"pooling": "mean"}}));
    assert_eq!((&i["max_input_length"], &i["dimensions"]), (&json!(256), &json!(384)));
    assert_eq!(
        (&i["unit"], &i["precision"], &i["model_dtype"]),
        (&json!("ort:cpu"), &json!("fp32"), &json!("float32"))
    );
    assert_eq!((&i["max_client_batch_size"], &i["max_batch_tokens"]), (&json!(2048), &json!(16384)));
    assert_eq!(i["version"], env!("CARGO_PKG_VERSION"));
    assert!(i["tokenization_workers"].as_u64().unwrap() >= 1 && i["prompts"] == json!({}), "{i}");
    let named = server.request("GET", "/info?model=minilm", &[], None);
    assert_eq!(named.json()["model_id"], "minilm");
    refused(&server.request("GET", "/info?model=nope", &[], None), 404, &["nope"]);
}

fn check_similarity(server: &Server, vectors: &[Vec<f32>]) {
    let body = json!({"inputs": {"source_sentence": TEXTS[3], "sentences": [TEXTS[0], TEXTS[5], TEXTS[4]]}});
    let r = server.post_json("/similarity", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-bulkhead-unit"), Some("ort:cpu"));
    let got: Vec<f32> = r.json().as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let want: Vec<f32> = [0, 5, 4].iter().map(|&j| common::cosine(&vectors[3], &vectors[j]) as f32).collect();
    assert!(max_diff(std::slice::from_ref(&got), std::slice::from_ref(&want)) <= 1e-5, "{got:?} vs {want:?}");
    let empty = json!({"inputs": {"source_sentence": "a", "sentences": []}});
    refused(&server.post_json("/similarity", &empty), 422, &["sentences"]);
}
