//! The OpenAPI 3.1 document served at `/openapi.json`, derived from the request and response types (`api`) and the
//! handlers' annotations, then completed for this server:
//!
//! * each operation's error responses come from the error table (`error::ErrorKind`), so a status can only be
//!   documented the way the server answers it; every operation may answer 504 (the request deadline) and, with an
//!   API key, 401;
//! * inference responses document `x-bulkhead-unit` and `Server-Timing`;
//! * the values known only at start-up are set on their named components: the served model names, the token id
//!   range and sequence length, the output sizes `dimensions` may ask for and the prompt names (with several
//!   embedding models: what every one of them accepts), and `--max-inputs`.

use std::collections::BTreeSet;

use axum::body::Bytes;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{Array, Object, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder};
use utoipa::OpenApi;

use crate::api;
use crate::error::ErrorKind;
use crate::routes::common::is_probe;
use crate::routes::{audio, images, info, kserve, models, ollama, openai, ops, rerank, segment, sparse, tei, tokens};
use crate::state::{AppState, ModelKind};
use bulkhead_core::ModelTask;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "bulkhead",
        description = "Safe, fast and explainable local ML inference on unreliable compute units: OpenAI, \
                       text-embeddings-inference and KServe v2 APIs over supervised worker processes. Every \
                       inference response says which unit computed it (`x-bulkhead-unit`) and how long each stage \
                       took (`Server-Timing`).",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        openai::embeddings,
        openai::models,
        models::load,
        models::unload,
        images::embeddings_image,
        tei::embed_route,
        sparse::embed_sparse,
        rerank::rerank,
        rerank::predict,
        rerank::cohere_rerank,
        tokens::tokenize,
        tokens::decode,
        info::info,
        info::similarity,
        ollama::embed_route,
        ollama::embeddings,
        ollama::tags,
        ollama::show,
        ollama::ps,
        ollama::version,
        segment::segment,
        audio::transcriptions,
        audio::translations,
        kserve::live,
        kserve::ready,
        kserve::metadata,
        kserve::model_ready,
        kserve::infer,
        ops::health,
        ops::units,
        ops::metrics,
        ops::openapi,
    ),
    components(schemas(
        api::ErrorBody,
        api::ModelName,
        api::EmbeddingModelName,
        api::PromptName,
        api::Dimensions,
        api::TokenId,
        api::TokenRow,
        api::TokenBatch,
        api::TextBatch,
        api::images::ImageModelName,
        api::images::ItemBatch,
        api::images::ContentPart,
        api::tei::TeiImage,
        api::tei::TeiItemBatch,
        api::rerank::RerankModelName,
        api::rerank::ClassifierModelName,
        api::rerank::TextPair,
        api::rerank::SequenceBatch,
        api::rerank::DocumentBatch,
        api::rerank::TopN,
        api::sparse::SparseModelName,
        api::sparse::SparseEmbeddingsResponse,
        api::tokens::DecodeBatch,
        api::tokens::TextModelName,
        api::tokens::VocabId,
        api::info::SimilaritySentences,
        api::ollama::OllamaModelName,
        api::ollama::OllamaTexts,
        api::segment::SegmentMask,
        api::segment::Rle,
        api::segment::MaskFormat,
        api::audio::ResponseFormat,
        api::audio::TranscriptionResponse,
        api::audio::VerboseTranscription,
        api::audio::VerboseSegment
    ))
)]
struct ApiDoc;

/// Operations with errors of their own, beyond the deadline and the API key.
const ERRORS: &[(&str, &[ErrorKind])] = &[
    ("/v1/embeddings", openai::EMBEDDINGS_ERRORS),
    ("/embed", tei::EMBED_ERRORS),
    ("/embed_sparse", sparse::SPARSE_ERRORS),
    ("/embeddings_image", images::IMAGE_ERRORS),
    ("/rerank", rerank::SCORE_ERRORS),
    ("/v1/rerank", rerank::SCORE_ERRORS),
    ("/predict", rerank::SCORE_ERRORS),
    ("/tokenize", tokens::TOKEN_ERRORS),
    ("/decode", tokens::TOKEN_ERRORS),
    ("/info", info::INFO_ERRORS),
    ("/similarity", info::SIMILARITY_ERRORS),
    ("/api/embed", ollama::OLLAMA_EMBED_ERRORS),
    ("/api/embeddings", ollama::OLLAMA_EMBED_ERRORS),
    ("/api/show", ollama::OLLAMA_SHOW_ERRORS),
    ("/api/tags", ollama::OLLAMA_LIST_ERRORS),
    ("/api/ps", ollama::OLLAMA_LIST_ERRORS),
    ("/v1/segment", segment::SEGMENT_ERRORS),
    ("/v2/models/{name}", kserve::MODEL_ERRORS),
    ("/v1/models/{name}/load", models::LIFECYCLE_ERRORS),
    ("/v1/models/{name}/unload", models::LIFECYCLE_ERRORS),
    ("/v2/models/{name}/ready", kserve::READY_ERRORS),
    ("/v2/models/{name}/infer", kserve::INFER_ERRORS),
    ("/v1/audio/transcriptions", audio::AUDIO_ERRORS),
    ("/v1/audio/translations", audio::AUDIO_ERRORS),
];

