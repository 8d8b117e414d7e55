//! The HTTP side: one handler per listener (hub or CDN) that routes by path, answers as the hub does, applies faults
//! and logs.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};

use crate::files::{RepoFile, RepoFiles};
use crate::{Access, Fault, Logged, Repo, State};

type Answer = Response<Body>;

pub(crate) async fn run(listener: tokio::net::TcpListener, state: Arc<State>, cdn: bool) {
    let app = if cdn { axum::Router::new().fallback(cdn_handler) } else { axum::Router::new().fallback(hub_handler) };
    let _ = axum::serve(listener, app.with_state(state)).await;
}

async fn hub_handler(state: AxState<Arc<State>>, method: Method, uri: Uri, headers: HeaderMap) -> Answer {
    handle(state, method, uri, headers, false).await
}

async fn cdn_handler(state: AxState<Arc<State>>, method: Method, uri: Uri, headers: HeaderMap) -> Answer {
    handle(state, method, uri, headers, true).await
}

async fn handle(
    AxState(state): AxState<Arc<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    cdn: bool,
) -> Answer {
    let path = percent_decode_str(uri.path()).decode_utf8_lossy().into_owned();
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    let token = header("authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_string));
    let range = header("range");
    let req =
        Req { method: method.as_str(), path: &path, query: uri.query().unwrap_or(""), token, range: range.clone() };
    let answer = if cdn { cdn_answer(&state, &req).await } else { hub_answer(&state, &req).await };
    state.log.lock().unwrap().push(Logged {
        method: method.to_string(),
        path,
        range,
        authorized: headers.contains_key("authorization"),
        status: answer.status().as_u16(),
    });
    answer
}

struct Req<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    token: Option<String>,
    range: Option<String>,
}

/// The repository path a logged request downloaded (`/o/n/resolve/REV/FILE`, `/cdn/o/n/COMMIT/FILE`).
pub(crate) fn file_of_path(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    match parts.as_slice() {
        ["cdn", _, _, _, file] => Some(file.to_string()),
        [_, _, "resolve", _, file] => Some(file.to_string()),
        _ => None,
    }
}

fn error(status: u16, code: &str, message: &str, commit: Option<&str>) -> Answer {
    let mut b = Response::builder().status(status).header("content-type", "application/json");
    if !code.is_empty() {
        b = b.header("x-error-code", code);
    }
    if !message.is_empty() {
        b = b.header("x-error-message", message);
    }
    if let Some(c) = commit {
        b = b.header("x-repo-commit", c);
    }
    b.body(Body::from(json!({ "error": message }).to_string())).unwrap()
}

/// The repository `id` names, or the error answer. As on the hub, a gated repository's description (`api`) is
/// public; only its files need the token.
fn find_repo<'s>(
    state: &'s State,
    id: &str,
    token: &Option<String>,
    api: bool,
) -> Result<&'s (Repo, RepoFiles), Box<Answer>> {
    let Some(entry) = state.repos.iter().find(|(r, _)| r.id == id) else {
        let status = if token.is_some() { 404 } else { 401 };
        return Err(Box::new(error(status, "RepoNotFound", "Repository not found", None)));
    };
    match (&entry.0.access, token) {
        (Access::Public, _) => Ok(entry),
        (Access::Gated(_), _) if api => Ok(entry),
        (Access::Gated(t) | Access::Private(t), Some(given)) if t == given => Ok(entry),
        (Access::Gated(_), None) => Err(Box::new(error(
            401,
            "GatedRepo",
            &format!("Access to model {id} is restricted. You must have access to it and be authenticated to access it. Please log in."),
            None,
        ))),
        (Access::Gated(_), Some(_)) => Err(Box::new(error(
            403,
            "GatedRepo",
            &format!("Access to model {id} is restricted and you are not in the authorized list."),
            None,
        ))),
        (Access::Private(_), None) => Err(Box::new(error(401, "RepoNotFound", "Repository not found", None))),
        (Access::Private(_), Some(_)) => {
            Err(Box::new(error(401, "", "Invalid credentials in Authorization header", None)))
        }
    }
}

fn revision_ok(repo: &Repo, files: &RepoFiles, rev: &str) -> bool {
    rev == "main" || rev == files.commit || repo.revisions.iter().any(|r| r == rev)
}

