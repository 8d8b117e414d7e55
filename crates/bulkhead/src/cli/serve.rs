//! `bulkhead serve`: the HTTP server over supervised workers, one supervisor and one batcher per model.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bulkhead_core::{ModelFiles, ModelTask};
use bulkhead_embed::Tokenizer;
use bulkhead_server::api::models::Keep;
use bulkhead_server::grouping::Grouping;
use bulkhead_server::{AppState, ConnectionLimits, Limits, LoadedModel, ModelKind, OnDemand, ServeConfig, TraceConfig};
use bulkhead_supervisor::{faults, Isolation, Supervisor, SupervisorConfig};

use super::common::{
    engines, open_model, ChainArgs, MemoryArgs, PrecisionArg, UsageError, Weights, DEFAULT_MODEL_NAME,
};

/// Arguments of `bulkhead serve`. Every option also reads `BULKHEAD_<OPTION>`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A model to serve, `[NAME=]PATH` or `[NAME=]ORG/NAME[@REVISION]` (a hub id, served under that id unless NAME
    /// is given; repeat for several; the first is the default). Default: all-MiniLM-L6-v2 installed by the set-up.
    #[arg(long = "model", env = "BULKHEAD_MODEL", value_delimiter = ',', value_name = "[NAME=]PATH|ORG/NAME")]
    models: Vec<String>,
    /// A folder of models (each folder or .onnx file in it is a model, named after it) made available by name and
    /// loaded by the first request that names one; `--model` models stay loaded (pinned).
    #[arg(long, env = "BULKHEAD_MODELS_DIR", value_name = "DIR")]
    models_dir: Option<PathBuf>,
    /// Also make the models of the Hugging Face cache available on demand, named `ORG/NAME`.
    #[arg(long, env = "BULKHEAD_FROM_HUB_CACHE")]
    from_hub_cache: bool,
    /// Models loaded at once (models on demand): loading one more first unloads the least recently used.
    #[arg(long, env = "BULKHEAD_MAX_LOADED_MODELS", value_name = "N")]
    max_loaded_models: Option<usize>,
    /// MiB of resident memory the loaded models' workers may take together (measured; a model never loaded yet
    /// counts its weights plus 64 MiB): loading one more first unloads the least recently used.
    #[arg(long, env = "BULKHEAD_MEMORY_BUDGET_MB", value_name = "M")]
    memory_budget_mb: Option<u64>,
    /// How long a model loaded on demand stays loaded once idle: seconds or a duration (`5m`, `1h`, `90s`); `0`
    /// unloads after each request, `-1` never. A request's `keep_alive` overrides it for its model.
    #[arg(long, env = "BULKHEAD_KEEP_ALIVE", default_value = "5m", value_parser = parse_keep_alive, allow_hyphen_values = true)]
    keep_alive: Keep,
    #[command(flatten)]
    chain: ChainArgs,
    /// Address to bind (127.0.0.1: this machine only).
    #[arg(long, env = "BULKHEAD_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Port to bind (0: any free port; the address is printed as `listening on http://ADDR`).
    #[arg(long, env = "BULKHEAD_PORT", default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every route but the health probes.
    #[arg(long, env = "BULKHEAD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// Worker isolation: `process` (crash-safe) or `none` (in-process, for measuring the overhead).
    #[arg(long, env = "BULKHEAD_ISOLATION", default_value = "process")]
    isolation: Isolation,
    /// Warm workers per model on the serving unit, requests going to the least loaded: a number, or `auto` (the
    /// cores divided by --worker-threads). While one restarts, the others serve.
    #[arg(long, env = "BULKHEAD_WORKERS", default_value = "1", value_parser = parse_workers)]
    workers: Workers,
    /// ONNX Runtime intra-op threads per worker (default: cores / workers with several workers, 1 with `auto`,
    /// ONNX Runtime's own default with one worker).
    #[arg(long, env = "BULKHEAD_WORKER_THREADS")]
    worker_threads: Option<usize>,
    /// Padded tokens (rows x longest row) per batch.
    #[arg(long, env = "BULKHEAD_MAX_BATCH_TOKENS", default_value_t = 16_384)]
    max_batch_tokens: usize,
    /// Rows per batch.
    #[arg(long, env = "BULKHEAD_MAX_BATCH_SIZE", default_value_t = 64)]
    max_batch_size: usize,
    /// Length grouping: a batch's rows, sorted by length, are cut into forward passes whose padding stays within
    /// this share of their real tokens (or within --padding-allowance tokens per row); `off` pads a batch to its
    /// longest row.
    #[arg(long, env = "BULKHEAD_MAX_PADDING_SHARE", default_value = "0.15", value_parser = parse_padding_share)]
    max_padding_share: PaddingShare,
    /// Padding tokens per row any forward pass may carry whatever --max-padding-share says (splitting a pass of
    /// short rows costs more than a few tokens of padding each).
    #[arg(long, env = "BULKHEAD_PADDING_ALLOWANCE", default_value_t = 8)]
    padding_allowance: usize,
    /// Extra milliseconds a batch may wait for more requests (0: batches form while the workers are busy).
    #[arg(long, env = "BULKHEAD_MAX_BATCH_WAIT_MS", default_value_t = 0)]
    max_batch_wait_ms: u64,
    /// Batches in flight per model.
    #[arg(long, env = "BULKHEAD_MAX_CONCURRENT_BATCHES", default_value_t = 2)]
    max_concurrent_batches: usize,
    /// A request with a row of more tokens than this is long: short requests pass long ones waiting for a batch
    /// slot, have a batch slot of their own, and, with --workers 2 or more, one worker is kept free of long work
    /// while short requests arrive. `off`: first come, first served.
    #[arg(long, env = "BULKHEAD_LONG_ROW_TOKENS", default_value = "128", value_parser = parse_long_rows)]
    long_row_tokens: LongRows,
    /// Requests waiting per model before new ones get 429.
    #[arg(long, env = "BULKHEAD_MAX_QUEUE", default_value_t = 1024)]
    max_queue: usize,
    /// Inputs per request (422 beyond); `--max-client-batch-size` is text-embeddings-inference's name for it (whose
    /// default is 32; this one is OpenAI's limit of 2048 inputs per embeddings request).
    #[arg(long, visible_alias = "max-client-batch-size", env = "BULKHEAD_MAX_INPUTS", default_value_t = 2048)]
    max_inputs: usize,
    /// Request body limit in bytes (413 beyond).
    #[arg(long, env = "BULKHEAD_MAX_BODY_BYTES", default_value_t = 8 << 20)]
    max_body_bytes: usize,
    /// Seconds a request may take before it is answered 504 (0: no deadline).
    #[arg(long, env = "BULKHEAD_REQUEST_TIMEOUT_S", default_value_t = 120.0)]
    request_timeout_s: f64,
    /// Seconds a connection may take to send a complete request head, from opening or from the first byte of a
    /// new request (slow and half-open connections are closed).
    #[arg(long, env = "BULKHEAD_HEADER_TIMEOUT_S", default_value_t = 10.0)]
    header_timeout_s: f64,
    /// Seconds an idle keep-alive connection stays open.
    #[arg(long, env = "BULKHEAD_KEEP_ALIVE_TIMEOUT_S", default_value_t = 60.0)]
    keep_alive_timeout_s: f64,
    /// The longest audio the speech routes take, in seconds (longer files are refused with 413 while decoding).
    #[arg(long, env = "BULKHEAD_MAX_AUDIO_S", default_value_t = 3600.0)]
    max_audio_s: f64,
    /// Connections served at once (beyond: a 503 JSON answer and the connection closed); capped below the
    /// open-files limit.
    #[arg(long, env = "BULKHEAD_MAX_CONNECTIONS", default_value_t = 8192)]
    max_connections: usize,
    /// Export OpenTelemetry traces (a span per request, one per stage) over OTLP/HTTP to this collector
    /// (`http://localhost:4318`; spans go to `/v1/traces`). Off by default.
    #[arg(long, env = "BULKHEAD_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// `service.name` of the exported traces.
    #[arg(long, env = "BULKHEAD_OTLP_SERVICE_NAME", default_value = "bulkhead")]
    otlp_service_name: String,

    /// The prompt applied to every text of a request that names none: a name of the model's prompts
    /// (config_sentence_transformers.json); replaces the model's `default_prompt_name`.
    #[arg(long, env = "BULKHEAD_DEFAULT_PROMPT_NAME", conflicts_with = "default_prompt")]
    default_prompt_name: Option<String>,
    /// A prompt text applied to every text of a request that names none ("" for none); replaces the model's
    /// `default_prompt_name`.
    #[arg(long, env = "BULKHEAD_DEFAULT_PROMPT")]
    default_prompt: Option<String>,

    /// Fixed prediction deadline in ms (default: the 99th percentile of recent predictions of the same shape x 10,
    /// at least 1 s; before a shape is observed, the warm-up latency x 20, at least 5 s).
    #[arg(long, env = "BULKHEAD_PREDICT_TIMEOUT_MS")]
    predict_timeout_ms: Option<u64>,
    /// Seconds a request may wait for a worker (while the last unit restarts) before it gets 503 + Retry-After.
    #[arg(long, env = "BULKHEAD_QUEUE_TIMEOUT_S", default_value_t = 30)]
    queue_timeout_s: u64,
    /// Seconds a worker may take to load and warm up before it is killed.
    #[arg(long, env = "BULKHEAD_LOAD_TIMEOUT_S", default_value_t = 300)]
    load_timeout_s: u64,
    /// Replace a worker after this many predictions.
    #[arg(long, env = "BULKHEAD_RECYCLE_AFTER")]
    recycle_after: Option<u64>,
    /// Replace a worker whose resident memory exceeds this many MiB.
    #[arg(long, env = "BULKHEAD_RECYCLE_RSS_MB")]
    recycle_rss_mb: Option<u64>,
    /// Replace a worker whose resident memory grew this many MiB since warm-up.
    #[arg(long, env = "BULKHEAD_RECYCLE_GROWTH_MB")]
    recycle_growth_mb: Option<u64>,
    #[command(flatten)]
    memory: MemoryArgs,
    /// Crashes (one forgiven per 5 minutes) that quarantine a unit.
    #[arg(long, env = "BULKHEAD_QUARANTINE_CRASHES", default_value_t = 3)]
    quarantine_crashes: u32,
    /// `int8`: serve each model's int8 form with a measured accuracy floor (made once by `bulkhead quantize` with
    /// its defaults, in a child process, and cached; a folder `bulkhead quantize` wrote is served as it is).
    #[arg(long, env = "BULKHEAD_PRECISION", value_enum, default_value_t = PrecisionArg::Fp32)]
    precision: PrecisionArg,
    /// The most pixels an image's header may declare (segmentation and image embeddings; larger images are refused
    /// before any decoding: decompression bombs). Default: PIL's limit.
    #[arg(long, env = "BULKHEAD_MAX_IMAGE_PIXELS", default_value_t = bulkhead_image::DEFAULT_MAX_PIXELS)]
    max_image_pixels: u64,
    /// MiB of images a segmentation model keeps by `image_id`: prepared images in the server and image embeddings
    /// in each worker, so later prompts on an image skip decoding and the image encoder.
    #[arg(long, env = bulkhead_segment::IMAGE_CACHE_ENV, default_value_t = 256)]
    image_cache_mb: usize,
    /// Where the crash history is kept (default: $XDG_STATE_HOME/bulkhead).
    #[arg(long, env = "BULKHEAD_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Fetch `http(s)://` image URLs (10 s and the image byte limit per image); otherwise only `data:` URLs.
    #[arg(long, env = "BULKHEAD_ALLOW_IMAGE_URLS")]
    allow_image_urls: bool,
}

