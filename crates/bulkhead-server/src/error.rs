//! API errors and their status codes: the one place where an error becomes an HTTP status, an error `type` and
//! headers. The OpenAPI document lists each route's error responses from the same table ([`ErrorKind`]).

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::{ErrorBody, ErrorDetail, ErrorType};
use crate::BackendError;

/// Everything a request can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// JSON of the wrong shape or types, or values the model cannot take.
    #[error("{0}")]
    Invalid(String),
    /// Body too large.
    #[error("request body is larger than the limit of {0} bytes (--max-body-bytes)")]
    TooLarge(usize),
    /// An input past a size limit other than the body's (an image whose header declares too many pixels).
    #[error("{0}")]
    InputTooLarge(String),
    /// The model exists but is of another kind than the route serves (texts sent to a tensor model, a reranker
    /// asked for embeddings); the message names the route to use.
    #[error("{0}")]
    WrongKind(String),
    /// No such model.
    #[error("model `{0}` is not served here; the served models: {1} (GET /v1/models lists them)")]
    UnknownModel(String, String),
    /// No such route.
    #[error("no route {0}; GET /openapi.json lists the routes")]
    NoRoute(String),
    /// The model's queue is full.
    #[error("model `{0}` is overloaded: its queue is full; retry shortly")]
    Overloaded(String),
    /// Missing or wrong API key.
    #[error("missing or invalid API key: send `Authorization: Bearer <key>`")]
    Unauthorized,
    /// The request itself crashed workers (a poison request).
    #[error("{0}")]
    Poison(String),
    /// No unit can serve right now.
    #[error("{0}")]
    Unavailable(String),
    /// The request ran past the per-request deadline.
    #[error("the request took longer than the server's deadline of {} s (--request-timeout-s); it was abandoned, retry later or with fewer inputs", .0.as_secs_f64())]
    Timeout(Duration),
    /// The server holds as many connections as it accepts.
    #[error("the server is at its limit of {0} connections (--max-connections); retry shortly")]
    TooManyConnections(usize),
    /// An uploaded file that cannot be used: not audio, damaged, empty, an unsupported codec, a form without it.
    #[error("{0}")]
    BadFile(String),
    /// An uploaded file past a limit of its own (duration, size).
    #[error("{0}")]
    FileTooLarge(String),
    /// Anything else on the server side.
    #[error("{0}")]
    Internal(String),
}

/// The kinds of [`ApiError`], without their details: what the status table and the OpenAPI document speak of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// [`ApiError::MalformedJson`].
    MalformedJson,
    /// [`ApiError::Invalid`].
    Invalid,
    /// [`ApiError::TooLarge`].
    TooLarge,
    /// [`ApiError::WrongKind`].
    WrongKind,
    /// [`ApiError::UnknownModel`].
    UnknownModel,
    /// [`ApiError::NoRoute`].
    NoRoute,
    /// [`ApiError::Overloaded`].
    Overloaded,
    /// [`ApiError::Unauthorized`].
    Unauthorized,
    /// [`ApiError::Poison`].
    Poison,
    /// [`ApiError::Unavailable`].
    Unavailable,
    /// [`ApiError::Timeout`].
    Timeout,
    /// [`ApiError::TooManyConnections`].
    TooManyConnections,
    /// [`ApiError::BadFile`].
    BadFile,
    /// [`ApiError::FileTooLarge`].
    FileTooLarge,
    /// [`ApiError::Internal`].
    Internal,
}