/// Operations whose 200 carries the inference headers.
const INFERENCE: &[&str] = &[
    "/v1/embeddings",
    "/embeddings_image",
    "/embed",
    "/embed_sparse",
    "/rerank",
    "/v1/rerank",
    "/predict",
    "/v1/segment",
    "/v2/models/{name}/infer",
    "/similarity",
    "/api/embed",
    "/api/embeddings",
    "/v1/audio/transcriptions",
    "/v1/audio/translations",
];

/// What this server's embedding models accept, taken across all of them.
struct Accepted {
    models: Vec<String>,
    embedding_models: Vec<String>,
    image_models: Vec<String>,
    rerankers: Vec<String>,
    sparse_models: Vec<String>,
    classifiers: Vec<String>,
    /// Models with a tokenizer (embedding models and cross-encoders).
    text_models: Vec<String>,
    vocab: Option<usize>,
    /// The largest vocabulary of the models with a tokenizer.
    max_vocab: Option<usize>,
    max_tokens: Option<usize>,
    /// `Ok(n)`: any size from 1 to n; `Err(sizes)`: only these.
    dimensions: Option<Result<usize, Vec<usize>>>,
    prompts: Vec<String>,
    max_inputs: usize,
    /// Some model is not loaded (models on demand): the limits that only a loaded model knows (vocabulary,
    /// lengths, dimensions, prompts) are left open.
    partial: bool,
}

impl Accepted {
    fn of(state: &AppState) -> Accepted {
        let mut a = Accepted {
            models: state.models.names(),
            embedding_models: vec![],
            image_models: vec![],
            rerankers: vec![],
            sparse_models: vec![],
            classifiers: vec![],
            text_models: vec![],
            vocab: None,
            max_vocab: None,
            max_tokens: None,
            dimensions: None,
            prompts: vec![],
            max_inputs: state.config.max_inputs,
            partial: false,
        };
        // Models not loaded are named by the task their files declare.
        for m in state.models.list().into_iter().filter(|m| m.entry.is_none()) {
            a.partial = true;
            let Some(files) = m.files.filter(|f| !f.is_tensor_model()) else { continue };
            match files.task {
                ModelTask::Rerank { .. } => a.rerankers.push(m.name.clone()),
                ModelTask::Classify { .. } => a.classifiers.push(m.name.clone()),
                ModelTask::ImageText => {
                    a.image_models.push(m.name.clone());
                    a.embedding_models.push(m.name.clone());
                }
                ModelTask::Embedding => {
                    a.embedding_models.push(m.name.clone());
                    a.text_models.push(m.name.clone());
                }
                _ => {}
            }
            if files.task.is_cross_encoder() {
                a.text_models.push(m.name.clone());
            }
        }
        let mut prompts: Option<BTreeSet<String>> = None;
        let mut sizes: Option<BTreeSet<usize>> = None;
        for m in state.models.loaded() {
            match m.task() {
                Some(ModelTask::Rerank { .. }) => a.rerankers.push(m.name.clone()),
                Some(ModelTask::SparseEmbedding(_)) => a.sparse_models.push(m.name.clone()),
                Some(ModelTask::Classify { .. }) => a.classifiers.push(m.name.clone()),
                Some(ModelTask::ImageText) => a.image_models.push(m.name.clone()),
                _ => {}
            }
            if let ModelKind::Embedding { tokenizer, .. } | ModelKind::CrossEncoder { tokenizer, .. } = &m.kind {
                a.text_models.push(m.name.clone());
                a.max_vocab = Some(a.max_vocab.unwrap_or(0).max(tokenizer.vocab_size()));
            }
            let (tokenizer, dimensions) = match &m.kind {
                ModelKind::Embedding { tokenizer, dimensions } | ModelKind::ImageText { tokenizer, dimensions, .. } => {
                    (tokenizer, *dimensions)
                }
                _ => continue,
            };
            a.embedding_models.push(m.name.clone());
            a.vocab = Some(a.vocab.map_or(tokenizer.vocab_size(), |v| v.min(tokenizer.vocab_size())));
            a.max_tokens = Some(a.max_tokens.map_or(tokenizer.max_len(), |v| v.min(tokenizer.max_len())));
            let mine: BTreeSet<usize> = match m.files.matryoshka.sizes(dimensions) {
                Some(s) => s.into_iter().collect(),
                None => (1..=dimensions).collect(),
            };
            sizes = Some(match sizes {
                None => mine,
                Some(s) => s.intersection(&mine).copied().collect(),
            });
            let names: BTreeSet<String> = m.files.prompts.named.keys().cloned().collect();
            prompts = Some(match prompts {
                None => names,
                Some(p) => p.intersection(&names).cloned().collect(),
            });
        }
        a.prompts = prompts.unwrap_or_default().into_iter().collect();
        if a.partial {
            (a.vocab, a.max_vocab, a.max_tokens) = (None, None, None);
            return a;
        }
        a.dimensions = sizes.map(|s| {
            let max = s.last().copied().unwrap_or(0);
            if s.len() == max {
                Ok(max)
            } else {
                Err(s.into_iter().collect())
            }
        });
        a
    }
}

