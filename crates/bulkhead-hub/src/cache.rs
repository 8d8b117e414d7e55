//! The cache layout `huggingface_hub` defines and every Python tool shares:
//!
//! ```text
//! $HF_HUB_CACHE/models--ORG--NAME/
//!   blobs/<etag>                      file contents, named by their ETag (sha256 for LFS files, git blob sha1 else)
//!   blobs/<etag>.incomplete           a download in progress (resumed by the next run; never read as a model file)
//!   refs/<revision>                   the commit a branch or tag pointed to when last resolved
//!   snapshots/<commit>/<path>         relative symbolic links to ../../blobs/<etag>
//! $HF_HUB_CACHE/.locks/models--ORG--NAME/<etag>.lock   one downloader per blob (flock, as huggingface_hub)
//! ```
//!
//! Invariants kept here: a blob exists under its final name only once complete and verified (it is renamed from
//! `.incomplete`), a snapshot link exists only once its blob does, and refs and links are replaced atomically
//! (written beside, then renamed), so a killed process never leaves a file that is later taken as complete.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::repo::{is_commit_hash, ModelRef};

/// One repository's folder in the cache.
#[derive(Debug, Clone)]
pub struct RepoCache {
    cache_dir: PathBuf,
    folder: String,
    root: PathBuf,
}

impl RepoCache {
    /// The folder of `model` under `cache_dir` (which need not exist yet).
    pub fn new(cache_dir: &Path, model: &ModelRef) -> RepoCache {
        let folder = model.folder_name();
        RepoCache { cache_dir: cache_dir.to_path_buf(), root: cache_dir.join(&folder), folder }
    }

    /// `$HF_HUB_CACHE/models--ORG--NAME`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The complete blob named `etag`.
    pub fn blob_path(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(etag)
    }

    /// Where the blob `etag` is downloaded before it is verified and renamed.
    pub fn incomplete_path(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(format!("{etag}.incomplete"))
    }

    /// `snapshots/<commit>`.
    pub fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    /// The commit `refs/<revision>` names, when it is a well-formed commit hash.
    pub fn read_ref(&self, revision: &str) -> Option<String> {
        let text = fs::read_to_string(self.root.join("refs").join(revision)).ok()?;
        let commit = text.trim();
        is_commit_hash(commit).then(|| commit.to_string())
    }

    /// Points `refs/<revision>` at `commit` (atomically; nothing to do for a revision that is the commit itself).
    pub fn write_ref(&self, revision: &str, commit: &str) -> io::Result<()> {
        if revision == commit || self.read_ref(revision).as_deref() == Some(commit) {
            return Ok(());
        }
        let path = self.root.join("refs").join(revision);
        fs::create_dir_all(path.parent().unwrap_or(&self.root))?;
        let tmp = sibling_tmp(&path);
        fs::write(&tmp, commit)?;
        fs::rename(&tmp, &path)
    }

    /// The cached commit for `revision`: the revision itself when it is a commit hash with a snapshot, else what
    /// `refs/<revision>` names, provided its snapshot folder exists.
    pub fn cached_commit(&self, revision: &str) -> Option<String> {
        let commit = if is_commit_hash(revision) { revision.to_string() } else { self.read_ref(revision)? };
        self.snapshot_dir(&commit).is_dir().then_some(commit)
    }