impl ErrorKind {
    /// The HTTP status and the error `type` of the JSON body: the one mapping.
    pub fn status(self) -> (StatusCode, ErrorType) {
        use ErrorType::*;
        match self {
            ErrorKind::MalformedJson => (StatusCode::BAD_REQUEST, InvalidRequestError),
            ErrorKind::Invalid => (StatusCode::UNPROCESSABLE_ENTITY, InvalidRequestError),
            ErrorKind::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, InvalidRequestError),
            ErrorKind::WrongKind => (StatusCode::BAD_REQUEST, InvalidRequestError),
            ErrorKind::UnknownModel | ErrorKind::NoRoute => (StatusCode::NOT_FOUND, NotFoundError),
            ErrorKind::Overloaded => (StatusCode::TOO_MANY_REQUESTS, OverloadedError),
            ErrorKind::Unauthorized => (StatusCode::UNAUTHORIZED, AuthenticationError),
            ErrorKind::Poison => (StatusCode::UNPROCESSABLE_ENTITY, PoisonRequestError),
            ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, UnavailableError),
            ErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, TimeoutError),
            ErrorKind::TooManyConnections => (StatusCode::SERVICE_UNAVAILABLE, OverloadedError),
            ErrorKind::BadFile => (StatusCode::BAD_REQUEST, InvalidRequestError),
            ErrorKind::FileTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, InvalidRequestError),
            ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, ServerError),
        }
    }

    /// Whether the response says when to retry (`Retry-After`).
    pub fn retry_after(self) -> bool {
        matches!(self, ErrorKind::Overloaded | ErrorKind::Unavailable | ErrorKind::TooManyConnections)
    }

    /// What a response of this kind means, for the OpenAPI document.
    pub fn describe(self) -> &'static str {
        match self {
            ErrorKind::MalformedJson => "the body is not JSON",
            ErrorKind::Invalid => {
                "wrong types, shapes or values (too many inputs, an input too long without \
                                   `truncate`, a token id outside the vocabulary, unknown prompt, `dimensions` \
                                   the model cannot give)"
            }
            ErrorKind::TooLarge => "the body is larger than --max-body-bytes, or an image past --max-image-pixels",
            ErrorKind::WrongKind => {
                "the model is of another kind than the route serves (texts sent to a tensor model, a reranker to an \
                 embedding route...); the message names the route to use"
            }
            ErrorKind::UnknownModel => "no such model",
            ErrorKind::NoRoute => "no such route",
            ErrorKind::Overloaded => "the model's queue is full; retry after `Retry-After` seconds",
            ErrorKind::Unauthorized => "missing or wrong API key",
            ErrorKind::Poison => "the request crashed two workers (a poison request)",
            ErrorKind::Unavailable => "no unit of the model can serve now; retry after `Retry-After` seconds",
            ErrorKind::Timeout => "the request ran past --request-timeout-s",
            ErrorKind::TooManyConnections => "the server is at --max-connections",
            ErrorKind::BadFile => {
                "the uploaded file cannot be used (not audio, damaged, empty, an unsupported codec) or the form \
                 lacks it"
            }
            ErrorKind::FileTooLarge => "the uploaded file is longer than --max-audio-s or larger than its limit",
            ErrorKind::Internal => "the engine failed on this input",
        }
    }
}

impl ApiError {
    /// Its kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ApiError::MalformedJson(_) => ErrorKind::MalformedJson,
            ApiError::Invalid(_) => ErrorKind::Invalid,
            ApiError::TooLarge(_) | ApiError::InputTooLarge(_) => ErrorKind::TooLarge,
            ApiError::WrongKind(_) => ErrorKind::WrongKind,
            ApiError::UnknownModel(..) => ErrorKind::UnknownModel,
            ApiError::NoRoute(_) => ErrorKind::NoRoute,
            ApiError::Overloaded(_) => ErrorKind::Overloaded,
            ApiError::Unauthorized => ErrorKind::Unauthorized,
            ApiError::Poison(_) => ErrorKind::Poison,
            ApiError::Unavailable(_) => ErrorKind::Unavailable,
            ApiError::Timeout(_) => ErrorKind::Timeout,
            ApiError::TooManyConnections(_) => ErrorKind::TooManyConnections,
            ApiError::BadFile(_) => ErrorKind::BadFile,
            ApiError::FileTooLarge(_) => ErrorKind::FileTooLarge,
            ApiError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The HTTP status and the error `type` of the JSON body.
    pub fn status(&self) -> (StatusCode, ErrorType) {
        self.kind().status()
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: ErrorDetail { message: self.to_string(), kind: self.status().1 } }
    }

    /// The whole response as HTTP/1.1 bytes, closing the connection: for a connection refused before any request
    /// was read.
    pub fn http1_bytes(&self) -> Vec<u8> {
        let (status, _) = self.status();
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let retry = if self.kind().retry_after() { "retry-after: 1\r\n" } else { "" };
        let head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{retry}connection: close\r\n\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        );
        [head.into_bytes(), body].concat()
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> ApiError {
        match e {
            BackendError::Poison(m) => ApiError::Poison(m),
            BackendError::Unavailable(m) => ApiError::Unavailable(m),
            e @ BackendError::ShuttingDown => ApiError::Unavailable(e.to_string()),
            BackendError::Failed(m) => ApiError::Internal(m),
            BackendError::Unsupported(m) => ApiError::WrongKind(m),
            BackendError::Invalid(m) => ApiError::Invalid(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _) = self.status();
        let mut resp = (status, axum::Json(self.body())).into_response();
        if self.kind().retry_after() {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let ApiError::Unauthorized = self {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_complete_http_responses() {
        let bytes = ApiError::TooManyConnections(8).http1_bytes();
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{head}");
        assert!(head.contains("retry-after: 1") && head.contains("connection: close"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["type"], "overloaded_error");
        assert!(v["error"]["message"].as_str().unwrap().contains("--max-connections"));
    }

    #[test]
    fn backend_errors_map_to_their_statuses() {
        let s = |e: BackendError| ApiError::from(e).status().0.as_u16();
        assert_eq!(s(BackendError::Poison("p".into())), 422);
        assert_eq!(s(BackendError::Unavailable("u".into())), 503);
        assert_eq!(s(BackendError::ShuttingDown), 503);
        assert_eq!(s(BackendError::Failed("f".into())), 500);
        assert_eq!(ApiError::Timeout(Duration::from_secs(3)).status().0.as_u16(), 504);
    }
}