/// The document of this server, as JSON.
pub fn render(state: &AppState) -> Bytes {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let api_key = state.config.api_key.is_some();
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [&mut item.get, &mut item.post].into_iter().flatten();
        for op in ops {
            let own = ERRORS.iter().find(|(p, _)| p == path).map_or(&[][..], |(_, k)| k);
            let mut kinds = own.to_vec();
            kinds.push(ErrorKind::Timeout);
            if api_key && !is_probe(path) {
                kinds.push(ErrorKind::Unauthorized);
            }
            add_errors(op, &kinds);
            if INFERENCE.contains(&path.as_str()) {
                add_inference_headers(op);
            }
        }
    }
    if api_key {
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        components.security_schemes.insert("bearer".into(), RefOr::T(bearer));
        doc.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
    }
    specialise(&mut doc, &Accepted::of(state));
    Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())
}

/// Documents `kinds` as responses of `op`, one per status (kinds that share a status share its description).
fn add_errors(op: &mut Operation, kinds: &[ErrorKind]) {
    let mut by_status: Vec<(u16, Vec<ErrorKind>)> = vec![];
    for &k in kinds {
        let status = k.status().0.as_u16();
        match by_status.iter_mut().find(|(s, _)| *s == status) {
            Some((_, ks)) => ks.push(k),
            None => by_status.push((status, vec![k])),
        }
    }
    for (status, ks) in by_status {
        let description = ks.iter().map(|k| k.describe()).collect::<Vec<_>>().join("; or ");
        let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
        let mut response = ResponseBuilder::new().description(description).content("application/json", content);
        if ks.iter().any(|k| k.retry_after()) {
            let header = HeaderBuilder::new()
                .schema(Some(Object::with_type(Type::Integer)))
                .description(Some("seconds to wait before retrying"))
                .build();
            response = response.header("Retry-After", header);
        }
        op.responses.responses.insert(status.to_string(), RefOr::T(response.build()));
    }
}

fn add_inference_headers(op: &mut Operation) {
    let Some(RefOr::T(ok)) = op.responses.responses.get_mut("200") else { return };
    let string = || Object::with_type(Type::String);
    let header = |what: &str| RefOr::T(HeaderBuilder::new().schema(Some(string())).description(Some(what)).build());
    ok.headers.insert("x-bulkhead-unit".into(), header("the compute unit that computed the answer"));
    ok.headers.insert(
        "x-bulkhead-precision".into(),
        header("the weight precision of the model that computed the answer: fp32, fp16, bf16 or int8"),
    );
    ok.headers.insert(
        "Server-Timing".into(),
        header(
            "stage durations in milliseconds: tokenize, queue, infer and post; for rows, `batch` with the rows, real \
             tokens and padded tokens of the forward passes that computed the answer; on the speech routes decode, \
             queue, infer and, within infer, features, encode and generate",
        ),
    );
}