    /// Makes `snapshots/<commit>/<file>` a relative link to `blobs/<etag>`, replacing any previous entry atomically.
    pub fn link(&self, commit: &str, file: &str, etag: &str) -> io::Result<()> {
        let dst = self.snapshot_dir(commit).join(file);
        fs::create_dir_all(dst.parent().unwrap_or(&self.root))?;
        let ups = Path::new(file).components().count() + 1;
        let target: PathBuf = std::iter::repeat_n("..", ups).collect::<PathBuf>().join("blobs").join(etag);
        let tmp = sibling_tmp(&dst);
        let _ = fs::remove_file(&tmp);
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, &tmp)?;
        #[cfg(not(unix))]
        fs::copy(self.blob_path(etag), &tmp).map(|_| ())?;
        fs::rename(&tmp, &dst)
    }

    /// Takes the download lock of blob `etag` (blocks while another process, bulkhead or Python, downloads it).
    pub fn lock(&self, etag: &str) -> io::Result<fs::File> {
        let path = self.cache_dir.join(".locks").join(&self.folder).join(format!("{etag}.lock"));
        fs::create_dir_all(path.parent().unwrap_or(&self.cache_dir))?;
        let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        if file.try_lock().is_err() {
            tracing::warn!("waiting for another process that downloads the same file ({})", path.display());
            file.lock()?;
        }
        Ok(file)
    }

    /// Whether `snapshots/<commit>/<file>` resolves to a file (a dangling link or an absent file is not there).
    pub fn has_file(&self, commit: &str, file: &str) -> bool {
        self.snapshot_dir(commit).join(file).is_file()
    }

    /// Every file of a snapshot (links resolving to files), as `/`-separated paths relative to it, sorted.
    pub fn list_snapshot(&self, commit: &str) -> io::Result<Vec<String>> {
        let mut out = vec![];
        walk(&self.snapshot_dir(commit), "", &mut out)?;
        out.sort();
        Ok(out)
    }
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
        let path = entry.path();
        if path.is_dir() {
            walk(&path, &rel, out)?;
        } else if path.is_file() && !name.ends_with(TMP_SUFFIX) {
            out.push(rel);
        }
    }
    Ok(())
}

const TMP_SUFFIX: &str = ".bulkhead-tmp";

fn sibling_tmp(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}{TMP_SUFFIX}", std::process::id()))
}

/// Whether `file` (a repository path from the hub) is safe to place under a snapshot: relative, `/`-separated, with
/// no `.`, `..` or empty components.
pub fn is_safe_repo_path(file: &str) -> bool {
    !file.is_empty()
        && !file.contains('\\')
        && file.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && Path::new(file).components().all(|c| matches!(c, Component::Normal(_)))
}

/// Whether `etag` is safe as a blob file name (the hub's are hexadecimal hashes).
pub fn is_safe_etag(etag: &str) -> bool {
    !etag.is_empty() && etag.len() <= 128 && etag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_relative_and_refs_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let m = ModelRef::parse("org/name").unwrap();
        let c = RepoCache::new(dir.path(), &m);
        let commit = "0123456789abcdef0123456789abcdef01234567";
        fs::create_dir_all(c.blob_path("x").parent().unwrap()).unwrap();
        fs::write(c.blob_path("e1"), "one").unwrap();
        fs::write(c.blob_path("e2"), "two").unwrap();
        c.link(commit, "config.json", "e1").unwrap();
        c.link(commit, "1_Pooling/config.json", "e2").unwrap();
        let snap = c.snapshot_dir(commit);
        assert_eq!(fs::read_link(snap.join("config.json")).unwrap(), PathBuf::from("../../blobs/e1"));
        assert_eq!(fs::read_link(snap.join("1_Pooling/config.json")).unwrap(), PathBuf::from("../../../blobs/e2"));
        assert_eq!(fs::read_to_string(snap.join("1_Pooling/config.json")).unwrap(), "two");
        c.link(commit, "config.json", "e2").unwrap();
        assert_eq!(fs::read_to_string(snap.join("config.json")).unwrap(), "two");
        assert_eq!(c.list_snapshot(commit).unwrap(), vec!["1_Pooling/config.json", "config.json"]);

        assert_eq!(c.cached_commit("main"), None);
        c.write_ref("main", commit).unwrap();
        assert_eq!(fs::read_to_string(c.root().join("refs/main")).unwrap(), commit);
        assert_eq!(c.cached_commit("main").as_deref(), Some(commit));
        assert_eq!(c.cached_commit(commit).as_deref(), Some(commit));
        c.write_ref("refs/pr/1", commit).unwrap();
        assert_eq!(c.read_ref("refs/pr/1").as_deref(), Some(commit));
    }

    #[test]
    fn unsafe_names_are_refused() {
        for ok in ["config.json", "1_Pooling/config.json", "onnx/model.onnx"] {
            assert!(is_safe_repo_path(ok), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a\\b"] {
            assert!(!is_safe_repo_path(bad), "{bad}");
        }
        assert!(is_safe_etag("d7edf6bd2a681fb0175f7735299831ee1b22b812"));
        assert!(!is_safe_etag("../x") && !is_safe_etag("a/b") && !is_safe_etag(""));
    }
}
