//! The OpenAPI 3.1 description served at `/openapi.json`.

use serde_json::{json, Value};

fn error_responses() -> Value {
    let e = json!({ "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    json!({
        "400": { "description": "malformed JSON", "content": e["content"] },
        "401": { "description": "missing or invalid API key", "content": e["content"] },
        "404": { "description": "unknown model", "content": e["content"] },
        "413": { "description": "body too large", "content": e["content"] },
        "422": { "description": "wrong types or shapes, too many inputs, input too long, or a poison request", "content": e["content"] },
        "429": { "description": "overloaded; see Retry-After", "content": e["content"] },
        "503": { "description": "no unit can serve now", "content": e["content"] }
    })
}

fn inference(summary: &str, request: Value, response: Value) -> Value {
    let mut responses = error_responses();
    responses["200"] = json!({
        "description": "OK. Headers: x-bulkhead-unit (the unit that computed), Server-Timing (tokenize, queue, infer, post)",
        "headers": {
            "x-bulkhead-unit": { "schema": { "type": "string" }, "description": "the unit that computed the answer" },
            "Server-Timing": { "schema": { "type": "string" }, "description": "tokenize, queue, infer and post durations in ms" }
        },
        "content": { "application/json": { "schema": response } }
    });
    json!({ "post": { "summary": summary, "requestBody": { "required": true, "content": { "application/json": { "schema": request } } }, "responses": responses } })
}

fn simple_get(summary: &str, content_type: &str) -> Value {
    json!({ "get": { "summary": summary, "responses": { "200": { "description": "OK", "content": { content_type: {} } }, "503": { "description": "not ready / unhealthy" } } } })
}

/// The document.
pub fn document() -> Value {
    let string_or_array = json!({ "oneOf": [
        { "type": "string" },
        { "type": "array", "items": { "type": "string" } },
        { "type": "array", "items": { "type": "integer" } },
        { "type": "array", "items": { "type": "array", "items": { "type": "integer" } } }
    ]});
    let name_param = json!([{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }]);
    let mut paths = json!({
        "/v1/embeddings": inference(
            "OpenAI-compatible embeddings",
            json!({ "type": "object", "required": ["input"], "properties": {
                "input": string_or_array, "model": { "type": "string" },
                "encoding_format": { "enum": ["float", "base64"] }, "dimensions": { "type": "integer" }, "user": { "type": "string" } } }),
            json!({ "type": "object", "properties": { "object": { "const": "list" }, "model": { "type": "string" },
                "data": { "type": "array", "items": { "type": "object", "properties": { "object": { "const": "embedding" }, "index": { "type": "integer" },
                    "embedding": { "oneOf": [ { "type": "array", "items": { "type": "number" } }, { "type": "string", "contentEncoding": "base64" } ] } } } },
                "usage": { "type": "object", "properties": { "prompt_tokens": { "type": "integer" }, "total_tokens": { "type": "integer" } } } } })
        ),
        "/embed": inference(
            "text-embeddings-inference compatible embeddings (default model)",
            json!({ "type": "object", "required": ["inputs"], "properties": {
                "inputs": { "oneOf": [ { "type": "string" }, { "type": "array", "items": { "type": "string" } } ] },
                "normalize": { "type": "boolean", "default": true }, "truncate": { "type": "boolean", "default": false } } }),
            json!({ "type": "array", "items": { "type": "array", "items": { "type": "number" } } })
        ),
        "/v2/models/{name}/infer": inference(
            "KServe v2 inference with JSON tensors. Embedding models: a BYTES tensor of texts, or INT64 input_ids [n, seq] (+ attention_mask). Any other ONNX model (served without a tokenizer): its graph inputs by name, as GET /v2/models/{name} lists them; returns its outputs (or those named in `outputs`)",
            json!({ "type": "object", "required": ["inputs"], "properties": { "id": { "type": "string" }, "inputs": { "type": "array", "items": {
                "type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
                    "name": { "type": "string" }, "shape": { "type": "array", "items": { "type": "integer" } },
                    "datatype": { "type": "string" }, "data": { "type": "array" } } } } } }),
            json!({ "type": "object", "properties": { "model_name": { "type": "string" }, "outputs": { "type": "array" } } })
        ),
        "/v1/models": simple_get("OpenAI-compatible model list", "application/json"),
        "/v2/health/live": simple_get("liveness of the server process", "application/json"),
        "/v2/health/ready": simple_get("200 once every model has a warmed-up serving unit", "application/json"),
        "/v2/models/{name}": simple_get("KServe v2 model metadata", "application/json"),
        "/v2/models/{name}/ready": simple_get("KServe v2 model readiness", "application/json"),
        "/health": simple_get("200 only when every model has a unit that answered a real forward pass recently", "application/json"),
        "/units": simple_get("per model: the chain and each unit's state, crashes, last exit, stderr tail, predictions, memory, recycles", "application/json"),
        "/metrics": simple_get("Prometheus metrics", "text/plain"),
        "/openapi.json": simple_get("this document", "application/json")
    });
    for p in ["/v2/models/{name}", "/v2/models/{name}/ready"] {
        paths[p]["get"]["parameters"] = name_param.clone();
    }
    paths["/v2/models/{name}/infer"]["post"]["parameters"] = name_param;
    json!({
        "openapi": "3.1.0",
        "info": { "title": "bulkhead", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Safe, fast and explainable local ML inference on unreliable compute units." },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": { "Error": { "type": "object", "required": ["error"], "properties": { "error": {
                "type": "object", "required": ["message", "type"],
                "properties": { "message": { "type": "string" }, "type": { "type": "string" } } } } } }
        },
        "paths": paths
    })
}