struct Spec {
    name: String,
    /// A path or hub id; `None` for the default model.
    model: Option<String>,
}

/// `--workers`: a count, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workers {
    Count(usize),
    Auto,
}

fn parse_workers(s: &str) -> Result<Workers, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(Workers::Auto);
    }
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(Workers::Count(n)),
        _ => Err(format!("`{s}` is not a worker count; give a number of 1 or more, or `auto`")),
    }
}

/// `--long-row-tokens`: a token count, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LongRows(Option<usize>);

fn parse_long_rows(s: &str) -> Result<LongRows, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(LongRows(None));
    }
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(LongRows(Some(n))),
        _ => Err(format!("`{s}` is not a token count; give the row length past which a request is long, or `off`")),
    }
}

/// `--max-padding-share`: a share of the real tokens, or `off`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PaddingShare(Option<f64>);

fn parse_padding_share(s: &str) -> Result<PaddingShare, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(PaddingShare(None));
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(PaddingShare(Some(v))),
        _ => Err(format!(
            "`{s}` is not a padding share; give padding tokens per real token (0.15 for 15%, 0 for none), or `off`"
        )),
    }
}

/// (workers, intra-op threads per worker) for `cores` cores.
fn plan_workers(workers: Workers, threads: Option<usize>, cores: usize) -> (usize, Option<usize>) {
    let threads = threads.filter(|&t| t > 0);
    match workers {
        Workers::Count(1) => (1, threads),
        Workers::Count(n) => (n, Some(threads.unwrap_or((cores / n).max(1)))),
        Workers::Auto => {
            let t = threads.unwrap_or(1);
            ((cores / t).max(1), Some(t))
        }
    }
}