async fn hub_answer(state: &State, req: &Req<'_>) -> Answer {
    let rest = req.path.trim_start_matches('/');
    if let Some(api) = rest.strip_prefix("api/models/") {
        let parts: Vec<&str> = api.splitn(4, '/').collect();
        let id = format!("{}/{}", parts[0], parts.get(1).unwrap_or(&""));
        if let Some(new) = state.aliases.lock().unwrap().get(&id).cloned() {
            return redirect(req, &req.path.replacen(&id, &new, 1));
        }
        let (repo, files) = match find_repo(state, &id, &req.token, true) {
            Ok(e) => e,
            Err(a) => return *a,
        };
        let (kind, rev_and_path) = (parts.get(2).copied(), parts.get(3).copied().unwrap_or("main"));
        return match kind {
            None => info(repo, files, req.query.contains("blobs=true")),
            Some("revision") if revision_ok(repo, files, rev_and_path) => {
                info(repo, files, req.query.contains("blobs=true"))
            }
            Some("tree") => {
                let (rev, sub) = rev_and_path.split_once('/').unwrap_or((rev_and_path, ""));
                if !revision_ok(repo, files, rev) {
                    return error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"), None);
                }
                tree(files, sub, req.query.contains("recursive=true") || req.query.contains("recursive=True"))
            }
            Some("revision") => error(404, "RevisionNotFound", &format!("Invalid rev id: {rev_and_path}"), None),
            Some(_) => error(404, "", "Not found", None),
        };
    }
    let parts: Vec<&str> = rest.splitn(5, '/').collect();
    let [org, name, "resolve", rev, file] = parts.as_slice() else { return error(404, "", "Not found", None) };
    let id = format!("{org}/{name}");
    if let Some(new) = state.aliases.lock().unwrap().get(&id).cloned() {
        return redirect(req, &req.path.replacen(&id, &new, 1));
    }
    let (repo, files) = match find_repo(state, &id, &req.token, false) {
        Ok(e) => e,
        Err(a) => return *a,
    };
    if !revision_ok(repo, files, rev) {
        return error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"), None);
    }
    let fault = state.faults.lock().unwrap().get(*file).cloned();
    let Some(f) = files.get(file).filter(|_| fault != Some(Fault::NotFound)) else {
        return error(404, "EntryNotFound", &format!("{file} does not exist on \"{rev}\""), Some(&files.commit));
    };
    if f.lfs {
        let location = format!("{}/cdn/{id}/{}/{}", state.cdn_url, files.commit, f.path);
        return Response::builder()
            .status(302)
            .header("location", location)
            .header("etag", format!("\"{}\"", f.oid))
            .header("x-linked-etag", format!("\"{}\"", f.sha256))
            .header("x-linked-size", f.size.to_string())
            .header("x-repo-commit", &files.commit)
            .body(Body::empty())
            .unwrap();
    }
    serve_bytes(state, req, f, &f.oid, &files.commit).await
}

async fn cdn_answer(state: &State, req: &Req<'_>) -> Answer {
    if req.token.is_some() {
        return error(400, "", "Only one auth mechanism allowed; a signed URL takes no Authorization header", None);
    }
    let parts: Vec<&str> = req.path.trim_start_matches('/').splitn(5, '/').collect();
    let ["cdn", org, name, commit, file] = parts.as_slice() else { return error(404, "", "Not found", None) };
    let id = format!("{org}/{name}");
    let Some((_, files)) = state.repos.iter().find(|(r, f)| r.id == id && f.commit == *commit) else {
        return error(404, "", "Not found", None);
    };
    let Some(f) = files.get(file).filter(|f| f.lfs) else { return error(404, "", "Not found", None) };
    serve_bytes(state, req, f, &f.sha256, &files.commit).await
}

/// A relative redirect to `path` (keeping the query), as the hub answers for a renamed repository.
fn redirect(req: &Req<'_>, path: &str) -> Answer {
    let location = if req.query.is_empty() { path.to_string() } else { format!("{path}?{}", req.query) };
    Response::builder().status(307).header("location", location).body(Body::empty()).unwrap()
}

fn info(repo: &Repo, files: &RepoFiles, blobs: bool) -> Answer {
    let siblings: Vec<Value> = files
        .files
        .iter()
        .map(|f| {
            if !blobs {
                return json!({ "rfilename": f.path });
            }
            let mut s = json!({ "rfilename": f.path, "size": f.size, "blobId": f.oid });
            if f.lfs {
                s["lfs"] = json!({ "sha256": f.sha256, "size": f.size, "pointerSize": 134 });
            }
            s
        })
        .collect();
    let body = json!({
        "_id": &files.commit[..24],
        "id": repo.id,
        "modelId": repo.id,
        "sha": files.commit,
        "private": matches!(repo.access, Access::Private(_)),
        "gated": if matches!(repo.access, Access::Gated(_)) { json!("auto") } else { json!(false) },
        "disabled": false,
        "downloads": 0,
        "likes": 0,
        "tags": ["sentence-transformers"],
        "library_name": "sentence-transformers",
        "lastModified": "2026-01-01T00:00:00.000Z",
        "createdAt": "2026-01-01T00:00:00.000Z",
        "siblings": siblings,
    });
    json_answer(&body)
}

