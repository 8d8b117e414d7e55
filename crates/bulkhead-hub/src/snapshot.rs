//! [`Hub::snapshot`]: from `ORG/NAME@REVISION` to a folder holding every file the model needs.
//!
//! Online, one API call resolves the revision to a commit and lists its files; files already linked in
//! `snapshots/<commit>` are used as they are (links exist only for complete blobs), the others are downloaded, the
//! metadata first (the weights choice reads `config.json`, `modules.json` and the shard index). `refs/<revision>`
//! moves to the commit only once the snapshot is complete. A full commit hash that is cached needs no network.
//! When the hub cannot be reached (network down, 5xx) a cached snapshot of the revision is used, with a warning.
//! Offline (`HF_HUB_OFFLINE=1`, `BULKHEAD_OFFLINE=1`), only the cache is read.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::Value;

use crate::cache::RepoCache;
use crate::client::{Client, FileMeta};
use crate::config::HubConfig;
use crate::download::{free_space, Download};
use crate::error::{human_bytes, ErrorKind, HubError};
use crate::progress::{Event, Progress};
use crate::repo::ModelRef;
use crate::select::{self, Formats, Listing, WeightsContext, SHARD_INDEX};

/// A model's files on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The model asked for.
    pub model: ModelRef,
    /// The commit the revision resolved to.
    pub commit: String,
    /// `$HF_HUB_CACHE/models--ORG--NAME/snapshots/<commit>`: open it as a model folder.
    pub dir: PathBuf,
    /// The files the model needs (all present in `dir`).
    pub files: Vec<String>,
    /// Bytes downloaded by this call.
    pub downloaded: u64,
    /// Whether the hub was not asked (offline mode, an immutable cached commit, or the hub unreachable).
    pub from_cache_only: bool,
}

/// The hub client with its cache.
#[derive(Debug, Clone)]
pub struct Hub {
    config: HubConfig,
    client: Client,
    attempts: u32,
}

impl Hub {
    /// A client for `config`; 5 attempts per file before a broken transfer is an error.
    pub fn new(config: HubConfig) -> Hub {
        let client = Client::new(&config.endpoint, config.token.clone());
        Hub { config, client, attempts: 5 }
    }

