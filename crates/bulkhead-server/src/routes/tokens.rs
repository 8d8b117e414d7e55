//! text-embeddings-inference compatible `/tokenize` and `/decode`, for every model with a tokenizer (embedding
//! models and cross-encoders). Both run on the blocking pool, as the embedding routes' tokenization does.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulkhead_embed::{TokenSpan, Tokenizer};

use super::common::{labelled, tokenize_off_runtime, JsonBody, ModelLabel};
use crate::api::tokens::{
    DecodeIds, DecodeRequest, DecodeResponse, SimpleToken, TokenizeInput, TokenizeRequest, TokenizeResponse,
};
use crate::error::{ApiError, ErrorKind};
use crate::state::{AppState, ModelEntry, ModelKind};

/// The errors `/tokenize` and `/decode` answer with.
pub const TOKEN_ERRORS: &[ErrorKind] = &[
    ErrorKind::MalformedJson,
    ErrorKind::WrongKind,
    ErrorKind::UnknownModel,
    ErrorKind::TooLarge,
    ErrorKind::Invalid,
    ErrorKind::Internal,
    ErrorKind::Unavailable,
];

/// The tokenizer of a model that has one; a clear 400 for a tensor model.
pub(crate) fn tokenizer_of(model: &ModelEntry) -> Result<&Tokenizer, ApiError> {
    match &model.kind {
        ModelKind::CrossEncoder { tokenizer, .. } => Ok(tokenizer),
        _ => model.embedding().map(|(t, _)| t),
    }
}

/// Checks the number of inputs of one request: at least one, at most `--max-inputs`.
pub(crate) fn check_inputs(what: &str, n: usize, max_inputs: usize) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::Invalid(format!("`{what}` is empty; send at least one")));
    }
    if n > max_inputs {
        return Err(ApiError::Invalid(format!("`{what}` holds {n} items; the limit is {max_inputs} (--max-inputs)")));
    }
    Ok(())
}

/// A response with the model label, for the request metrics.
pub(crate) fn with_label(body: impl IntoResponse, model: &ModelEntry) -> Response {
    let mut resp = body.into_response();
    resp.extensions_mut().insert(ModelLabel(model.name.clone()));
    resp
}

/// The tokens of each text, with the byte range each covers (text-embeddings-inference compatible). Not
/// truncated: every token of the text, whatever the model's maximum length.
#[utoipa::path(
    post,
    path = "/tokenize",
    tag = "text-embeddings-inference",
    request_body = TokenizeRequest,
    responses((status = 200, description = "The tokens of each text", body = TokenizeResponse))
)]
pub async fn tokenize(State(state): State<Arc<AppState>>, JsonBody(req): JsonBody<TokenizeRequest>) -> Response {
    let name = req.model.as_ref().map_or_else(|| state.default_model.clone(), |m| m.0.clone());
    match run_tokenize(&state, req).await {
        Ok(r) => r,
        Err(e) => labelled(e, &name),
    }
}

async fn run_tokenize(state: &AppState, req: TokenizeRequest) -> Result<Response, ApiError> {
    let model = state.model(req.model.as_ref().map(|m| m.0.as_str())).await?;
    let model = &model;
    let tokenizer = tokenizer_of(model)?.clone();
    let texts = match req.inputs {
        TokenizeInput::Text(t) => vec![t],
        TokenizeInput::Texts(t) => t.0,
    };
    check_inputs("inputs", texts.len(), state.config.max_inputs)?;
    let prompt = model
        .files
        .prompts
        .resolve(None, req.prompt_name.as_ref().map(|p| p.0.as_str()))
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    let add = req.add_special_tokens;
    let tokens = tokenize_off_runtime(state, move || {
        texts
            .into_iter()
            .map(|t| {
                let text = match &prompt {
                    Some(p) => format!("{p}{t}"),
                    None => t,
                };
                tokenizer.tokens(&text, add).map(|spans| spans.into_iter().map(simple).collect::<Vec<_>>())
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await?
    .map_err(|e| ApiError::Invalid(e.to_string()))?;
    Ok(with_label(Json(TokenizeResponse(tokens)), model))
}

fn simple(t: TokenSpan) -> SimpleToken {
    SimpleToken { id: t.id, text: t.text, special: t.special, start: t.span.map(|s| s.0), stop: t.span.map(|s| s.1) }
}

/// The text of each array of token ids (text-embeddings-inference compatible).
#[utoipa::path(
    post,
    path = "/decode",
    tag = "text-embeddings-inference",
    request_body = DecodeRequest,
    responses((status = 200, description = "One text per array of ids", body = DecodeResponse))
)]
pub async fn decode(State(state): State<Arc<AppState>>, JsonBody(req): JsonBody<DecodeRequest>) -> Response {
    let name = req.model.as_ref().map_or_else(|| state.default_model.clone(), |m| m.0.clone());
    match run_decode(&state, req).await {
        Ok(r) => r,
        Err(e) => labelled(e, &name),
    }
}

async fn run_decode(state: &AppState, req: DecodeRequest) -> Result<Response, ApiError> {
    let model = state.model(req.model.as_ref().map(|m| m.0.as_str())).await?;
    let model = &model;
    let tokenizer = tokenizer_of(model)?.clone();
    let rows: Vec<Vec<u32>> = match &req.ids {
        DecodeIds::One(row) => vec![row.to_ids()],
        DecodeIds::Many(batch) => {
            check_inputs("ids", batch.0.len(), state.config.max_inputs)?;
            batch.0.iter().map(|r| r.to_ids()).collect()
        }
    };
    let vocab = tokenizer.vocab_size();
    for (i, row) in rows.iter().enumerate() {
        if let Some(bad) = row.iter().find(|&&id| id as usize >= vocab) {
            let which = if matches!(req.ids, DecodeIds::One(_)) { String::new() } else { format!(" (array {i})") };
            return Err(ApiError::Invalid(format!(
                "token id {bad}{which} is outside the vocabulary of model `{}`, which has {vocab} tokens (ids 0 to {})",
                model.name,
                vocab.saturating_sub(1)
            )));
        }
    }
    let skip = req.skip_special_tokens;
    let texts = tokenize_off_runtime(state, move || {
        rows.iter().map(|ids| tokenizer.decode_ids(ids, skip)).collect::<Result<Vec<_>, _>>()
    })
    .await?
    .map_err(|e| ApiError::Invalid(e.to_string()))?;
    Ok(with_label(Json(DecodeResponse(texts)), model))
}