fn tree(files: &RepoFiles, sub: &str, recursive: bool) -> Answer {
    let prefix = if sub.is_empty() { String::new() } else { format!("{}/", sub.trim_end_matches('/')) };
    let mut dirs: Vec<String> = vec![];
    let mut entries: Vec<Value> = vec![];
    for f in files.files.iter().filter(|f| f.path.starts_with(&prefix)) {
        let rel = &f.path[prefix.len()..];
        let parts: Vec<&str> = rel.split('/').collect();
        for depth in 1..parts.len() {
            let dir = format!("{prefix}{}", parts[..depth].join("/"));
            if !dirs.contains(&dir) && (recursive || depth == 1) {
                entries.push(json!({ "type": "directory", "oid": "0".repeat(40), "size": 0, "path": dir }));
                dirs.push(dir);
            }
        }
        if recursive || !rel.contains('/') {
            let mut e = json!({ "type": "file", "oid": f.oid, "size": f.size, "path": f.path });
            if f.lfs {
                e["lfs"] = json!({ "oid": f.sha256, "size": f.size, "pointerSize": 134 });
            }
            entries.push(e);
        }
    }
    json_answer(&Value::Array(entries))
}

fn json_answer(v: &Value) -> Answer {
    Response::builder().status(200).header("content-type", "application/json").body(Body::from(v.to_string())).unwrap()
}

/// The first byte of `bytes=START-[END]`, or `None` for any other form.
fn range_start(range: &str) -> Option<u64> {
    let spec = range.trim().strip_prefix("bytes=")?;
    let (start, _) = spec.split_once('-')?;
    start.trim().parse().ok()
}

/// A file's bytes with the headers of the hub (or CDN), honouring `Range` and the file's fault.
async fn serve_bytes(state: &State, req: &Req<'_>, f: &RepoFile, etag: &str, commit: &str) -> Answer {
    let fault = state.faults.lock().unwrap().get(&f.path).cloned();
    if let Some(Fault::Status(code)) = fault {
        return error(code, "", "", Some(commit));
    }
    let start = match (&req.range, &fault) {
        (Some(_), Some(Fault::IgnoreRange)) | (None, _) => None,
        (Some(r), _) => match range_start(r) {
            Some(s) if s < f.size => Some(s),
            _ => {
                return Response::builder()
                    .status(416)
                    .header("content-range", format!("bytes */{}", f.size))
                    .header("x-repo-commit", commit)
                    .body(Body::empty())
                    .unwrap()
            }
        },
    };
    let from = start.unwrap_or(0);
    let mut b = Response::builder()
        .status(if start.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK })
        .header("etag", format!("\"{etag}\""))
        .header("x-repo-commit", commit)
        .header("accept-ranges", "bytes")
        .header("content-type", "application/octet-stream")
        .header("content-length", (f.size - from).to_string());
    if start.is_some() {
        b = b.header("content-range", format!("bytes {from}-{}/{}", f.size - 1, f.size));
    }
    if req.method == "HEAD" {
        return b.body(Body::empty()).unwrap();
    }
    let mut data = match tokio::fs::read(&f.disk).await {
        Ok(d) => d,
        Err(e) => return error(500, "", &e.to_string(), Some(commit)),
    };
    if let Some(Fault::FlipByte(at)) = fault {
        if let Some(byte) = data.get_mut(at as usize) {
            *byte = !*byte;
        }
    }
    let body = Bytes::from(data).slice(from as usize..);
    let cut = |n: u64| body.slice(..(n as usize).min(body.len()));
    let mut sent = state.sent.lock().unwrap();
    let count = sent.entry(f.path.clone()).or_default();
    let answer = match fault {
        Some(Fault::DropAfter { bytes, times }) if times > 0 => {
            let part = cut(bytes);
            *count += part.len() as u64;
            let next = Fault::DropAfter { bytes, times: times - 1 };
            state.faults.lock().unwrap().insert(f.path.clone(), next);
            let broken = stream::iter([Ok::<Bytes, std::io::Error>(part)])
                .chain(stream::once(async { Err(std::io::Error::other("the stand-in drops the connection")) }));
            Body::from_stream(broken)
        }
        Some(Fault::StallAfter(bytes)) => {
            let part = cut(bytes);
            *count += part.len() as u64;
            Body::from_stream(stream::iter([Ok::<Bytes, std::io::Error>(part)]).chain(stream::pending()))
        }
        _ => {
            *count += body.len() as u64;
            Body::from(body)
        }
    };
    b.body(answer).unwrap()
}
