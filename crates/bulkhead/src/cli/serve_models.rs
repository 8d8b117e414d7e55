//! `bulkhead serve`'s models on demand: the folders of `--models-dir` and the models of the Hugging Face cache
//! (`--from-hub-cache`) as candidates, and the loader the server calls to start one (the same path as a model
//! given with `--model`: supervisor, warm-up, first request).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bulkhead_core::{Chain, ModelFiles, ModelTask};
use bulkhead_embed::{Engines, Tokenizer};
use bulkhead_server::backend::BoxFuture;
use bulkhead_server::{Candidate, LoadedModel, ModelLoader, ServeConfig};
use bulkhead_supervisor::{Supervisor, SupervisorConfig};

/// How a model's files are opened: the path, then `--precision` and the default prompt, as for `--model`.
pub type Opener = Arc<dyn Fn(&Path) -> anyhow::Result<ModelFiles> + Send + Sync>;

/// Starts models for the server's registry.
pub struct Loader {
    /// The compute units, in order.
    pub chain: Chain,
    /// The engines of this build.
    pub engines: Arc<Engines>,
    /// Supervision settings (workers, timeouts, recycling).
    pub supervision: SupervisorConfig,
    /// The HTTP settings the first request needs (the image cache of a segmentation model).
    pub config: ServeConfig,
    /// Opens a model's files.
    pub open: Opener,
}

impl ModelLoader for Loader {
    fn open(&self, _name: &str, source: &Path) -> Result<ModelFiles, String> {
        (self.open)(source).map_err(|e| format!("{e:#}"))
    }

    fn load(&self, name: String, files: ModelFiles) -> BoxFuture<'static, Result<LoadedModel, String>> {
        let (chain, engines, supervision, config) =
            (self.chain.clone(), self.engines.clone(), self.supervision.clone(), self.config.clone());
        Box::pin(async move {
            let untokenized =
                files.is_tensor_model() || files.task == ModelTask::Segmentation || files.task.is_speech();
            let tokenizer = if untokenized {
                None
            } else {
                let f = files.clone();
                let loaded = tokio::task::spawn_blocking(move || Tokenizer::load(&f))
                    .await
                    .map_err(|e| format!("loading the tokenizer stopped: {e}"))?;
                Some(loaded.map_err(|e| format!("{e:#}"))?)
            };
            let mut named = files.clone();
            named.name = name.clone();
            let sup = Arc::new(Supervisor::start(named, &chain, engines, supervision));
            if let Err(e) = sup.wait_ready().await {
                sup.shutdown().await;
                return Err(e.to_string());
            }
            match super::serve::first_request(&name, &files, tokenizer, &sup, &config).await {
                Ok(kind) => Ok(LoadedModel { name, files, kind, backend: sup }),
                Err(e) => {
                    sup.shutdown().await;
                    Err(format!("{e:#}"))
                }
            }
        })
    }
}

/// The models of a `--models-dir`: each folder (or `.onnx` file) is a model named after it; hidden entries are
/// skipped. A folder that cannot be opened is listed as failed, with why.
pub fn scan_models_dir(dir: &Path, open: &Opener) -> anyhow::Result<Vec<Candidate>> {
    let read =
        std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("--models-dir {}: cannot read it: {e}", dir.display()))?;
    let mut entries: Vec<PathBuf> = read
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')))
        .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    entries.sort();
    Ok(entries
        .into_iter()
        .map(|source| {
            let stem = if source.is_dir() { source.file_name() } else { source.file_stem() };
            let name = stem.map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let files = open(&source).map_err(|e| format!("{e:#}"));
            Candidate { name, source, files }
        })
        .collect())
}

/// The models in the Hugging Face cache (`$HF_HUB_CACHE/models--ORG--NAME`, at the snapshot `refs/main` names),
/// named `ORG/NAME` as a hub id; a model without a complete snapshot is listed as failed.
pub fn scan_hub_cache(open: &Opener) -> Vec<Candidate> {
    let cache = bulkhead_hub::HubConfig::from_env().cache_dir;
    let Ok(read) = std::fs::read_dir(&cache) else { return vec![] };
    let mut repos: Vec<PathBuf> = read
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("models--")))
        .collect();
    repos.sort();
    repos
        .into_iter()
        .map(|repo| {
            let dir_name = repo.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let name = dir_name.trim_start_matches("models--").replacen("--", "/", 1);
            let commit = std::fs::read_to_string(repo.join("refs").join("main")).map(|c| c.trim().to_string());
            let (source, files) = match commit {
                Ok(c) if !c.is_empty() => {
                    let snapshot = repo.join("snapshots").join(c);
                    let files = open(&snapshot).map_err(|e| format!("{e:#}"));
                    (snapshot, files)
                }
                _ => (repo.clone(), Err("no snapshot for `main` in the cache; run `bulkhead pull` for it".into())),
            };
            Candidate { name, source, files }
        })
        .collect()
}
