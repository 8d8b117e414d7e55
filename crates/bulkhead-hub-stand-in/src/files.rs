//! A served folder as the hub would store it: which files are LFS, their hashes, and the commit.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha1::Digest;

/// One file of a served repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFile {
    /// `/`-separated path in the repository.
    pub path: String,
    /// Where it is on disk.
    pub disk: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Stored with git LFS (weights, or over 10 MiB).
    pub lfs: bool,
    /// sha256 of the contents (LFS files).
    pub sha256: String,
    /// The git blob id: of the contents, or of the LFS pointer for LFS files.
    pub oid: String,
}

/// All files of a served folder and the commit they make.
pub(crate) struct RepoFiles {
    pub files: Vec<RepoFile>,
    pub commit: String,
}

const LFS_EXTENSIONS: &[&str] = &["safetensors", "bin", "onnx", "onnx_data", "data", "h5", "msgpack", "ot", "model"];

impl RepoFiles {
    pub fn scan(dir: &Path) -> io::Result<RepoFiles> {
        let mut paths = vec![];
        walk(dir, "", &mut paths)?;
        paths.sort();
        let mut files = vec![];
        for (path, disk) in paths {
            let size = fs::metadata(&disk)?.len();
            let ext = path.rsplit('.').next().unwrap_or("");
            let lfs = LFS_EXTENSIONS.contains(&ext) || size > 10 << 20;
            let (sha256, oid) = if lfs {
                let sha256 = hash::<sha2::Sha256>(&disk, b"")?;
                let pointer = format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n");
                let oid = hex(&sha1::Sha1::digest(format!("blob {}\0{pointer}", pointer.len()).as_bytes()));
                (sha256, oid)
            } else {
                (String::new(), hash::<sha1::Sha1>(&disk, format!("blob {size}\0").as_bytes())?)
            };
            files.push(RepoFile { path, disk, size, lfs, sha256, oid });
        }
        let mut commit = sha1::Sha1::new();
        for f in &files {
            commit.update(format!("{}\0{}\n", f.path, f.oid).as_bytes());
        }
        Ok(RepoFiles { files, commit: hex(&commit.finalize()) })
    }

    pub fn get(&self, path: &str) -> Option<&RepoFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == ".git" {
            continue;
        }
        let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let path = entry.path();
        if path.is_dir() {
            walk(&path, &rel, out)?;
        } else if path.is_file() {
            out.push((rel, path));
        }
    }
    Ok(())
}

fn hash<D: Digest>(path: &Path, prefix: &[u8]) -> io::Result<String> {
    let mut h = D::new();
    h.update(prefix);
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
