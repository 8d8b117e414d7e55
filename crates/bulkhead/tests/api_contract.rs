//! The API contract: schemathesis (installed by `scripts/setup.sh --test`) generates requests from the server's own
//! `/openapi.json` (valid ones, invalid ones and boundary values) and checks every answer against the document:
//! no server error, every status and content type documented, bodies and headers as described, valid data
//! accepted, invalid data refused, the API key enforced, undocumented methods refused. The run is bounded (a fixed seed and a small number of
//! examples per operation) so it takes a minute or two.
//!
//! Two relaxations, in `tests/schemathesis.toml`: KServe infer may refuse schema-valid requests with 422, because the
//! rule it checks (a tensor's `data` holds exactly the product of its `shape`, with the names and types the model
//! lists) cannot be written in JSON Schema; and the cross-encoder and sparse routes may refuse them with 422 (a text with no
//! content, a pair past the model's token limit without `truncate`) or 400 (a route whose kind of model the server
//! does not serve), which JSON Schema cannot express either.

mod common;

use common::{need, venv_python, Server};

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
    response_headers_conformance,response_schema_conformance,negative_data_rejection,positive_data_acceptance,\
    missing_required_header,unsupported_method,allow_header_conformance,use_after_free,ensure_resource_availability,\
    ignored_auth";

#[test]
fn the_server_keeps_the_contract_of_its_openapi_document() {
    let Some(python) = need(venv_python(), "the project's .venv") else { return };
    let st = python.with_file_name("st");
    if !st.is_file() {
        bulkhead_testkit::skip("schemathesis is absent (run scripts/setup.sh --test)");
        return;
    }
    let Some(minilm) = need(common::minilm_folder(), "the all-MiniLM-L6-v2 package") else { return };
    // An embedding model, a tensor model, a reranker, a classifier and a sparse (SPLADE) model, so that every route
    // and every kind of KServe infer is exercised.
    let affine = common::fixture("affine_relu.onnx");
    let cross = common::repo().join("tests/fixtures/cross");
    let key = "contract-key";
    let (minilm, affine) = (format!("minilm={}", minilm.display()), format!("affine={}", affine.display()));
    let reranker = format!("reranker={}", cross.join("bert-reranker").display());
    let classifier = format!("classifier={}", cross.join("xlmr-classifier").display());
    let splade = format!("splade={}", common::repo().join("tests/fixtures/retrieval/splade-bert").display());
    let models =
        ["--model", &minilm, "--model", &affine, "--model", &reranker, "--model", &classifier, "--model", &splade];
    let mut args = vec!["--compute-units", "ort:cpu", "--api-key", key];
    args.extend(models);
    let server = Server::start(&args, &[]);
    let auth = format!("Bearer {key}");
    let doc = server.request("GET", "/openapi.json", &[("authorization", &auth)], None);
    assert_eq!(doc.status, 200, "{}", doc.body);
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("openapi.json");
    std::fs::write(&schema, &doc.body).unwrap();

    let out = std::process::Command::new(&st)
        .current_dir(dir.path())
        .args(["--config-file", common::repo().join("tests/schemathesis.toml").to_str().unwrap()])
        .args(["run", schema.to_str().unwrap(), "--url", &server.url()])
        .args(["--header", &format!("Authorization: {auth}")])
        // Every check but the response-time limit (no timing verdicts in tests: the machines are noisy) and
        // object-level authorization (there is one API key, no users).
        .args(["--checks", CHECKS, "--mode", "all", "--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "25", "--seed", "20261201", "--workers", "2", "--request-timeout", "60"])
        .args(["--no-color", "--max-failures", "50"])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{text}");
    assert!(out.status.success(), "schemathesis found failures (above)");
    assert!(server.request("GET", "/health", &[], None).status == 200, "the server is still healthy");
}
