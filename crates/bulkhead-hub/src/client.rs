//! The hub's HTTP API, as `huggingface_hub` uses it:
//!
//! * `GET {endpoint}/api/models/{repo}/revision/{revision}?blobs=true`: the commit (`sha`) and the file list
//!   (`siblings[].rfilename`, `size`);
//! * `HEAD {endpoint}/{repo}/resolve/{commit}/{file}` (relative redirects followed, as for a renamed repository):
//!   `X-Repo-Commit`, `X-Linked-Etag` or `ETag` (the sha256 of an LFS file, the git blob sha1 of any other),
//!   `X-Linked-Size` or `Content-Length`, and for LFS files a `Location` on a CDN;
//! * `GET` of that location with `Range: bytes=N-` to resume (`206` + `Content-Range`; a `200` means the server
//!   ignored the range). The token goes only to the hub's own origin, never to a CDN.
//!
//! Errors follow the hub's `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`, `GatedRepo`) and
//! `X-Error-Message` headers.

use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;
use ureq::http::Response;
use ureq::Body;

use crate::cache::{is_safe_etag, is_safe_repo_path};
use crate::error::ErrorKind;
use crate::repo::{is_commit_hash, ModelRef};
use crate::select::Listing;

/// Characters kept as they are in a URL segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
/// The same, keeping `/` (file paths).
const PATH: &AsciiSet = &SEGMENT.remove(b'/');
/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 5;

/// A revision's commit and file list.
#[derive(Debug, Clone)]
pub struct RevisionInfo {
    /// The commit the revision points to.
    pub commit: String,
    /// The repository's files at that commit.
    pub listing: Listing,
}

/// Where and what a file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// The normalised ETag: the blob's name in the cache and the hash its bytes must have.
    pub etag: String,
    /// The size in bytes.
    pub size: u64,
    /// The URL to download from (the hub itself or a CDN).
    pub url: String,
}

/// A blocking client of one hub endpoint.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    endpoint: String,
    token: Option<String>,
}

impl Client {
    /// A client of `endpoint` (no trailing `/`) sending `token` to it.
    pub fn new(endpoint: &str, token: Option<String>) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(format!("bulkhead/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Client { agent, endpoint: endpoint.trim_end_matches('/').to_string(), token }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether a token will be sent.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The commit and files of `model.revision`.
    pub fn revision_info(&self, model: &ModelRef) -> Result<RevisionInfo, ErrorKind> {
        let url = format!(
            "{}/api/models/{}/revision/{}?blobs=true",
            self.endpoint,
            model.repo,
            utf8_percent_encode(&model.revision, SEGMENT)
        );
        let (resp, url) = self.request("GET", &url, None, Target::Revision(&model.revision))?;
        let text = resp
            .into_body()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| protocol(&url, format!("cannot read the answer: {e}")))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| protocol(&url, format!("not JSON: {e}")))?;
        let commit = v.get("sha").and_then(Value::as_str).filter(|s| is_commit_hash(s));
        let commit = commit.ok_or_else(|| protocol(&url, "no commit hash (`sha`)".into()))?.to_string();
        let siblings = v.get("siblings").and_then(Value::as_array);
        let siblings = siblings.ok_or_else(|| protocol(&url, "no file list (`siblings`)".into()))?;
        let mut listing = Listing::default();
        for s in siblings {
            let Some(name) = s.get("rfilename").and_then(Value::as_str) else { continue };
            if is_safe_repo_path(name) {
                listing.files.push((name.to_string(), s.get("size").and_then(Value::as_u64)));
            } else {
                tracing::warn!("{}: ignoring the unsafe file name {name:?} listed by the hub", model.repo);
            }
        }
        Ok(RevisionInfo { commit, listing })
    }