fn parse_keep_alive(s: &str) -> Result<Keep, String> {
    bulkhead_server::api::models::parse_keep(s)
}

fn parse_spec(s: &str) -> Spec {
    match s.split_once('=') {
        Some((name, model)) if !name.is_empty() && !name.contains('/') => {
            Spec { name: name.to_string(), model: Some(model.to_string()) }
        }
        _ => Spec { name: String::new(), model: Some(s.to_string()) },
    }
}

impl ServeArgs {
    /// Runs the server until Ctrl-C or SIGTERM.
    pub fn run(self) -> anyhow::Result<()> {
        let rules = faults::from_env().map_err(|e| UsageError(e.to_string()))?;
        let on_demand = self.models_dir.is_some() || self.from_hub_cache;
        if self.max_loaded_models == Some(0) {
            return Err(UsageError("--max-loaded-models must be 1 or more".into()).into());
        }
        if self.memory_budget_mb == Some(0) {
            return Err(UsageError("--memory-budget-mb must be more than 0".into()).into());
        }
        let specs: Vec<Spec> = if self.models.is_empty() && on_demand {
            vec![]
        } else if self.models.is_empty() {
            vec![Spec { name: DEFAULT_MODEL_NAME.into(), model: None }]
        } else {
            self.models.iter().map(|s| parse_spec(s)).collect()
        };
        // Resolve and open every model first (hub downloads included, before any async work): a bad path or id is
        // an error before anything starts.
        let mut opened: Vec<(String, ModelFiles)> = vec![];
        for spec in &specs {
            let files = open_model(spec.model.as_deref(), None, Weights::Chain(&self.chain.compute_units))?;
            let mut files = self.precision.apply(files)?;
            super::common::set_default_prompt(
                &mut files,
                self.default_prompt_name.as_deref(),
                self.default_prompt.as_deref(),
            )?;
            let name = if spec.name.is_empty() { files.name.clone() } else { spec.name.clone() };
            if opened.iter().any(|(n, _)| n == &name) {
                return Err(UsageError(format!("two models are named `{name}`; use --model NAME=PATH")).into());
            }
            opened.push((name, files));
        }
        // The workers read their embedding cache's budget from the environment they inherit.
        std::env::set_var(bulkhead_segment::IMAGE_CACHE_ENV, self.image_cache_mb.to_string());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8))
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        runtime.block_on(self.serve(opened, rules))
    }

    /// How `--models-dir` and `--from-hub-cache` models are opened: as `--model` ones (precision, default prompt).
    fn opener(&self) -> super::serve_models::Opener {
        let (chain, precision) = (self.chain.compute_units.clone(), self.precision);
        let (prompt_name, prompt) = (self.default_prompt_name.clone(), self.default_prompt.clone());
        Arc::new(move |path: &std::path::Path| {
            let text = path.to_string_lossy();
            let files = open_model(Some(&text), None, Weights::Chain(&chain))?;
            let mut files = precision.apply(files)?;
            super::common::set_default_prompt(&mut files, prompt_name.as_deref(), prompt.as_deref())?;
            Ok(files)
        })
    }

    /// The models loaded on demand, and the limits.
    fn on_demand(&self, sup_config: &SupervisorConfig, config: &ServeConfig) -> anyhow::Result<OnDemand> {
        let open = self.opener();
        let mut candidates = vec![];
        if let Some(dir) = &self.models_dir {
            candidates = super::serve_models::scan_models_dir(dir, &open).map_err(|e| UsageError(format!("{e:#}")))?;
        }
        if self.from_hub_cache {
            candidates.extend(super::serve_models::scan_hub_cache(&open));
        }
        for c in &candidates {
            match &c.files {
                Ok(_) => tracing::info!("model {} available on demand ({})", c.name, c.source.display()),
                Err(e) => tracing::warn!("model {} cannot be served: {e}", c.name),
            }
        }
        let loader = super::serve_models::Loader {
            chain: self.chain.compute_units.clone(),
            engines: Arc::new(engines()),
            supervision: sup_config.clone(),
            config: config.clone(),
            open,
        };
        let limits = Limits {
            max_loaded: self.max_loaded_models,
            memory_budget_bytes: self.memory_budget_mb.map(|m| m << 20),
            keep_alive: self.keep_alive,
            load_wait: Duration::from_secs(self.queue_timeout_s.max(1)),
        };
        Ok(OnDemand { candidates, loader: Arc::new(loader), limits })
    }

    async fn serve(self, models: Vec<(String, ModelFiles)>, rules: Vec<faults::FaultRule>) -> anyhow::Result<()> {
        let engines = Arc::new(engines());
        let mut sup_config = self.supervisor_config(rules);
        if self.isolation == Isolation::Process {
            sup_config.worker_memory = self.memory.ceiling()?;
        } else if self.memory.worker_memory_mb.is_some() {
            tracing::warn!("--worker-memory-mb applies to worker processes; --isolation none has none");
        }
        let config = self.serve_config()?;

        let mut opened = vec![];
        for (name, files) in models {
            // An ONNX graph without a tokenizer is a tensor model (KServe v2 infer), a SAM2 model segments, a Whisper
            // folder is a speech model (its worker tokenizes); everything else embeds or scores.
            let untokenized =
                files.is_tensor_model() || files.task == ModelTask::Segmentation || files.task.is_speech();
            let tokenizer = if untokenized { None } else { Some(Tokenizer::load(&files)?) };
            opened.push((name, files, tokenizer));
        }
        let sups: Vec<Arc<Supervisor>> = opened
            .iter()
            .map(|(name, files, _)| {
                let mut files = files.clone();
                files.name = name.clone();
                Arc::new(Supervisor::start(files, &self.chain.compute_units, engines.clone(), sup_config.clone()))
            })
            .collect();
        super::serve_models::wait_all_ready(&sups).await?;

        let mut models = vec![];
        for ((name, files, tokenizer), sup) in opened.into_iter().zip(&sups) {
            let kind = super::serve_models::first_request(&name, &files, tokenizer, sup, &config).await?;
            models.push(LoadedModel { name, files, kind, backend: sup.clone() });
        }
        let on_demand = self.on_demand(&sup_config, &config)?;
        let state = AppState::on_demand(models, on_demand, config);
        if self.memory_budget_mb.is_some() && self.isolation != Isolation::Process {
            tracing::warn!("--memory-budget-mb counts worker processes' memory; --isolation none has none");
        }
        if let Err(e) = state.models.check_budget() {
            state.models.shutdown().await;
            return Err(UsageError(e).into());
        }
        if state.models.is_empty() {
            return Err(UsageError("no model to serve: --models-dir has no model folders".into()).into());
        }
        let listener = tokio::net::TcpListener::bind((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("cannot bind {}:{}", self.host, self.port))?;
        let addr = listener.local_addr()?;
        announce_models(&state);
        let shutdown = shutdown_signal();
        println!("listening on http://{addr}");
        let _ = std::io::stdout().flush();
        tracing::info!("listening on http://{addr} (Ctrl-C to stop)");
        bulkhead_server::serve(listener, state.clone(), shutdown).await.context("the HTTP server failed")?;
        tracing::info!("stopping: in-flight requests are finished, workers stopped");
        if let Some(tracer) = &state.tracer {
            tracer.shutdown(Duration::from_secs(3));
        }
        state.models.shutdown().await;
        Ok(())
    }

    /// The supervision options: workers per model, timeouts, recycling, the crash history's directory.
    fn supervisor_config(&self, rules: Vec<faults::FaultRule>) -> SupervisorConfig {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (workers, worker_threads) = plan_workers(self.workers, self.worker_threads, cores);
        if workers > 1 || worker_threads.is_some() {
            let threads = worker_threads.map_or("the engine's default".to_string(), |t| t.to_string());
            tracing::info!("{workers} warm workers per model, {threads} intra-op threads each ({cores} cores)");
        }
        SupervisorConfig {
            isolation: self.isolation,
            workers,
            worker_threads,
            queue_timeout: Duration::from_secs(self.queue_timeout_s.max(1)),
            faults: rules,
            state_dir: Some(self.state_dir.clone().unwrap_or_else(bulkhead_core::install::state_dir)),
            quarantine_crashes: self.quarantine_crashes.max(1),
            load_timeout: Duration::from_secs(self.load_timeout_s.max(1)),
            predict_timeout: self.predict_timeout_ms.map(Duration::from_millis),
            recycle_after: self.recycle_after,
            recycle_rss_bytes: self.recycle_rss_mb.map(|m| m << 20),
            recycle_growth_bytes: self.recycle_growth_mb.map(|m| m << 20),
            long_row_tokens: self.long_row_tokens.0,
            ..SupervisorConfig::default()
        }
    }

    /// The HTTP options: connection timers and limits, batching, queue and body limits, the API key.
    fn serve_config(&self) -> anyhow::Result<ServeConfig> {
        let connections = ConnectionLimits {
            header_timeout: seconds("--header-timeout-s", self.header_timeout_s, false)?,
            keep_alive_timeout: seconds("--keep-alive-timeout-s", self.keep_alive_timeout_s, false)?,
            max_connections: connection_limit(self.max_connections),
        };
        let request_timeout = seconds("--request-timeout-s", self.request_timeout_s, true)?;
        let traces = match self.otlp_endpoint.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
            None => None,
            Some(e) if e.starts_with("http://") || e.starts_with("https://") => {
                let mut t = TraceConfig::new(e);
                t.service_name = self.otlp_service_name.clone();
                tracing::info!("OpenTelemetry traces go to {}", t.traces_url());
                Some(t)
            }
            Some(e) => {
                return Err(UsageError(format!(
                    "--otlp-endpoint {e}: not an http:// or https:// URL (for example http://localhost:4318)"
                ))
                .into())
            }
        };
        if !self.max_audio_s.is_finite() || self.max_audio_s <= 0.0 {
            return Err(
                UsageError(format!("--max-audio-s must be more than 0 seconds, got {}", self.max_audio_s)).into()
            );
        }
        Ok(ServeConfig {
            traces,
            request_timeout: (!request_timeout.is_zero()).then_some(request_timeout),
            connections,
            max_batch_tokens: self.max_batch_tokens.max(1),
            max_batch_size: self.max_batch_size.max(1),
            grouping: Grouping {
                max_padding_share: self.max_padding_share.0,
                padding_allowance: self.padding_allowance,
            },
            max_batch_wait: Duration::from_millis(self.max_batch_wait_ms),
            max_concurrent_batches: self.max_concurrent_batches.max(1),
            long_row_tokens: self.long_row_tokens.0,
            max_queue: self.max_queue.max(1),
            max_inputs: self.max_inputs.max(1),
            max_body_bytes: self.max_body_bytes.max(1024),
            api_key: self.api_key.clone().filter(|k| !k.is_empty()),
            image_cache_bytes: self.image_cache_mb.saturating_mul(1 << 20),
            images: bulkhead_server::config::ImageLimits {
                max_pixels: self.max_image_pixels.max(1),
                allow_urls: self.allow_image_urls,
                ..Default::default()
            },
            max_audio_s: self.max_audio_s,
            ..ServeConfig::default()
        })
    }
}

