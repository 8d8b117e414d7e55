//! The one error type of the hub client: every error names the repository and says what to do, on one line.

use std::path::PathBuf;

/// A failure to resolve or download a model, for one repository.
#[derive(Debug, thiserror::Error)]
#[error("{repo}: {kind}")]
pub struct HubError {
    /// The repository id (`ORG/NAME`), or the text that was given when it is not an id.
    pub repo: String,
    /// What went wrong.
    pub kind: ErrorKind,
}

impl HubError {
    pub(crate) fn new(repo: impl Into<String>, kind: ErrorKind) -> HubError {
        HubError { repo: repo.into(), kind }
    }
}

/// What went wrong, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// The text is not `ORG/NAME[@REVISION]`.
    #[error("not a hub model id ({reason}); expected ORG/NAME[@REVISION], or give the path of a model folder")]
    InvalidId {
        /// Why.
        reason: String,
    },
    /// Offline mode is on and the model is not in the cache.
    #[error(
        "not in the Hugging Face cache {cache} and offline mode is on ({var}); download it first with `bulkhead \
         pull {wanted}` on a machine with network access (same HF_HUB_CACHE), or unset {var}"
    )]
    NotCached {
        /// The cache folder searched.
        cache: PathBuf,
        /// The variable that turned offline mode on.
        var: &'static str,
        /// The id with its revision, as `bulkhead pull` takes it.
        wanted: String,
    },
    /// The cached snapshot lacks a file the model needs and the hub cannot be asked.
    #[error("the cached snapshot {dir} is incomplete ({what}); run `bulkhead pull {wanted}` with network access")]
    Incomplete {
        /// The snapshot folder.
        dir: PathBuf,
        /// What is missing.
        what: String,
        /// The id with its revision.
        wanted: String,
    },
    /// The hub does not know the repository (it answers the same for a private one without a token).
    #[error(
        "repository not found at {endpoint} (HTTP {status}); check the id, or if it is private set HF_TOKEN to a \
         token with access{offline_hint}"
    )]
    RepoNotFound {
        /// The hub endpoint.
        endpoint: String,
        /// The HTTP status (401 or 404).
        status: u16,
        /// A hint when a cached copy exists.
        offline_hint: String,
    },
    /// The revision (branch, tag or commit) does not exist.
    #[error("revision `{revision}` not found; check the branch, tag or commit after `@`")]
    RevisionNotFound {
        /// The revision asked for.
        revision: String,
    },
    /// A file the model needs is not at that revision.
    #[error("file `{file}` not found at revision {revision} (HTTP 404); the repository changed while downloading, or it is incomplete: try again or pin another revision")]
    FileNotFound {
        /// The file.
        file: String,
        /// The commit.
        revision: String,
    },
    /// 401/403: a gated or private model without (or with a refused) token.
    #[error("access refused (HTTP {status}{message}): {advice}")]
    AccessDenied {
        /// 401 or 403.
        status: u16,
        /// The hub's own message, if any (`: ...`).
        message: String,
        /// What to do, depending on whether a token was sent.
        advice: String,
    },
    /// The hub cannot be reached (DNS, refused connection, timeout, dropped connection after retries).
    #[error(
        "cannot reach the hub at {endpoint}: {reason}; check the network or HF_ENDPOINT, then run the command again \
         (a partial download resumes){offline_hint}"
    )]
    Unreachable {
        /// The hub endpoint.
        endpoint: String,
        /// The transport error.
        reason: String,
        /// A hint when a cached copy exists.
        offline_hint: String,
    },
    /// Any other HTTP status.
    #[error("{what}: the hub answered HTTP {status}{message}; try again later")]
    Http {
        /// The request (file or API call).
        what: String,
        /// The status.
        status: u16,
        /// The hub's own message, if any (`: ...`).
        message: String,
    },
    /// The downloaded bytes do not match the hash the hub announced.
    #[error(
        "`{file}` does not match its checksum ({algorithm} expected {expected}, got {actual}); the corrupt download \
         was deleted: run the command again"
    )]
    Checksum {
        /// The file.
        file: String,
        /// `sha256` or `git-sha1`.
        algorithm: &'static str,
        /// The hash from the ETag.
        expected: String,
        /// The hash of the bytes received.
        actual: String,
    },
    /// The size received differs from the size announced.
    #[error("`{file}`: received {actual} bytes, the hub announced {expected}; run the command again")]
    SizeMismatch {
        /// The file.
        file: String,
        /// Announced.
        expected: u64,
        /// Received.
        actual: u64,
    },
    /// No space left on the cache's disk.
    #[error(
        "disk full while writing {path} ({needed} still to download, {free} free); free some space or point \
         HF_HUB_CACHE at a larger disk, then run the command again (the partial download resumes)"
    )]
    DiskFull {
        /// The file being written.
        path: PathBuf,
        /// Bytes still to download, human-readable.
        needed: String,
        /// Bytes free on that file system, human-readable.
        free: String,
    },
    /// Any other file-system error in the cache.
    #[error("{path}: {source}; check that HF_HUB_CACHE is writable")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The hub answered something this client cannot use.
    #[error("unexpected answer from {url}: {reason}; is HF_ENDPOINT a Hugging Face hub?")]
    Protocol {
        /// The URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The repository has no weights the caller can run.
    #[error("{0}")]
    NoUsableWeights(String),
}

/// `1.5 MiB`-style sizes for messages.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(90_868_376), "86.7 MiB");
    }

    #[test]
    fn errors_are_one_line_and_name_the_repo() {
        let e = HubError::new(
            "org/name",
            ErrorKind::Unreachable {
                endpoint: "http://x".into(),
                reason: "connection refused".into(),
                offline_hint: String::new(),
            },
        );
        let s = e.to_string();
        assert!(s.starts_with("org/name: cannot reach the hub at http://x"), "{s}");
        assert!(!s.contains('\n'));
    }
}
