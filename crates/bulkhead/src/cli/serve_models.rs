//! `bulkhead serve`'s models on demand: the folders of `--models-dir` and the models of the Hugging Face cache
//! (`--from-hub-cache`) as candidates, and the loader the server calls to start one: the same path as a model given
//! with `--model` ([`wait_all_ready`] for the warm-up, [`first_request`] for the proof and the model's kind).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead_core::{Chain, ModelFiles, ModelTask};
use bulkhead_embed::{Engines, Tokenizer};
use bulkhead_server::backend::BoxFuture;
use bulkhead_server::segmenter::Segmenter;
use bulkhead_server::{Candidate, LoadedModel, ModelKind, ModelLoader, ServeConfig, SpeechInfo};
use bulkhead_supervisor::{Job, Supervisor, SupervisorConfig, UnitState};

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
            match first_request(&name, &files, tokenizer, &sup, &config).await {
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

/// One real request through the supervisor before the server listens: it proves the path end to end and gives
/// what the routes need (an embedding model's dimensions, a tensor model's signature).
pub async fn first_request(
    name: &str,
    files: &ModelFiles,
    tokenizer: Option<Tokenizer>,
    sup: &Supervisor,
    config: &ServeConfig,
) -> anyhow::Result<ModelKind> {
    let first = |e| anyhow::anyhow!("{name}: first request failed: {e}");
    Ok(match tokenizer {
        Some(tokenizer) if files.task.takes_images() => super::images::first_request(files, tokenizer, sup).await?,
        Some(tokenizer) if files.task.is_cross_encoder() || files.task.is_sparse() => {
            // A probe: the worker scores its warm-up pair.
            sup.run(Job::probe()).await.map_err(first)?;
            ModelKind::CrossEncoder { tokenizer, task: files.task.clone() }
        }
        Some(tokenizer) => {
            let rows = tokenizer.encode(&["bulkhead".to_string()])?;
            let probe = sup.embed(rows, vec![]).await.map_err(first)?;
            let dimensions = probe.answer.into_vectors().and_then(|v| v.first().map(Vec::len)).unwrap_or(0);
            ModelKind::Embedding { dimensions, tokenizer }
        }
        None if files.task == ModelTask::Segmentation => {
            // A probe: the worker decodes a centre point on its warm-up image.
            sup.run(Job::probe()).await.map_err(first)?;
            let segmenter = Segmenter::open(files, config.image_cache_bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
            ModelKind::Segmentation(Box::new(segmenter))
        }
        None if files.task.is_speech() => {
            // A probe: the worker transcribes its probe audio through the live path.
            let info = SpeechInfo::read(&files.source).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            sup.run(Job::probe()).await.map_err(first)?;
            ModelKind::Speech(info)
        }
        None => {
            // A probe: the worker runs its warm-up inputs (zeros of every input's shape).
            sup.run(Job::probe()).await.map_err(first)?;
            let (inputs, outputs) = sup.signature();
            ModelKind::Tensor { inputs, outputs }
        }
    })
}

/// Waits for every model's first unit to serve, with a progress line on stderr.
pub async fn wait_all_ready(sups: &[Arc<Supervisor>]) -> anyhow::Result<()> {
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut waits: Vec<_> = sups.iter().map(|s| Box::pin(s.wait_ready())).collect();
    let mut done = vec![None; sups.len()];
    let mut last_line = String::new();
    loop {
        for (i, w) in waits.iter_mut().enumerate() {
            if done[i].is_none() {
                if let Ok(r) = tokio::time::timeout(Duration::from_millis(1), w.as_mut()).await {
                    done[i] = Some(r);
                }
            }
        }
        if let Some(Err(e)) = done.iter().flatten().find(|r| r.is_err()) {
            if tty {
                eprintln!();
            }
            return Err(anyhow::anyhow!("{e}"));
        }
        if done.iter().all(Option::is_some) {
            if tty {
                eprintln!();
            }
            return Ok(());
        }
        let line = sups
            .iter()
            .map(|s| {
                let v = s.units();
                let active = v
                    .units
                    .iter()
                    .find(|u| matches!(u.state, UnitState::Loading | UnitState::Warming | UnitState::Serving))
                    .map(|u| format!("{} {:?}", u.unit, u.state).to_lowercase())
                    .unwrap_or_else(|| "starting".into());
                format!("{}: {active}", v.model)
            })
            .collect::<Vec<_>>()
            .join(", ");
        if line != last_line {
            if tty {
                eprint!("\r\x1b[2K[{:>5.1}s] {line}", start.elapsed().as_secs_f64());
            } else {
                eprintln!("[{:>5.1}s] {line}", start.elapsed().as_secs_f64());
            }
            last_line = line;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
