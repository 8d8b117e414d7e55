//! The on-disk graph cache: `cache_dir/<key>/model.onnx`, built once, published by an atomic directory rename.
//!
//! The key is the SHA-256 (first 16 bytes, hex) of: the builder version, the opset, the shape mode, the bytes of
//! config.json, the size and modification time of tokenizer.json (checked against the embedding table at build
//! time), and a cheap digest of each safetensors file (one, or every shard): its size, its modification time (ns)
//! and the SHA-256 of its first and last MiB. Hashing all of a 90 MB file would cost more than building the graph;
//! a file changed in place gets a new modification time, a different download a different header (tensor names,
//! offsets and dtypes all live in the first bytes) or different trailing weights.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, UNIX_EPOCH};

use bulkhead_core::ModelFiles;
use sha2::{Digest, Sha256};

use crate::graph::Storage;
use crate::{BuildOptions, BuiltGraph, GraphError, Inputs, ShapeMode, Variant, WeightsStorage};

/// Version of the graph the builder writes; part of the cache key, bumped whenever the emitted graph changes.
pub const BUILDER_VERSION: &str = "arch-2";

const MODEL_FILE: &str = "model.onnx";
const MIB: u64 = 1 << 20;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> GraphError + '_ {
    move |e| GraphError::Io { path: path.to_path_buf(), source: e }
}

/// The cache key of `model` built with `opts`.
pub(crate) fn cache_key(model: &ModelFiles, opts: &BuildOptions, variant: Variant<'_>) -> Result<String, GraphError> {
    cache_key_of(model, opts, &variant.digest())
}