/// Logs each model, what it is and the unit serving it.
fn announce_models(state: &AppState) {
    for m in state.models.loaded() {
        let serving = m.backend.units().serving.unwrap_or_else(|| "?".into());
        let what = match &m.kind {
            ModelKind::Embedding { dimensions, .. } => format!("{dimensions} dimensions"),
            ModelKind::ImageText { dimensions, .. } => format!("texts and images, {dimensions} dimensions"),
            ModelKind::CrossEncoder { task, .. } => format!("{}: {}", task.noun(), task.routes()),
            ModelKind::Segmentation(s) => format!("segmentation, {0}x{0} input: POST /v1/segment", s.side),
            ModelKind::Speech(_) => {
                let task = bulkhead_core::ModelTask::SpeechToText;
                format!("{}: {}", task.noun(), task.routes())
            }
            ModelKind::Tensor { inputs, outputs } => format!(
                "tensor model, {} inputs, {} outputs: POST /v2/models/{}/infer",
                inputs.len(),
                outputs.len(),
                m.name
            ),
        };
        tracing::info!("model {} ({what}) serving on {serving}", m.name);
    }
}

/// A duration option in seconds: finite, not negative, and above zero unless `zero_ok`.
fn seconds(flag: &str, s: f64, zero_ok: bool) -> anyhow::Result<Duration> {
    if !s.is_finite() || s < 0.0 || (s == 0.0 && !zero_ok) {
        let what = if zero_ok { "0 or more" } else { "more than 0" };
        return Err(UsageError(format!("{flag} must be {what} seconds, not {s}")).into());
    }
    Ok(Duration::from_secs_f64(s))
}