    /// The ETag, size and download URL of `file` at `commit`.
    pub fn file_meta(&self, repo: &str, commit: &str, file: &str) -> Result<FileMeta, ErrorKind> {
        let start = self.resolve_url(repo, commit, file);
        let (resp, url) = self.request("HEAD", &start, None, Target::File { file, commit })?;
        let header = |k: &str| resp.headers().get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        let redirect = resp.status().is_redirection();
        let etag = header("x-linked-etag").or_else(|| header("etag"));
        let etag = etag.map(|e| normalize_etag(&e)).filter(|e| is_safe_etag(e));
        let etag = etag.ok_or_else(|| protocol(&url, format!("no usable ETag for `{file}`")))?;
        let size = header("x-linked-size").or_else(|| if redirect { None } else { header("content-length") });
        let size = size.and_then(|s| s.trim().parse::<u64>().ok());
        let size =
            size.ok_or_else(|| protocol(&url, format!("no size (X-Linked-Size, Content-Length) for `{file}`")))?;
        if header("x-repo-commit").is_none() {
            return Err(protocol(&url, "no X-Repo-Commit header".into()));
        }
        let download = match (redirect, header("location")) {
            (true, Some(loc)) => join_url(&url, &loc),
            (true, None) => return Err(protocol(&url, "a redirect without Location".into())),
            (false, _) => url,
        };
        Ok(FileMeta { etag, size, url: download })
    }

    /// `GET` of a file from byte `from` on (absolute redirects followed; the token only to the hub's origin).
    /// The answer is `200` or `206`; anything else is an error.
    pub fn get_from(&self, meta: &FileMeta, file: &str, commit: &str, from: u64) -> Result<Response<Body>, ErrorKind> {
        let range = (from > 0).then(|| format!("bytes={from}-"));
        let (resp, _) = self.request("GET", &meta.url, range.as_deref(), Target::File { file, commit })?;
        Ok(resp)
    }

    fn resolve_url(&self, repo: &str, commit: &str, file: &str) -> String {
        format!(
            "{}/{repo}/resolve/{}/{}",
            self.endpoint,
            utf8_percent_encode(commit, SEGMENT),
            utf8_percent_encode(file, PATH)
        )
    }

    /// One request, following redirects: `HEAD` follows only relative ones (an absolute one is the file's CDN
    /// location, returned as is), `GET` follows all. Returns the final response and its URL; maps error statuses.
    fn request(
        &self,
        method: &str,
        url: &str,
        range: Option<&str>,
        target: Target<'_>,
    ) -> Result<(Response<Body>, String), ErrorKind> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let mut req = match method {
                "HEAD" => self.agent.head(&url),
                _ => self.agent.get(&url),
            }
            .header("accept-encoding", "identity");
            if let (Some(token), true) = (&self.token, same_origin(&url, &self.endpoint)) {
                req = req.header("authorization", format!("Bearer {token}"));
            }
            if let Some(r) = range {
                req = req.header("range", r);
            }
            let resp = req.call().map_err(|e| self.transport(e))?;
            let status = resp.status().as_u16();
            if resp.status().is_redirection() && status != 304 {
                let loc = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
                let Some(loc) = loc else { return Ok((resp, url)) };
                if method == "HEAD" && !loc.starts_with('/') {
                    return Ok((resp, url));
                }
                url = join_url(&url, &loc);
                continue;
            }
            if status < 300 || (status == 416 && range.is_some()) {
                return Ok((resp, url));
            }
            return Err(self.status_error(resp, &target));
        }
        Err(protocol(&url, format!("more than {MAX_REDIRECTS} redirects")))
    }

    fn transport(&self, e: ureq::Error) -> ErrorKind {
        let reason = match &e {
            ureq::Error::HostNotFound => "host not found".to_string(),
            ureq::Error::ConnectionFailed => "connection failed".to_string(),
            ureq::Error::Timeout(t) => format!("timed out ({t})"),
            ureq::Error::Io(io) => io.to_string(),
            other => other.to_string(),
        };
        ErrorKind::Unreachable { endpoint: self.endpoint.clone(), reason, offline_hint: String::new() }
    }

    fn status_error(&self, resp: Response<Body>, target: &Target<'_>) -> ErrorKind {
        let status = resp.status().as_u16();
        let header = |k: &str| resp.headers().get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        let code = header("x-error-code").unwrap_or_default();
        let mut message = header("x-error-message").unwrap_or_default();
        if message.is_empty() {
            let body = resp.into_body().with_config().limit(64 << 10).read_to_string().unwrap_or_default();
            message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
        }
        message.retain(|c| c != '\n' && c != '\r');
        let shown = if message.is_empty() { String::new() } else { format!(": {message}") };
        let revision = match target {
            Target::Revision(r) => *r,
            Target::File { commit, .. } => *commit,
        };
        match (status, code.as_str(), target) {
            (404, "RevisionNotFound", _) => ErrorKind::RevisionNotFound { revision: revision.to_string() },
            (401 | 403, "GatedRepo", _) | (403, _, _) => self.access_denied(status, shown),
            (401, _, _) if self.token.is_some() && message.contains("Invalid credentials") => {
                self.access_denied(status, shown)
            }
            (401, _, _) | (404, "RepoNotFound", _) | (404, _, Target::Revision(_)) => {
                ErrorKind::RepoNotFound { endpoint: self.endpoint.clone(), status, offline_hint: String::new() }
            }
            (404, _, Target::File { file, .. }) => {
                ErrorKind::FileNotFound { file: file.to_string(), revision: revision.to_string() }
            }
            _ => {
                let what = match target {
                    Target::Revision(r) => format!("revision `{r}`"),
                    Target::File { file, .. } => format!("`{file}`"),
                };
                ErrorKind::Http { what, status, message: shown }
            }
        }
    }

    fn access_denied(&self, status: u16, message: String) -> ErrorKind {
        let advice = if self.token.is_some() {
            "the token in HF_TOKEN (or $HF_HOME/token) was refused or has no access: accept the model's terms on its \
             hub page with that account, or use a token that has access"
        } else {
            "the model is gated or private and no token was sent: accept its terms on its hub page, then set HF_TOKEN \
             (or run `hf auth login`)"
        };
        ErrorKind::AccessDenied { status, message, advice: advice.into() }
    }
}