/// Sets the start-up values on their components.
fn specialise(doc: &mut Document, a: &Accepted) {
    let Some(components) = doc.components.as_mut() else { return };
    let schemas = &mut components.schemas;
    let names = |v: &[String]| v.iter().map(|n| serde_json::Value::from(n.as_str())).collect::<Vec<_>>();
    if let Some(o) = object(schemas.get_mut("ModelName")) {
        o.enum_values = Some(names(&a.models));
    }
    if let Some(o) = object(schemas.get_mut("EmbeddingModelName")) {
        o.enum_values = Some(names(&a.embedding_models));
    }
    if let Some(o) = object(schemas.get_mut("TextModelName")) {
        o.enum_values = Some(names(&a.text_models));
    }
    if let Some(o) = object(schemas.get_mut("VocabId")) {
        o.minimum = Some(0usize.into());
        o.maximum = a.max_vocab.map(|v| v.saturating_sub(1).into());
    }
    if let Some(o) = object(schemas.get_mut("OllamaModelName")) {
        // As Ollama clients name them: `NAME` or `NAME:latest`.
        let tagged = a.embedding_models.iter().flat_map(|n| [n.clone(), format!("{n}:latest")]).collect::<Vec<_>>();
        o.enum_values = Some(names(&tagged));
    }
    if let Some(o) = object(schemas.get_mut("ImageModelName")) {
        o.enum_values = Some(names(&a.image_models));
    }
    if a.image_models.is_empty() {
        // No model here takes images: an image item matches nothing (an object schema with an empty `enum`).
        for part in ["ContentPart", "TeiImage"] {
            let mut none = Object::default();
            none.enum_values = Some(vec![]);
            none.description = Some("this server serves no image-text model: no image input is accepted".into());
            schemas.insert(part.into(), RefOr::T(Schema::Object(none)));
        }
    }
    if let Some(o) = object(schemas.get_mut("RerankModelName")) {
        o.enum_values = Some(names(&a.rerankers));
    }
    if let Some(o) = object(schemas.get_mut("SparseModelName")) {
        o.enum_values = Some(names(&a.sparse_models));
    }
    if let Some(o) = object(schemas.get_mut("ClassifierModelName")) {
        o.enum_values = Some(names(&a.classifiers));
    }
    if let Some(o) = object(schemas.get_mut("TopN")) {
        o.minimum = Some(1usize.into());
    }
    if let Some(arr) = array(schemas.get_mut("TextPair")) {
        arr.min_items = Some(1);
        arr.max_items = Some(2);
    }
    if let Some(o) = object(schemas.get_mut("PromptName")).filter(|_| !a.partial) {
        o.enum_values = Some(names(&a.prompts));
        if a.prompts.is_empty() {
            o.description = Some("this server's embedding models declare no prompts".into());
        }
    }
    if let Some(o) = object(schemas.get_mut("TokenId")) {
        o.minimum = Some(0usize.into());
        o.maximum = a.vocab.map(|v| v.saturating_sub(1).into());
    }
    if let Some(o) = object(schemas.get_mut("Dimensions")).filter(|_| !a.partial) {
        match &a.dimensions {
            Some(Ok(max)) => {
                o.minimum = Some(1usize.into());
                o.maximum = Some((*max).into());
            }
            Some(Err(sizes)) => o.enum_values = Some(sizes.iter().map(|&s| s.into()).collect()),
            None => o.enum_values = Some(vec![]),
        }
    }
    if let Some(arr) = array(schemas.get_mut("TokenRow")) {
        arr.min_items = Some(1);
        arr.max_items = a.max_tokens;
    }
    for batch in
        ["TextBatch", "TokenBatch", "SequenceBatch", "DocumentBatch", "DecodeBatch", "ItemBatch", "TeiItemBatch"]
    {
        if let Some(arr) = array(schemas.get_mut(batch)) {
            arr.min_items = Some(1);
            arr.max_items = Some(a.max_inputs);
        }
    }
    // The source sentence counts as an input too.
    if let Some(arr) = array(schemas.get_mut("SimilaritySentences")) {
        arr.min_items = Some(1);
        arr.max_items = Some(a.max_inputs.saturating_sub(1));
    }
    // Ollama answers an empty array with no embeddings.
    if let Some(arr) = array(schemas.get_mut("OllamaTexts")) {
        arr.max_items = Some(a.max_inputs);
    }
}

fn object(s: Option<&mut RefOr<Schema>>) -> Option<&mut Object> {
    match s {
        Some(RefOr::T(Schema::Object(o))) => Some(o),
        _ => None,
    }
}

