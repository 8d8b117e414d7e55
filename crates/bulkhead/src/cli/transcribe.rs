//! `bulkhead transcribe`: speech to text for audio files, through the same supervised path as `bulkhead serve`:
//! the files are decoded and resampled here (a bad file is a usage error, exit 2, before the model loads), a
//! supervisor walks the chain (a unit that cannot run speech models answers so and the next is tried), and each
//! file is one request to its worker process, retried on a fresh worker if one crashes.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bulkhead_audio::{Limits, DEFAULT_MAX_SECONDS};
use bulkhead_server::api::audio::{srt, vtt, ResponseFormat, VerboseSegment};
use bulkhead_server::SpeechInfo;
use bulkhead_supervisor::{
    faults, AudioRequest, FallbackChecks, Isolation, SpeechOptions, SpeechTask, Supervisor, SupervisorConfig,
    Transcript,
};
use serde_json::json;

use super::common::{engines, ModelArgs, UsageError};

/// `--format`: what is printed per file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[clap(rename_all = "snake_case")]
pub enum Format {
    /// One JSON object per file and line: `{"text", "file", "language", "duration", "unit", "timing_ms"}`.
    Json,
    /// The text of each file, one per line.
    Text,
    /// SubRip subtitles.
    Srt,
    /// WebVTT subtitles.
    Vtt,
    /// One JSON object per file and line with the segments and their times.
    VerboseJson,
}

impl Format {
    fn response(self) -> ResponseFormat {
        match self {
            Format::Json => ResponseFormat::Json,
            Format::Text => ResponseFormat::Text,
            Format::Srt => ResponseFormat::Srt,
            Format::Vtt => ResponseFormat::Vtt,
            Format::VerboseJson => ResponseFormat::VerboseJson,
        }
    }
}

/// Arguments of `bulkhead transcribe`.
#[derive(Debug, clap::Args)]
pub struct TranscribeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The spoken language: a code (`de`) or an English name (`german`); detected by a multilingual model when
    /// absent.
    #[arg(long)]
    language: Option<String>,
    /// Translate into English instead of transcribing.
    #[arg(long)]
    translate: bool,
    /// Text to condition the decoding on (earlier speech, spellings of names).
    #[arg(long)]
    prompt: Option<String>,
    /// Whisper's first temperature: 0 decodes greedily, then falls back along 0.2, 0.4, ... 1.0 for a window that
    /// fails the thresholds below; a value above 0 starts the schedule there.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    temperature: f32,
    /// Where the random draws at temperatures above 0 start (the same file and number give the same text).
    #[arg(long, default_value_t = bulkhead_speech::DEFAULT_SEED)]
    seed: u64,
    /// A window whose zlib compression ratio is above this is decoded at the next temperature (`none`: no check).
    #[arg(long, value_name = "RATIO|none", default_value = "2.4", value_parser = threshold)]
    compression_ratio_threshold: Threshold,
    /// A window whose average log-probability is below this is decoded at the next temperature (`none`: no check).
    #[arg(long, value_name = "LOGPROB|none", default_value = "-1.0", value_parser = threshold)]
    #[arg(allow_hyphen_values = true)]
    logprob_threshold: Threshold,
    /// A window with a no-speech probability above this and a low log-probability is skipped (`none`: never).
    #[arg(long, value_name = "PROB|none", default_value = "0.6", value_parser = threshold)]
    no_speech_threshold: Threshold,
    /// What to print per file.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// The longest audio taken, in seconds.
    #[arg(long, env = "BULKHEAD_MAX_AUDIO_S", default_value_t = DEFAULT_MAX_SECONDS)]
    max_audio_s: f64,
    /// Audio files: WAV, FLAC, MP3, Ogg Vorbis, M4A/AAC (any rate and channels).
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
}

