//! The on-disk graph cache: `cache_dir/<key>/model.onnx`, built once, published by an atomic directory rename.
//!
//! The key is the SHA-256 (first 16 bytes, hex) of: the builder version, the opset, the shape mode, the bytes of
//! config.json, and a cheap digest of model.safetensors: its size, its modification time (ns) and the SHA-256 of
//! its first and last MiB. Hashing all of a 90 MB file would cost more than building the graph; a file changed
//! in place gets a new modification time, a different download a different header (tensor names, offsets and
//! dtypes all live in the first bytes) or different trailing weights.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, UNIX_EPOCH};

use bulkhead_core::ModelFiles;
use sha2::{Digest, Sha256};

use crate::bert::Storage;
use crate::{BuildOptions, BuiltGraph, GraphError, Inputs, ShapeMode, WeightsStorage};

/// Version of the graph the builder writes; part of the cache key, bumped whenever the emitted graph changes.
pub const BUILDER_VERSION: &str = "bert-1";

/// The weights file name beside `model.onnx` in a cache entry (the `location` of the external data).
const LINKED_WEIGHTS: &str = "model.safetensors";
const MODEL_FILE: &str = "model.onnx";
const MIB: u64 = 1 << 20;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> GraphError + '_ {
    move |e| GraphError::Io { path: path.to_path_buf(), source: e }
}

/// The cache key of `model` built with `opts`.
pub(crate) fn cache_key(model: &ModelFiles, opts: &BuildOptions) -> Result<String, GraphError> {
    let folder = || model.source.clone();
    let config = model.config.as_deref().ok_or(GraphError::MissingFile { model: folder(), file: "config.json" })?;
    let st =
        model.safetensors.as_deref().ok_or(GraphError::MissingFile { model: folder(), file: "model.safetensors" })?;
    let mut h = Sha256::new();
    h.update(b"bulkhead-graph\0");
    h.update(BUILDER_VERSION.as_bytes());
    h.update(opts.opset.to_le_bytes());
    match opts.shape {
        ShapeMode::Dynamic => h.update(b"dynamic"),
        ShapeMode::Static { batch, seq } => h.update(format!("static {batch}x{seq}").as_bytes()),
    }
    h.update(fs::read(config).map_err(io(config))?);

    let mut f = File::open(st).map_err(io(st))?;
    let meta = f.metadata().map_err(io(st))?;
    let size = meta.len();
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    h.update(size.to_le_bytes());
    h.update(mtime.to_le_bytes());
    let mut buf = vec![0u8; MIB.min(size) as usize];
    f.read_exact(&mut buf).map_err(io(st))?;
    h.update(Sha256::digest(&buf));
    f.seek(SeekFrom::Start(size - buf.len() as u64)).map_err(io(st))?;
    f.read_exact(&mut buf).map_err(io(st))?;
    h.update(Sha256::digest(&buf));
    let digest = h.finalize();
    Ok(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
}

/// The storage of a published entry, or `None` when it is incomplete.
fn entry_storage(dir: &Path) -> Option<WeightsStorage> {
    if !dir.join(MODEL_FILE).is_file() {
        return None;
    }
    match fs::symlink_metadata(dir.join(LINKED_WEIGHTS)) {
        Err(_) => Some(WeightsStorage::Embedded),
        Ok(m) if m.is_file() => Some(WeightsStorage::HardLink),
        Ok(_) => None,
    }
}

/// Hard-links `source` as `dir/model.safetensors`. A symbolic link is no use: ONNX Runtime (1.31) resolves
/// links and refuses external data outside the model's folder. A `source` that is itself a symbolic link (a Hugging
/// Face cache snapshot, a folder assembled from links) is resolved first, or the hard link would be one to the link.
fn link_weights(source: &Path, dir: &Path) -> bool {
    let Ok(file) = source.canonicalize() else { return false };
    fs::hard_link(file, dir.join(LINKED_WEIGHTS)).is_ok()
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Returns the graph of `model` from `cache_dir`, building it first when absent.
///
/// Building maps the safetensors file, writes `model.onnx` whose initializers point into a hard link of it (no
/// weight is copied; when the cache is on another file system than the model, the weights are embedded instead),
/// and publishes the entry by renaming its temporary folder, so concurrent processes never see a half
/// written entry; the loser of a race uses the winner's entry.
pub fn build_cached(model: &ModelFiles, opts: &BuildOptions, cache_dir: &Path) -> Result<BuiltGraph, GraphError> {
    let start = Instant::now();
    crate::check_options(opts)?;
    let key = cache_key(model, opts)?;
    let dir = cache_dir.join(&key);
    let done = |storage: WeightsStorage, cache_hit: bool| BuiltGraph {
        path: dir.join(MODEL_FILE),
        cache_hit,
        build_ms: start.elapsed().as_secs_f64() * 1e3,
        key: key.clone(),
        storage,
    };
    if let Some(storage) = entry_storage(&dir) {
        return Ok(done(storage, true));
    }
    if dir.exists() {
        // A damaged entry (a file removed by hand): rebuild it.
        tracing::warn!(entry = %dir.display(), "incomplete graph cache entry; rebuilding");
        fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }

    let inputs = Inputs::open(model, opts)?;
    fs::create_dir_all(cache_dir).map_err(io(cache_dir))?;
    let tmp: PathBuf =
        cache_dir.join(format!(".tmp-{key}-{}-{}", std::process::id(), TMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let result = (|| {
        let st = inputs.weights.path().to_path_buf();
        let storage = if link_weights(&st, &tmp) { WeightsStorage::HardLink } else { WeightsStorage::Embedded };
        let how = match storage {
            WeightsStorage::Embedded => Storage::Embedded,
            _ => Storage::External { location: LINKED_WEIGHTS.to_string() },
        };
        inputs.write(opts, &how, &tmp.join(MODEL_FILE))?;
        Ok(storage)
    })();
    let storage = match result {
        Ok(s) => s,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    match fs::rename(&tmp, &dir) {
        Ok(()) => {
            let built = done(storage, false);
            tracing::info!(key, ms = built.build_ms, ?storage, path = %built.path.display(), "ONNX graph built");
            Ok(built)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            // Another process published the same entry first: use it.
            match entry_storage(&dir) {
                Some(storage) => Ok(done(storage, true)),
                None => Err(GraphError::Io { path: dir.clone(), source: e }),
            }
        }
    }
}
