//! One file into the cache: under the blob's lock, appended to `blobs/<etag>.incomplete` (resumed with `Range` from
//! whatever an earlier run or attempt left there), checked against the size and the hash the ETag names, made
//! durable, then renamed to `blobs/<etag>` and linked from the snapshot. A transfer that breaks is retried from
//! where it stopped; a corrupt one is deleted. Nothing under its final name is ever partial.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use crate::cache::RepoCache;
use crate::client::{Client, FileMeta};
use crate::error::{human_bytes, ErrorKind};
use crate::progress::{Event, Progress};

/// What a download needs besides the file's metadata.
pub struct Download<'a> {
    /// The hub client.
    pub client: &'a Client,
    /// The repository's cache folder.
    pub cache: &'a RepoCache,
    /// The commit whose snapshot receives the file.
    pub commit: &'a str,
    /// Attempts per file before a broken transfer is an error (the partial file stays for the next run).
    pub attempts: u32,
    /// Where events go.
    pub progress: &'a dyn Progress,
}

/// Why one attempt stopped.
enum Stop {
    /// The connection broke or the hub answered 5xx: try again from where it stopped.
    Retry(String),
    /// Anything else.
    Fatal(ErrorKind),
}

impl Download<'_> {
    /// Puts `file` into the snapshot, downloading its blob unless the cache has it. Returns the bytes received.
    pub fn fetch(&self, file: &str, meta: &FileMeta) -> Result<u64, ErrorKind> {
        let blob = self.cache.blob_path(&meta.etag);
        let mut received = 0;
        if !blob.is_file() {
            let _lock = self.cache.lock(&meta.etag).map_err(|e| io_error(&blob, e))?;
            // Another process may have finished it while this one waited for the lock.
            if !blob.is_file() {
                received = self.transfer(file, meta, &blob)?;
            }
        }
        self.cache
            .link(self.commit, file, &meta.etag)
            .map_err(|e| io_error(&self.cache.snapshot_dir(self.commit), e))?;
        self.progress.event(&Event::FileDone { file, size: meta.size });
        Ok(received)
    }

    fn transfer(&self, file: &str, meta: &FileMeta, blob: &Path) -> Result<u64, ErrorKind> {
        let part = self.cache.incomplete_path(&meta.etag);
        let dir = part.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let mut f = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&part)
            .map_err(|e| io_error(&part, e))?;
        let mut have = f.metadata().map_err(|e| io_error(&part, e))?.len();
        if have > meta.size {
            f.set_len(0).map_err(|e| io_error(&part, e))?;
            have = 0;
        }
        self.progress.event(&Event::FileStarted { file, size: meta.size, offset: have });
        let mut received = 0;
        let mut attempt = 1;
        while have < meta.size {
            let before = have;
            match self.attempt(file, meta, &mut f, &part, &mut have) {
                Ok(()) => {}
                Err(Stop::Fatal(kind)) => return Err(kind),
                Err(Stop::Retry(reason)) if attempt < self.attempts => {
                    attempt += 1;
                    self.progress.event(&Event::Retrying { file, attempt, reason: &reason });
                    std::thread::sleep(Duration::from_millis(250 << (attempt - 2).min(5)));
                }
                Err(Stop::Retry(reason)) => {
                    return Err(ErrorKind::Unreachable {
                        endpoint: self.client.endpoint().to_string(),
                        reason: format!(
                            "`{file}` stopped at {} of {} after {attempt} attempts ({reason})",
                            human_bytes(have),
                            human_bytes(meta.size)
                        ),
                        offline_hint: String::new(),
                    });
                }
            }
            received += have.saturating_sub(before);
        }
        f.sync_all().map_err(|e| io_error(&part, e))?;
        drop(f);
        if let Err(e) = verify(&part, file, meta) {
            let _ = fs::remove_file(&part);
            return Err(e);
        }
        fs::rename(&part, blob).map_err(|e| io_error(blob, e))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(received)
    }

    /// One `GET` from byte `have` on, appending to `f`.
    fn attempt(&self, file: &str, meta: &FileMeta, f: &mut File, part: &Path, have: &mut u64) -> Result<(), Stop> {
        let resp = match self.client.get_from(meta, file, self.commit, *have) {
            Ok(r) => r,
            Err(e @ ErrorKind::Unreachable { .. }) => return Err(Stop::Retry(e.to_string())),
            Err(ErrorKind::Http { status, message, .. }) if status >= 500 => {
                return Err(Stop::Retry(format!("HTTP {status}{message}")))
            }
            Err(e) => return Err(Stop::Fatal(e)),
        };
        let restart = |f: &mut File, have: &mut u64| -> Result<(), Stop> {
            f.set_len(0).map_err(|e| Stop::Fatal(io_error(part, e)))?;
            *have = 0;
            Ok(())
        };
        match resp.status().as_u16() {
            206 => {
                let range = resp.headers().get("content-range").and_then(|v| v.to_str().ok()).unwrap_or("");
                if content_range_start(range) != Some(*have) {
                    // Not the bytes asked for: start over without a range rather than guess.
                    return restart(f, have);
                }
            }
            // A range the server cannot satisfy: the partial file is not a prefix of this blob.
            416 => return restart(f, have),
            // The server ignored the range: it sends the whole file.
            _ if *have > 0 => restart(f, have)?,
            _ => {}
        }
        f.seek(SeekFrom::Start(*have)).map_err(|e| Stop::Fatal(io_error(part, e)))?;
        let mut body = resp.into_body().into_reader();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Stop::Retry(format!("connection broken: {e}"))),
            };
            if *have + n as u64 > meta.size {
                let actual = *have + n as u64;
                let _ = restart(f, have);
                return Err(Stop::Fatal(ErrorKind::SizeMismatch { file: file.into(), expected: meta.size, actual }));
            }
            f.write_all(&buf[..n]).map_err(|e| Stop::Fatal(write_error(part, e, meta.size - *have)))?;
            *have += n as u64;
            self.progress.event(&Event::Bytes { file, done: *have, size: meta.size });
        }
        if *have < meta.size {
            return Err(Stop::Retry(format!(
                "connection closed at {} of {}",
                human_bytes(*have),
                human_bytes(meta.size)
            )));
        }
        Ok(())
    }
}