impl TranscribeArgs {
    /// Runs the subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(UsageError(format!("--temperature {}: give a number >= 0", self.temperature)).into());
        }
        if self.files.is_empty() {
            return Err(UsageError("no audio file; give FILE arguments".into()).into());
        }
        if !self.max_audio_s.is_finite() || self.max_audio_s <= 0.0 {
            return Err(UsageError(format!("--max-audio-s must be more than 0, got {}", self.max_audio_s)).into());
        }
        let rules = faults::from_env().map_err(|e| UsageError(e.to_string()))?;
        let model = self.model.open()?;
        if !model.task.is_speech() {
            return Err(UsageError(format!(
                "{} is {}, not a speech-to-text model; give --model a Whisper folder",
                model.name,
                model.task.noun()
            ))
            .into());
        }
        let info = SpeechInfo::read(&model.source).map_err(|e| anyhow::anyhow!("{}: {e}", model.name))?;
        if let Some(language) = &self.language {
            info.check_language(language).map_err(|e| UsageError(format!("--language: {e}")))?;
        }
        if self.translate {
            info.check_translate(&model.name).map_err(|e| UsageError(format!("--translate: {e}")))?;
        }
        // Every file is decoded before the model loads: a bad one stops the command before any work.
        let limits = Limits { max_seconds: self.max_audio_s, ..Limits::default() };
        let mut audio = vec![];
        for path in &self.files {
            let t = Instant::now();
            let bytes = std::fs::read(path).map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
            let pcm = bulkhead_audio::load(bytes, &limits, info.sampling_rate)
                .map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
            audio.push((path.clone(), pcm.samples, t.elapsed().as_secs_f64() * 1e3));
        }
        let config = SupervisorConfig {
            isolation: Isolation::Process,
            faults: rules,
            state_dir: Some(bulkhead_core::install::state_dir()),
            ..SupervisorConfig::default()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let chain = self.model.chain().clone();
        runtime.block_on(async move {
            let sup = Supervisor::start(model, &chain, Arc::new(engines()), config);
            let result = self.transcribe_all(&sup, &info, audio).await;
            sup.shutdown().await;
            result
        })
    }

    async fn transcribe_all(
        &self,
        sup: &Supervisor,
        info: &SpeechInfo,
        audio: Vec<(PathBuf, Vec<f32>, f64)>,
    ) -> anyhow::Result<()> {
        let t_load = Instant::now();
        let unit = sup.wait_ready().await?;
        tracing::info!("serving on {unit} (load and warm-up {:.0} ms)", t_load.elapsed().as_secs_f64() * 1e3);
        let format = self.format.response();
        let stdout = std::io::stdout();
        for (path, samples, decode_ms) in audio {
            let options = SpeechOptions {
                language: self.language.clone(),
                task: if self.translate { SpeechTask::Translate } else { SpeechTask::Transcribe },
                prompt: self.prompt.clone(),
                temperature: self.temperature,
                seed: self.seed,
                checks: FallbackChecks {
                    compression_ratio_threshold: self.compression_ratio_threshold.0,
                    logprob_threshold: self.logprob_threshold.0,
                    no_speech_threshold: self.no_speech_threshold.0,
                },
                timestamps: format.timed().then_some(true),
            };
            let request = AudioRequest { samples, rate: info.sampling_rate, options };
            let answered = sup.transcribe(request).await.with_context(|| format!("{}", path.display()))?;
            let Some(t) = answered.answer.into_transcript() else {
                anyhow::bail!("{}: the model answered no transcription", path.display());
            };
            let timing = json!({
                "decode": decode_ms,
                "queue": answered.timing.queue_ms,
                "infer": answered.timing.infer_ms,
                "features": t.timing.features_ms,
                "encode": t.timing.encode_ms,
                "generate": t.timing.generate_ms,
            });
            let mut out = stdout.lock();
            match self.format {
                Format::Json => {
                    let obj = json!({
                        "text": t.text,
                        "file": path.display().to_string(),
                        "language": t.language,
                        "duration": t.duration_s,
                        "unit": answered.unit.to_string(),
                        "timing_ms": timing,
                    });
                    writeln!(out, "{obj}")?;
                }
                Format::Text => writeln!(out, "{}", t.text.trim())?,
                Format::Srt => write!(out, "{}", srt(&segments(&t)))?,
                Format::Vtt => write!(out, "{}", vtt(&segments(&t)))?,
                Format::VerboseJson => {
                    let language = t
                        .language
                        .as_deref()
                        .map(|c| bulkhead_speech::language_name(c).unwrap_or(c))
                        .unwrap_or("english");
                    let obj = json!({
                        "task": if self.translate { "translate" } else { "transcribe" },
                        "language": language,
                        "duration": t.duration_s,
                        "text": t.text,
                        "segments": segments(&t),
                        "file": path.display().to_string(),
                        "unit": answered.unit.to_string(),
                        "timing_ms": timing,
                    });
                    writeln!(out, "{obj}")?;
                }
            }
            out.flush()?;
        }
        Ok(())
    }
}

fn segments(t: &Transcript) -> Vec<VerboseSegment> {
    t.segments.iter().enumerate().map(|(id, s)| VerboseSegment::of(id, s)).collect()
}

/// A fallback threshold: a number, or `None` for `none`.
#[derive(Debug, Clone, Copy)]
struct Threshold(Option<f64>);

fn threshold(s: &str) -> Result<Threshold, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(Threshold(None));
    }
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Threshold(Some(v))),
        _ => Err(format!("`{s}` is not a number or `none`")),
    }
}