    /// Sets the attempts per file (at least 1).
    pub fn with_attempts(mut self, attempts: u32) -> Hub {
        self.attempts = attempts.max(1);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The snapshot of `model` holding every file it needs, downloading what is missing. `choose` picks the weight
    /// formats from what the repository has (see [`select`]).
    pub fn snapshot(
        &self,
        model: &ModelRef,
        choose: &dyn Fn(&WeightsContext<'_>) -> Formats,
        progress: &dyn Progress,
    ) -> Result<Snapshot, HubError> {
        let started = Instant::now();
        let cache = RepoCache::new(&self.config.cache_dir, model);
        let err = |kind| HubError::new(&model.repo, kind);
        if let Some(var) = self.config.offline {
            return self.cached(model, &cache, choose).map_err(err)?.ok_or_else(|| {
                err(ErrorKind::NotCached { cache: self.config.cache_dir.clone(), var, wanted: model.display() })
            });
        }
        if model.is_commit() {
            if let Ok(Some(s)) = self.cached(model, &cache, choose) {
                return Ok(s);
            }
        }
        let info = match self.client.revision_info(model) {
            Ok(info) => info,
            Err(e) => return self.offline_fallback(model, &cache, choose, e).map_err(err),
        };
        let commit = info.commit;
        let listing = info.listing;
        let mut files = select::metadata_files(&listing);
        let mut downloaded = self.ensure(model, &cache, &commit, &listing, &files, progress)?;
        let weights = self.model_files(&cache, &commit, &listing, choose).map_err(err)?;
        downloaded += self.ensure(model, &cache, &commit, &listing, &weights, progress)?;
        files.extend(weights);
        cache.write_ref(&model.revision, &commit).map_err(|e| err(crate::download::io_error(cache.root(), e)))?;
        progress.event(&Event::Finished { downloaded, elapsed: started.elapsed() });
        let dir = cache.snapshot_dir(&commit);
        Ok(Snapshot { model: model.clone(), commit, dir, files, downloaded, from_cache_only: false })
    }

    /// The hub failed: a cached snapshot of the revision serves when the failure is the network's or the hub's
    /// (5xx); otherwise the error stands, with a hint when a cached copy exists.
    fn offline_fallback(
        &self,
        model: &ModelRef,
        cache: &RepoCache,
        choose: &dyn Fn(&WeightsContext<'_>) -> Formats,
        e: ErrorKind,
    ) -> Result<Snapshot, ErrorKind> {
        let transient = matches!(e, ErrorKind::Unreachable { .. } | ErrorKind::Http { status: 500.., .. });
        let cached = self.cached(model, cache, choose).ok().flatten();
        match (transient, cached) {
            (true, Some(s)) => {
                tracing::warn!("{}: {e}; using the cached snapshot {}", model.repo, s.commit);
                Ok(s)
            }
            (_, cached) => {
                let hint = if cached.is_some() {
                    " (a cached copy exists: HF_HUB_OFFLINE=1 uses it without asking the hub)".to_string()
                } else {
                    String::new()
                };
                Err(match e {
                    ErrorKind::RepoNotFound { endpoint, status, .. } => {
                        ErrorKind::RepoNotFound { endpoint, status, offline_hint: hint }
                    }
                    ErrorKind::Unreachable { endpoint, reason, .. } => {
                        ErrorKind::Unreachable { endpoint, reason, offline_hint: hint }
                    }
                    other => other,
                })
            }
        }
    }

    /// The cached snapshot of `model`, if its revision is cached; an error if it lacks the weights `choose` asks.
    fn cached(
        &self,
        model: &ModelRef,
        cache: &RepoCache,
        choose: &dyn Fn(&WeightsContext<'_>) -> Formats,
    ) -> Result<Option<Snapshot>, ErrorKind> {
        let Some(commit) = cache.cached_commit(&model.revision) else { return Ok(None) };
        let dir = cache.snapshot_dir(&commit);
        let present = cache.list_snapshot(&commit).map_err(|e| crate::download::io_error(&dir, e))?;
        let listing = Listing::of_paths(&present);
        let weights = self.model_files(cache, &commit, &listing, choose).map_err(|e| match e {
            ErrorKind::NoUsableWeights(what) => {
                ErrorKind::Incomplete { dir: dir.clone(), what, wanted: model.display() }
            }
            other => other,
        })?;
        let mut files = select::metadata_files(&listing);
        files.extend(weights);
        tracing::debug!("{}: using the cached snapshot {commit} without asking the hub", model.repo);
        Ok(Some(Snapshot { model: model.clone(), commit, dir, files, downloaded: 0, from_cache_only: true }))
    }

    /// Module folders and weights, chosen once the metadata files are in the snapshot.
    fn model_files(
        &self,
        cache: &RepoCache,
        commit: &str,
        listing: &Listing,
        choose: &dyn Fn(&WeightsContext<'_>) -> Formats,
    ) -> Result<Vec<String>, ErrorKind> {
        let read = |file: &str| -> Option<Value> {
            let text = std::fs::read_to_string(cache.snapshot_dir(commit).join(file)).ok()?;
            serde_json::from_str(&text).ok()
        };
        let config = read("config.json");
        let ctx = WeightsContext {
            has_safetensors: listing.has_safetensors(),
            has_onnx: listing.onnx().is_some(),
            config: config.as_ref(),
        };
        let formats = choose(&ctx);
        select::model_files(listing, read("modules.json").as_ref(), read(SHARD_INDEX).as_ref(), formats)
            .map_err(ErrorKind::NoUsableWeights)
    }

    /// Downloads the `files` missing from the snapshot. Returns the bytes received.
    fn ensure(
        &self,
        model: &ModelRef,
        cache: &RepoCache,
        commit: &str,
        listing: &Listing,
        files: &[String],
        progress: &dyn Progress,
    ) -> Result<u64, HubError> {
        let err = |kind| HubError::new(&model.repo, kind);
        let missing: Vec<&String> = files.iter().filter(|f| !cache.has_file(commit, f)).collect();
        if missing.is_empty() {
            return Ok(0);
        }
        let mut metas: Vec<(&str, FileMeta)> = vec![];
        for file in &missing {
            let meta = self.client.file_meta(&model.repo, commit, file).map_err(err)?;
            if let Some(listed) = listing.size(file).filter(|&s| s != meta.size) {
                tracing::debug!("{file}: listed as {listed} bytes, the file metadata says {}", meta.size);
            }
            metas.push((file.as_str(), meta));
        }
        let to_fetch: u64 =
            metas.iter().filter(|(_, m)| !cache.blob_path(&m.etag).is_file()).map(|(_, m)| m.size).sum();
        let blobs = cache.root().join("blobs");
        if let Some(free) = free_space(&blobs).filter(|&free| free < to_fetch) {
            tracing::warn!(
                "{}: {} to download and only {} free under {}; the download may fail with a full disk",
                model.repo,
                human_bytes(to_fetch),
                human_bytes(free),
                self.config.cache_dir.display()
            );
        }
        progress.event(&Event::Plan {
            repo: &model.repo,
            commit,
            files: metas.len(),
            bytes: to_fetch,
            cached: files.len() - missing.len(),
        });
        let download = Download { client: &self.client, cache, commit, attempts: self.attempts, progress };
        let mut received = 0;
        for (file, meta) in &metas {
            received += download.fetch(file, meta).map_err(err)?;
        }
        Ok(received)
    }
}
