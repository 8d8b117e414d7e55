//! Sparse embeddings (SPLADE) end to end: the tiny random-weight `BertForMaskedLM` SparseEncoder folders of
//! `tests/fixtures/retrieval/` (made by `scripts/fixtures/make_sparse.py` with sentence-transformers'
//! `SparseEncoder` outputs) served by the real binary: `POST /embed_sparse` and `"sparse": true` on
//! `/v1/embeddings` exact against the references (texts of different lengths batched together equal to one by
//! one; every active index, `max_active_dims` kept; `max` and `sum` pooling, `relu` and `log1p_relu`), KServe
//! infer's pooled vector, `/info`, the OpenAPI document, the wrong kinds refused with 400 naming what the model is
//! and the routes that serve it, bad inputs refused with 4xx, and `bulkhead embed --sparse`.

mod common;

use common::{bulkhead, stderr, Server};
use serde_json::{json, Value};

/// Largest absolute difference allowed against sentence-transformers (PyTorch fp32 vs the built ONNX graph).
const TOLERANCE: f32 = 1e-4;

fn fixture(name: &str) -> std::path::PathBuf {
    common::repo().join("tests/fixtures/retrieval").join(name)
}

fn reference(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("reference.json")).unwrap()).unwrap()
}

fn texts(r: &Value) -> Vec<String> {
    r["texts"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// A sparse vector as (indices, values), from `[{index, value}]`.
fn pairs(v: &Value) -> (Vec<u64>, Vec<f32>) {
    let a = v.as_array().unwrap_or_else(|| panic!("a list of {{index, value}}: {v}"));
    (
        a.iter().map(|x| x["index"].as_u64().unwrap()).collect(),
        a.iter().map(|x| x["value"].as_f64().unwrap() as f32).collect(),
    )
}

/// Checks one sparse vector against the reference's `{indices, values}`: the same indices, ascending, the values
/// within [`TOLERANCE`]; the largest error.
fn check(got: &Value, want: &Value, what: &str) -> f32 {
    let (indices, values) = pairs(got);
    let want_indices: Vec<u64> = want["indices"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    let want_values: Vec<f32> = want["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert_eq!(indices, want_indices, "{what}: the active indices, ascending");
    let err = values.iter().zip(&want_values).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(err <= TOLERANCE, "{what}: largest error {err}");
    err
}

/// A server with the SPLADE fixtures (max pooling with every entry and with the top 8; sum pooling with
/// `log1p_relu`) and a dense embedding model (the XLM-RoBERTa architecture fixture).
fn server() -> Server {
    let splade = format!("splade={}", fixture("splade-bert").display());
    let top8 = format!("splade-top8={}", fixture("splade-bert-top8").display());
    let sum = format!("splade-sum={}", fixture("splade-bert-sum-log1p").display());
    let dense = format!("dense={}", common::repo().join("tests/fixtures/arch/xlm-roberta").display());
    let models = ["--model", &dense, "--model", &splade, "--model", &top8, "--model", &sum];
    let mut args = vec!["--compute-units", "ort:cpu"];
    args.extend(models);
    Server::start(&args, &[])
}

#[test]
fn sparse_routes_match_sentence_transformers_and_refuse_what_they_do_not_serve() {
    let server = server();
    let mut worst = 0.0f32;
    let fixtures =
        [("splade", "splade-bert"), ("splade-top8", "splade-bert-top8"), ("splade-sum", "splade-bert-sum-log1p")];
    for (model, name) in fixtures {
        let r = reference(name);
        let texts = texts(&r);
        // One batch of texts of different lengths (one truncated at the model's maximum).
        let resp = server.post_json("/embed_sparse", &json!({"inputs": texts, "truncate": true, "model": model}));
        assert_eq!(resp.status, 200, "{name}: {}", resp.body);
        assert_eq!(resp.header("x-bulkhead-unit"), Some("ort:cpu"));
        assert!(resp.header("server-timing").is_some_and(|t| t.contains("infer")));
        let batch = resp.json();
        assert_eq!(batch.as_array().unwrap().len(), texts.len());
        for (i, text) in texts.iter().enumerate() {
            worst = worst.max(check(&batch[i], &r["batch"][i], &format!("{name} text {i} in the batch")));
            // One by one: the same as in the batch (padding changes nothing).
            let one = server.post_json("/embed_sparse", &json!({"inputs": text, "truncate": true, "model": model}));
            assert_eq!(one.status, 200, "{name}: {}", one.body);
            worst = worst.max(check(&one.json()[0], &r["single"][i], &format!("{name} text {i} alone")));
        }
        if let Some(k) = r["max_active_dims"].as_u64() {
            assert!(batch.as_array().unwrap().iter().all(|v| v.as_array().unwrap().len() == k as usize));
        }
        // The OpenAI route with the extension field: the same vectors, in input order, with usage.
        let resp = server.post_json("/v1/embeddings", &json!({"input": texts, "model": model, "sparse": true}));
        assert_eq!(resp.status, 200, "{name}: {}", resp.body);
        let v = resp.json();
        assert_eq!(v["model"], model);
        let tokens: usize = r["token_ids"].as_array().unwrap().iter().map(|t| t.as_array().unwrap().len()).sum();
        assert_eq!(v["usage"]["prompt_tokens"], tokens);
        for (i, d) in v["data"].as_array().unwrap().iter().enumerate() {
            assert_eq!((d["object"].as_str(), d["index"].as_u64()), (Some("embedding"), Some(i as u64)));
            worst = worst.max(check(&d["sparse_embedding"], &r["batch"][i], &format!("{name} /v1/embeddings {i}")));
        }
    }
    eprintln!("largest error against SparseEncoder: {worst:e}");

    // Without a model named, the sparse routes find the sparse model beside the dense default.
    let resp = server.post_json("/embed_sparse", &json!({"inputs": ["hello"]}));
    assert_eq!(resp.status, 200, "{}", resp.body);
    check(&resp.json()[0], &reference("splade-bert")["batch"][1], "the default sparse model");

    // KServe infer answers the pooled vector over the whole vocabulary.
    let body = json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hello"]}]});
    let resp = server.post_json("/v2/models/splade/infer", &body);
    assert_eq!(resp.status, 200, "{}", resp.body);
    let out = &resp.json()["outputs"][0];
    assert_eq!(out["shape"], json!([1, 420]));
    let dense: Vec<f32> = out["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let (indices, values) = pairs(&resp_sparse(&server, "hello"));
    let nonzero: Vec<u64> = (0..dense.len() as u64).filter(|&i| dense[i as usize] != 0.0).collect();
    assert_eq!(nonzero, indices);
    assert!(indices.iter().zip(&values).all(|(&i, v)| dense[i as usize] == *v));

    // /info describes it as text-embeddings-inference does.
    let info = server.request("GET", "/info?model=splade", &[], None);
    assert_eq!(info.status, 200, "{}", info.body);
    assert_eq!(info.json()["model_type"], json!({"embedding": {"pooling": "splade"}}), "{}", info.body);

    // The document lists the route and the extension field.
    let doc = server.request("GET", "/openapi.json", &[], None).json();
    assert!(doc["paths"]["/embed_sparse"]["post"].is_object());
    assert!(doc["components"]["schemas"]["EmbeddingsRequest"]["properties"]["sparse"].is_object());
    assert_eq!(doc["components"]["schemas"]["SparseModelName"]["enum"], json!(["splade", "splade-sum", "splade-top8"]));
}

fn resp_sparse(server: &Server, text: &str) -> Value {
    let resp = server.post_json("/embed_sparse", &json!({"inputs": text, "model": "splade"}));
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.json()[0].clone()
}

#[test]
fn wrong_kinds_and_bad_inputs_are_refused_naming_the_problem() {
    let server = server();
    let error = |path: &str, body: Value, status: u16| {
        let resp = server.post_json(path, &body);
        assert_eq!(resp.status, status, "{path} {body}: {}", resp.body);
        resp.json()["error"]["message"].as_str().unwrap().to_string()
    };
    // Sparse of a dense model: what it is and what serves it.
    let m = error("/embed_sparse", json!({"inputs": "hi", "model": "dense"}), 400);
    assert!(m.contains("`dense` is an embedding model") && m.contains("POST /v1/embeddings"), "{m}");
    let m = error("/v1/embeddings", json!({"input": "hi", "model": "dense", "sparse": true}), 400);
    assert!(m.contains("embedding model") && m.contains("sparse"), "{m}");
    // Dense of a sparse-only model: it has no dense vectors; the message names the sparse routes.
    for (path, body) in [
        ("/v1/embeddings", json!({"input": "hi", "model": "splade"})),
        ("/embed", json!({"inputs": "hi", "model": "splade"})),
    ] {
        let m = error(path, body, 400);
        assert!(m.contains("sparse embedding model (SPLADE)") && m.contains("POST /embed_sparse"), "{path}: {m}");
    }
    let m = error("/rerank", json!({"query": "q", "texts": ["a"], "model": "splade"}), 400);
    assert!(m.contains("POST /embed_sparse"), "{m}");
    // Bad inputs.
    let m = error("/embed_sparse", json!({"inputs": ["ok", "  "], "model": "splade"}), 422);
    assert!(m.contains("input 1 is empty"), "{m}");
    let long = "word ".repeat(200);
    let m = error("/embed_sparse", json!({"inputs": long, "model": "splade"}), 422);
    assert!(m.contains("longer than the model's maximum of 40 tokens") && m.contains("truncate"), "{m}");
    error("/embed_sparse", json!({"inputs": [], "model": "splade"}), 422);
    error("/embed_sparse", json!({"inputs": 3}), 422);
    error("/embed_sparse", json!({"inputs": "hi", "normalize": true}), 422);
    error("/embed_sparse", json!({"inputs": "hi", "model": "nope"}), 404);
    let m = error("/v1/embeddings", json!({"input": "hi", "model": "splade", "sparse": true, "dimensions": 8}), 422);
    assert!(m.contains("dimensions cannot be combined"), "{m}");
    let m = error("/v1/embeddings", json!({"input": [1, 2, 3], "model": "splade", "sparse": true}), 422);
    assert!(m.contains("not token ids"), "{m}");
    assert_eq!(server.request("GET", "/health", &[], None).status, 200, "still healthy");
}

#[test]
fn the_cli_embeds_sparse_vectors_and_refuses_the_wrong_kind() {
    let r = reference("splade-bert-top8");
    let texts = texts(&r);
    let model = fixture("splade-bert-top8");
    let mut args =
        vec!["embed", "--sparse", "--json", "--compute-units", "ort:cpu", "--model", model.to_str().unwrap()];
    args.push("--");
    args.extend(texts.iter().map(String::as_str));
    let out = bulkhead(&args, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["unit"].as_str(), v["vocab_size"].as_u64(), v["max_active_dims"].as_u64()),
        (Some("ort:cpu"), Some(420), Some(8))
    );
    for (i, got) in v["sparse_embeddings"].as_array().unwrap().iter().enumerate() {
        check(got, &r["batch"][i], &format!("CLI text {i}"));
    }
    // Plain output: one list per line.
    let plain = bulkhead(
        &["embed", "--sparse", "--compute-units", "ort:cpu", "--model", model.to_str().unwrap(), "hello"],
        &[],
    );
    assert!(plain.status.success(), "{}", stderr(&plain));
    check(&serde_json::from_slice(&plain.stdout).unwrap(), &r["batch"][1], "CLI plain");

    // A sparse model without --sparse, and --sparse on a dense model: usage errors naming what to do.
    let out = bulkhead(&["embed", "--compute-units", "ort:cpu", "--model", model.to_str().unwrap(), "hi"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("add --sparse"), "{}", stderr(&out));
    let dense = common::repo().join("tests/fixtures/arch/xlm-roberta");
    let out =
        bulkhead(&["embed", "--sparse", "--compute-units", "ort:cpu", "--model", dense.to_str().unwrap(), "hi"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a sparse embedding model") && stderr(&out).contains("drop --sparse"),
        "{}",
        stderr(&out)
    );
}
