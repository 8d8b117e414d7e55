//! Models on demand: a model's lifecycle state, the per-request `keep_alive`, and the answer of
//! `POST /v1/models/{name}/load` and `/unload`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a model is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelState {
    /// Its files are known; it is loaded by the first request that names it.
    Available,
    /// Its workers are starting (requests for it wait in their queue).
    Loading,
    /// Serving.
    Loaded,
    /// Being unloaded: its in-flight requests finish, then its workers stop.
    Draining,
    /// Its last load failed; every request gets that failure until its files change.
    Failed,
}

impl ModelState {
    /// The word used in `/v1/models`, logs and metrics.
    pub fn word(self) -> &'static str {
        match self {
            ModelState::Available => "available",
            ModelState::Loading => "loading",
            ModelState::Loaded => "loaded",
            ModelState::Draining => "draining",
            ModelState::Failed => "failed",
        }
    }
}

/// How long a model stays loaded once idle, as Ollama's `keep_alive`: seconds, or a duration such as `"5m"`,
/// `"1h30m"`, `"90s"`; `0` unloads the model after this request; a negative value keeps it loaded for good; an empty
/// string is the server's `--keep-alive`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged, expecting = "`keep_alive` must be a number of seconds or a duration such as \"5m\"")]
pub enum KeepAlive {
    /// Seconds.
    Seconds(f64),
    /// A duration (`"5m"`, `"1h"`, `"-1"`).
    Duration(String),
}

/// A parsed keep-alive: unload after this long idle, or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Unload after this long without a request (zero: right after the request).
    For(Duration),
    /// Never unload for idleness.
    Forever,
}

/// The strings a keep-alive takes (the OpenAPI document's pattern): seconds, or up to four `h`, `m`, `s`, `ms`,
/// `us`, `ns` parts, either negative; or empty.
pub const KEEP_ALIVE_PATTERN: &str =
    r"^(-?[0-9]{1,9}(\.[0-9]{1,9})?|-?([0-9]{1,9}(\.[0-9]{1,9})?(h|ms|m|s|us|ns)){1,4})?$";

impl KeepAlive {
    /// The keep-alive it asks for (`None`: the server's default, for an empty string), or what is wrong with it.
    pub fn keep(&self) -> Result<Option<Keep>, String> {
        match self {
            KeepAlive::Seconds(s) => seconds(*s).map(Some),
            KeepAlive::Duration(d) if d.trim().is_empty() => Ok(None),
            KeepAlive::Duration(d) => parse_keep(d).map(Some),
        }
    }
}

impl utoipa::PartialSchema for KeepAlive {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Number).description(Some(
                "Seconds: 0 unloads the model after this request, a negative value never unloads it",
            )))
            .item(ObjectBuilder::new().schema_type(Type::String).pattern(Some(KEEP_ALIVE_PATTERN)).description(Some(
                "Seconds or a duration such as `5m`, `1h30m`, `90s`, `-1`; empty: the server's default",
            )))
            .description(Some("How long the model stays loaded once idle (Ollama's `keep_alive`)"))
            .into()
    }
}

impl utoipa::ToSchema for KeepAlive {}

fn seconds(s: f64) -> Result<Keep, String> {
    if s.is_nan() {
        return Err("`keep_alive` is not a number".into());
    }
    if s < 0.0 {
        return Ok(Keep::Forever);
    }
    // Longer than a Duration holds is as good as for ever.
    Ok(Duration::try_from_secs_f64(s).map_or(Keep::Forever, Keep::For))
}

/// Parses a keep-alive as `--keep-alive` and Ollama take it: seconds (`300`, `-1`), or a Go-style duration of
/// `h`, `m`, `s`, `ms` parts (`5m`, `1h30m`, `2.5s`, `-1m`).
pub fn parse_keep(text: &str) -> Result<Keep, String> {
    let t = text.trim();
    let bad = || {
        format!("`{text}` is not a keep-alive: give seconds (300; 0 unloads after the request; -1 never unloads) or a duration such as 5m, 1h30m, 90s")
    };
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(s) = t.parse::<f64>() {
        return seconds(s);
    }
    let (negative, mut rest) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    if negative {
        return Ok(Keep::Forever);
    }
    seconds(total)
}

/// The answer of `POST /v1/models/{name}/load` and `/unload`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelStatus {
    /// The model.
    pub id: String,
    /// Its state now.
    pub state: ModelState,
    /// Milliseconds the load took (`load`), or the drain and stop (`unload`).
    pub took_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alives_parse_as_ollama_takes_them() {
        let d = |s: f64| Ok(Keep::For(Duration::from_secs_f64(s)));
        assert_eq!(parse_keep("300"), d(300.0));
        assert_eq!(parse_keep("0"), d(0.0));
        assert_eq!(parse_keep("5m"), d(300.0));
        assert_eq!(parse_keep("1h30m"), d(5400.0));
        assert_eq!(parse_keep("2.5s"), d(2.5));
        assert_eq!(parse_keep("250ms"), d(0.25));
        assert_eq!(parse_keep("-1"), Ok(Keep::Forever));
        assert_eq!(parse_keep("-1m"), Ok(Keep::Forever));
        assert_eq!(KeepAlive::Seconds(-1.0).keep(), Ok(Some(Keep::Forever)));
        assert_eq!(KeepAlive::Seconds(0.0).keep(), Ok(Some(Keep::For(Duration::ZERO))));
        assert_eq!(KeepAlive::Seconds(1e300).keep(), Ok(Some(Keep::Forever)));
        assert_eq!(KeepAlive::Duration(" ".into()).keep(), Ok(None));
        assert_eq!(parse_keep("1e400"), Ok(Keep::Forever));
        for bad in ["", "soon", "5 minutes", "5x", "m"] {
            assert!(parse_keep(bad).is_err(), "{bad}");
        }
        assert!(parse_keep("soon").unwrap_err().contains("5m"));
        // What the document's pattern admits, the parser takes.
        for ok in ["0", "-1", "1.5", "5m", "1h30m", "250ms", "1us2ns", "-3h", "999999999h"] {
            assert!(parse_keep(ok).is_ok(), "{ok}");
        }
    }
}
