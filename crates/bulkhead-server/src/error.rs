//! API errors and their status codes: the one place where an error becomes an HTTP response.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// JSON of the wrong shape or types.
    #[error("{0}")]
    Invalid(String),
    /// Body too large.
    #[error("request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    /// The model exists but is of the other kind (texts sent to a tensor model, or the reverse).
    #[error("{0}")]
    WrongKind(String),
    /// No such model.
    #[error("model `{0}` is not served here; GET /v1/models lists the served models")]
    UnknownModel(String),
    /// The queue is full.
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
    /// Anything else on the server side.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status and the error `type` of the JSON body.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            Self::MalformedJson(_) => (StatusCode::BAD_REQUEST, "invalid_request_error"),
            Self::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request_error"),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error"),
            Self::WrongKind(_) => (StatusCode::BAD_REQUEST, "invalid_request_error"),
            Self::UnknownModel(_) => (StatusCode::NOT_FOUND, "not_found_error"),
            Self::Overloaded(_) => (StatusCode::TOO_MANY_REQUESTS, "overloaded_error"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "authentication_error"),
            Self::Poison(_) => (StatusCode::UNPROCESSABLE_ENTITY, "poison_request_error"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable_error"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = self.status();
        let body = json!({ "error": { "message": self.to_string(), "type": kind } });
        let mut resp = (status, axum::Json(body)).into_response();
        match self {
            Self::Overloaded(_) | Self::Unavailable(_) => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::Unauthorized => {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
}