/// `--max-connections`, kept below the open-files limit (raised to its hard limit first): each connection is a
/// file, and so are the workers' pipes and the model files.
fn connection_limit(wanted: usize) -> usize {
    const RESERVED_FILES: u64 = 256;
    let Some(files) = bulkhead_server::raise_open_files_limit() else { return wanted.max(1) };
    let cap = files.saturating_sub(RESERVED_FILES).max(16) as usize;
    if wanted > cap {
        tracing::warn!(
            "--max-connections {wanted} exceeds what {files} open files allow; serving at most {cap} connections \
             (raise `ulimit -n` for more)"
        );
    }
    wanted.clamp(1, cap)
}

/// Ctrl-C or SIGTERM. The handlers are installed when this is called, before the address is printed, so a signal
/// sent as soon as the address appears stops the server gracefully instead of killing it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let streams = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
        async move {
            match streams {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {},
                        _ = term.recv() => {},
                    }
                }
                _ => drop(tokio::signal::ctrl_c().await),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        drop(tokio::signal::ctrl_c().await);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_and_threads_share_the_cores() {
        // (--workers, --worker-threads, cores) -> (workers, threads per worker)
        for (workers, threads, cores, want) in [
            ("1", None, 8, (1, None)),
            ("2", None, 8, (2, Some(4))),
            ("3", None, 2, (3, Some(1))),
            ("2", Some(3), 8, (2, Some(3))),
            ("auto", None, 8, (8, Some(1))),
            ("AUTO", Some(2), 8, (4, Some(2))),
            ("auto", Some(4), 2, (1, Some(4))),
        ] {
            let w = parse_workers(workers).unwrap();
            assert_eq!(plan_workers(w, threads, cores), want, "{workers} {threads:?} {cores}");
        }
        assert!(parse_workers("0").unwrap_err().contains("1 or more"));
        assert!(parse_workers("many").is_err());
    }

    #[test]
    fn the_padding_share_is_a_non_negative_number_or_off() {
        assert_eq!(parse_padding_share("0.15"), Ok(PaddingShare(Some(0.15))));
        assert_eq!(parse_padding_share("0"), Ok(PaddingShare(Some(0.0))));
        assert_eq!(parse_padding_share("OFF"), Ok(PaddingShare(None)));
        for bad in ["-0.1", "NaN", "inf", "lots"] {
            assert!(parse_padding_share(bad).unwrap_err().contains("padding tokens per real token"), "{bad}");
        }
    }

    #[test]
    fn the_long_row_limit_is_a_token_count_or_off() {
        assert_eq!(parse_long_rows("128"), Ok(LongRows(Some(128))));
        assert_eq!(parse_long_rows("off"), Ok(LongRows(None)));
        for bad in ["0", "-3", "long"] {
            assert!(parse_long_rows(bad).unwrap_err().contains("past which a request is long"), "{bad}");
        }
    }
}