/// What a request was for, to name it in errors.
enum Target<'a> {
    Revision(&'a str),
    File { file: &'a str, commit: &'a str },
}

fn protocol(url: &str, reason: String) -> ErrorKind {
    ErrorKind::Protocol { url: url.to_string(), reason }
}

/// `W/"abc"` and `"abc"` become `abc`, as `huggingface_hub` names blobs.
pub fn normalize_etag(etag: &str) -> String {
    etag.trim().trim_start_matches("W/").trim_matches('"').to_string()
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..].find('/').map_or(url.len(), |i| after_scheme + i);
    &url[..end]
}

fn same_origin(a: &str, b: &str) -> bool {
    origin(a).eq_ignore_ascii_case(origin(b))
}

/// Resolves a `Location` against the URL that answered it.
fn join_url(base: &str, location: &str) -> String {
    if location.contains("://") {
        location.to_string()
    } else if location.starts_with('/') {
        format!("{}{location}", origin(base))
    } else {
        let dir = base.rfind('/').map_or(base, |i| &base[..=i]);
        format!("{dir}{location}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_etags() {
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("\"d7edf6\""), "d7edf6");
        assert_eq!(origin("http://127.0.0.1:9/a/b"), "http://127.0.0.1:9");
        assert_eq!(origin("https://hf.co"), "https://hf.co");
        assert!(same_origin("https://HF.co/x", "https://hf.co"));
        assert!(!same_origin("https://cdn.hf.co/x", "https://hf.co"));
        assert_eq!(join_url("http://h:1/a/b", "/c/d"), "http://h:1/c/d");
        assert_eq!(join_url("http://h:1/a/b", "https://cdn/x"), "https://cdn/x");
        let c = Client::new("http://h:1/", None);
        assert_eq!(
            c.resolve_url("o/n", "main", "1_Pooling/config.json"),
            "http://h:1/o/n/resolve/main/1_Pooling/config.json"
        );
        assert_eq!(c.resolve_url("o/n", "refs/pr/1", "a b.json"), "http://h:1/o/n/resolve/refs%2Fpr%2F1/a%20b.json");
    }
}