fn array(s: Option<&mut RefOr<Schema>>) -> Option<&mut Array> {
    match s {
        Some(RefOr::T(Schema::Array(a))) => Some(a),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::config::ServeConfig;

    fn doc(api_key: Option<&str>) -> Value {
        let config = ServeConfig { api_key: api_key.map(str::to_string), ..ServeConfig::default() };
        let state = AppState::new(vec![], config);
        serde_json::from_slice(&render(&state)).unwrap()
    }

    fn statuses(doc: &Value, path: &str, method: &str) -> Vec<String> {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "no {method} {path}");
        op["responses"].as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn every_route_documents_its_errors_from_the_error_table() {
        let d = doc(None);
        assert_eq!(d["openapi"], "3.1.0");
        for (path, _) in ERRORS {
            assert!(d["paths"][path].is_object(), "the error table names {path}, which the document lacks");
        }
        let paths = d["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 32, "{:?}", paths.keys());
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                assert!(op["responses"]["504"].is_object(), "{method} {path} lacks the deadline's 504");
                assert!(op["responses"]["401"].is_null(), "no API key, no 401: {method} {path}");
            }
        }
        let emb = statuses(&d, "/v1/embeddings", "post");
        assert_eq!(emb, ["200", "400", "404", "413", "422", "429", "500", "503", "504"]);
        assert_eq!(statuses(&d, "/v2/models/{name}/ready", "get"), ["200", "404", "503", "504"]);
        let seg = statuses(&d, "/v1/segment", "post");
        assert_eq!(seg, ["200", "400", "404", "413", "422", "500", "503", "504"]);
        let body = &d["paths"]["/v1/segment"]["post"]["requestBody"]["content"];
        assert!(body["application/json"].is_object() && body["multipart/form-data"].is_object(), "{body}");
        for path in ["/v1/audio/transcriptions", "/v1/audio/translations"] {
            assert_eq!(statuses(&d, path, "post"), emb, "{path}");
            let ok = &d["paths"][path]["post"]["responses"]["200"];
            assert!(ok["headers"]["Server-Timing"].is_object(), "{ok}");
            let form = &d["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"];
            assert!(form.is_object(), "{path} takes a multipart form: {form}");
        }
        let too_many = &d["paths"]["/embed"]["post"]["responses"]["429"];
        assert!(too_many["headers"]["Retry-After"].is_object(), "{too_many}");
        assert_eq!(too_many["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody");
        let ok = &d["paths"]["/v2/models/{name}/infer"]["post"]["responses"]["200"];
        assert!(ok["headers"]["x-bulkhead-unit"].is_object() && ok["headers"]["Server-Timing"].is_object(), "{ok}");
    }

    #[test]
    fn an_api_key_is_documented_on_every_route_but_the_probes() {
        let d = doc(Some("k"));
        assert_eq!(d["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        assert!(statuses(&d, "/v1/embeddings", "post").contains(&"401".to_string()));
        for probe in ["/health", "/v2/health/live", "/v2/health/ready"] {
            assert!(!statuses(&d, probe, "get").contains(&"401".to_string()), "{probe}");
            assert_eq!(d["paths"][probe]["get"]["security"], serde_json::json!([{}]), "{probe} needs no key");
        }
    }

    #[test]
    fn start_up_values_are_set_on_their_components() {
        let d = doc(None);
        let s = &d["components"]["schemas"];
        assert_eq!(s["ModelName"]["enum"], serde_json::json!([]), "no model served");
        assert_eq!(s["TextBatch"]["maxItems"], 2048);
        assert_eq!(s["TokenBatch"]["minItems"], 1);
        assert_eq!(s["TokenRow"]["minItems"], 1);
        assert_eq!(s["TokenId"]["minimum"], 0);
        // The request types refer to them.
        let req = &s["EmbeddingsRequest"];
        assert_eq!(req["additionalProperties"], false, "{req}");
        assert!(req["properties"]["model"].to_string().contains("EmbeddingModelName"), "{req}");
    }

    #[test]
    fn the_units_view_is_described_field_by_field() {
        let d = doc(None);
        let s = &d["components"]["schemas"];
        let models = &s["Units"]["properties"]["models"]["additionalProperties"];
        assert_eq!(models["$ref"], "#/components/schemas/ModelUnits", "{models}");
        assert!(
            s["ModelUnits"]["properties"]["units"]["items"].to_string().contains("UnitView"),
            "{}",
            s["ModelUnits"]
        );
        let states = s["UnitState"]["enum"].as_array().expect("the unit states are an enum");
        for state in ["loading", "warming", "serving", "standby", "crashed", "quarantined", "unavailable"] {
            assert!(states.contains(&serde_json::json!(state)), "{state} in {states:?}");
        }
        for field in ["crashes_by_exit", "last_exit", "stderr_tail", "resident_bytes", "recycles", "pid"] {
            assert!(s["UnitView"]["properties"][field].is_object(), "{field}: {}", s["UnitView"]);
        }
    }
}