/// The first byte of `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(header: &str) -> Option<u64> {
    header.trim().strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

/// How a blob named `etag` is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// 64 hex digits: the sha256 of the contents (LFS files).
    Sha256,
    /// 40 hex digits: the git blob id, sha1 of `blob <size>\0` + contents (files stored in git).
    GitSha1,
    /// Any other ETag (a proxy or mirror of its own): only the size is checked.
    SizeOnly,
}

impl Check {
    /// The check an ETag calls for.
    pub fn of(etag: &str) -> Check {
        let hex = etag.bytes().all(|b| b.is_ascii_hexdigit());
        match etag.len() {
            64 if hex => Check::Sha256,
            40 if hex => Check::GitSha1,
            _ => Check::SizeOnly,
        }
    }
}

/// Checks the size and, when the ETag is a hash, the contents of the downloaded file.
pub fn verify(path: &Path, file: &str, meta: &FileMeta) -> Result<(), ErrorKind> {
    let len = fs::metadata(path).map_err(|e| io_error(path, e))?.len();
    if len != meta.size {
        return Err(ErrorKind::SizeMismatch { file: file.into(), expected: meta.size, actual: len });
    }
    let check = Check::of(&meta.etag);
    let (algorithm, actual) = match check {
        Check::SizeOnly => {
            tracing::debug!("{file}: ETag {} is not a content hash; only the size was checked", meta.etag);
            return Ok(());
        }
        Check::Sha256 => ("sha256", hash_file::<sha2::Sha256>(path, None)),
        Check::GitSha1 => ("git-sha1", hash_file::<sha1::Sha1>(path, Some(format!("blob {len}\0").as_bytes()))),
    };
    let actual = actual.map_err(|e| io_error(path, e))?;
    if !actual.eq_ignore_ascii_case(&meta.etag) {
        return Err(ErrorKind::Checksum { file: file.into(), algorithm, expected: meta.etag.clone(), actual });
    }
    Ok(())
}

/// The hex digest of `prefix` followed by the file's contents.
pub fn hash_file<D: sha2::Digest>(path: &Path, prefix: Option<&[u8]>) -> io::Result<String> {
    let mut hasher = D::new();
    if let Some(p) = prefix {
        hasher.update(p);
    }
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

pub(crate) fn io_error(path: &Path, e: io::Error) -> ErrorKind {
    if e.kind() == io::ErrorKind::StorageFull {
        return ErrorKind::DiskFull { path: path.to_path_buf(), needed: "?".into(), free: free_space_text(path) };
    }
    ErrorKind::Io { path: path.to_path_buf(), source: e }
}

fn write_error(path: &Path, e: io::Error, still: u64) -> ErrorKind {
    match io_error(path, e) {
        ErrorKind::DiskFull { path, free, .. } => ErrorKind::DiskFull { path, needed: human_bytes(still), free },
        other => other,
    }
}

fn free_space_text(path: &Path) -> String {
    free_space(path).map_or_else(|| "unknown".into(), human_bytes)
}

/// Bytes available to this user on the file system holding `path` (or its nearest existing ancestor).
pub fn free_space(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let existing = path.ancestors().find(|p| p.exists())?;
        let c = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid NUL-terminated path and `s` a writable statvfs.
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return None;
        }
        #[allow(clippy::unnecessary_cast)]
        Some(s.f_bavail as u64 * s.f_frsize as u64)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_name_their_check() {
        assert_eq!(Check::of(&"a".repeat(64)), Check::Sha256);
        assert_eq!(Check::of(&"0".repeat(40)), Check::GitSha1);
        assert_eq!(Check::of("abc-123"), Check::SizeOnly);
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes */200"), None);
    }

    #[test]
    fn git_and_lfs_hashes_are_the_hubs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, "hello\n").unwrap();
        // `git hash-object` of "hello\n" and `sha256sum` of it.
        assert_eq!(hash_file::<sha1::Sha1>(&p, Some(b"blob 6\0")).unwrap(), "ce013625030ba8dba906f756967f9e9ca394464a");
        assert_eq!(
            hash_file::<sha2::Sha256>(&p, None).unwrap(),
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        let meta = |etag: &str, size| FileMeta { etag: etag.into(), size, url: String::new() };
        assert!(verify(&p, "f", &meta("ce013625030ba8dba906f756967f9e9ca394464a", 6)).is_ok());
        let e = verify(&p, "f", &meta("ce013625030ba8dba906f756967f9e9ca394464b", 6)).unwrap_err();
        assert!(matches!(e, ErrorKind::Checksum { algorithm: "git-sha1", .. }), "{e}");
        assert!(matches!(verify(&p, "f", &meta("x", 7)).unwrap_err(), ErrorKind::SizeMismatch { .. }));
        assert!(free_space(dir.path()).unwrap() > 0);
    }
}