/// The cache key of the graph of `model` built with `opts` that `which` tells apart from the model's other graphs
/// (a [`Variant`]'s digest, a tower's name).
pub(crate) fn cache_key_of(model: &ModelFiles, opts: &BuildOptions, which: &[u8]) -> Result<String, GraphError> {
    let folder = || model.source.clone();
    let config = model.config.as_deref().ok_or(GraphError::MissingFile { model: folder(), file: "config.json" })?;
    if model.safetensors_shards.is_empty() {
        return Err(GraphError::MissingFile { model: folder(), file: "model.safetensors" });
    }
    let mut h = Sha256::new();
    h.update(b"bulkhead-graph\0");
    h.update(BUILDER_VERSION.as_bytes());
    h.update(opts.opset.to_le_bytes());
    match opts.shape {
        ShapeMode::Dynamic => h.update(b"dynamic"),
        ShapeMode::Static { batch, seq } => h.update(format!("static {batch}x{seq}").as_bytes()),
    }
    h.update(which);
    // A SPLADE model's graph (head and pooling from modules.json) differs from its encoder-only graph.
    if let bulkhead_core::ModelTask::SparseEmbedding(spec) = &model.task {
        h.update(spec.digest());
        h.update(crate::splade::SPLADE_GRAPH.as_bytes());
    }
    h.update(fs::read(config).map_err(io(config))?);
    if let Some(meta) = model.tokenizer.as_deref().and_then(|t| fs::metadata(t).ok()) {
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        h.update(meta.len().to_le_bytes());
        h.update(mtime.to_le_bytes());
    }
    for st in &model.safetensors_shards {
        digest_weights(&mut h, st)?;
    }
    let digest = h.finalize();
    Ok(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
}

/// Adds the size, modification time and first and last MiB of a weights file to `h`.
fn digest_weights(h: &mut Sha256, st: &Path) -> Result<(), GraphError> {
    h.update(st.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
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
    Ok(())
}

/// The names the weights files get beside `model.onnx` (the `location` of the external data): their own names.
fn linked_names(model: &ModelFiles) -> Vec<String> {
    model
        .safetensors_shards
        .iter()
        .map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model.safetensors".into()))
        .collect()
}

/// The storage of a published entry, or `None` when it is incomplete.
fn entry_storage(dir: &Path, linked: &[String]) -> Option<WeightsStorage> {
    if !dir.join(MODEL_FILE).is_file() {
        return None;
    }
    let present: Vec<bool> =
        linked.iter().map(|n| fs::symlink_metadata(dir.join(n)).is_ok_and(|m| m.is_file())).collect();
    if present.iter().all(|p| *p) {
        Some(WeightsStorage::HardLink)
    } else if present.iter().all(|p| !p) {
        Some(WeightsStorage::Embedded)
    } else {
        None
    }
}

/// Hard-links every weights file into `dir` under its own name. A symbolic link is no use: ONNX Runtime (1.31)
/// resolves links and refuses external data outside the model's folder. A source may itself be a symbolic link (a
/// Hugging Face cache snapshot is made of relative links into `blobs/`), and `link(2)` does not follow one: link the
/// file it points to, or the entry would hold a dangling relative link.
fn link_weights(sources: &[&Path], names: &[String], dir: &Path) -> bool {
    let ok = sources.iter().zip(names).all(|(s, n)| {
        let file = fs::canonicalize(s).unwrap_or_else(|_| s.to_path_buf());
        fs::hard_link(file, dir.join(n)).is_ok()
    });
    if !ok {
        names.iter().for_each(|n| drop(fs::remove_file(dir.join(n))));
    }
    ok
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Returns the graph of `model` from `cache_dir`, building it first when absent.
///
/// Building maps the safetensors file, writes `model.onnx` whose initializers point into a hard link of it (no
/// weight is copied; when the cache is on another file system than the model, the weights are embedded instead),
/// and publishes the entry by renaming its temporary folder, so concurrent processes never see a half
/// written entry; the loser of a race uses the winner's entry.
pub fn build_cached(model: &ModelFiles, opts: &BuildOptions, cache_dir: &Path) -> Result<BuiltGraph, GraphError> {
    build_cached_variant(model, opts, Variant::Float, cache_dir)
}

/// [`build_cached`] of a [`Variant`] (int8 layers, calibration probes); the variant is part of the key.
pub fn build_cached_variant(
    model: &ModelFiles,
    opts: &BuildOptions,
    variant: Variant<'_>,
    cache_dir: &Path,
) -> Result<BuiltGraph, GraphError> {
    build_entry(model, opts, &variant.digest(), cache_dir, || {
        let inputs = Inputs::open(model, opts)?;
        Ok(move |storage: &Storage, path: &Path| inputs.write(opts, variant, storage, path))
    })
}

/// Returns the cache entry of the graph `which` (see [`cache_key_of`]) of `model`, building it when absent:
/// `prepare` parses the model (its errors leave nothing behind) and returns the writer of `model.onnx`.
pub(crate) fn build_entry<W>(
    model: &ModelFiles,
    opts: &BuildOptions,
    which: &[u8],
    cache_dir: &Path,
    prepare: impl FnOnce() -> Result<W, GraphError>,
) -> Result<BuiltGraph, GraphError>
where
    W: FnOnce(&Storage, &Path) -> Result<(), GraphError>,
{
    let start = Instant::now();
    crate::check_options(opts)?;
    let key = cache_key_of(model, opts, which)?;
    let dir = cache_dir.join(&key);
    let done = |storage: WeightsStorage, cache_hit: bool| BuiltGraph {
        path: dir.join(MODEL_FILE),
        cache_hit,
        build_ms: start.elapsed().as_secs_f64() * 1e3,
        key: key.to_string(),
        storage,
    };
    let linked = linked_names(model);
    if let Some(storage) = entry_storage(&dir, &linked) {
        return Ok(done(storage, true));
    }
    if dir.exists() {
        // A damaged entry (a file removed by hand): rebuild it.
        tracing::warn!(entry = %dir.display(), "incomplete graph cache entry; rebuilding");
        fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }

    let write = prepare()?;
    fs::create_dir_all(cache_dir).map_err(io(cache_dir))?;
    let tmp: PathBuf =
        cache_dir.join(format!(".tmp-{key}-{}-{}", std::process::id(), TMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let result = (|| {
        let sources: Vec<&Path> = model.safetensors_shards.iter().map(PathBuf::as_path).collect();
        let storage =
            if link_weights(&sources, &linked, &tmp) { WeightsStorage::HardLink } else { WeightsStorage::Embedded };
        let how = match storage {
            WeightsStorage::Embedded => Storage::Embedded,
            _ => Storage::External { locations: linked.clone() },
        };
        write(&how, &tmp.join(MODEL_FILE))?;
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
            match entry_storage(&dir, &linked) {
                Some(storage) => Ok(done(storage, true)),
                None => Err(GraphError::Io { path: dir.clone(), source: e }),
            }
        }
    }
}
