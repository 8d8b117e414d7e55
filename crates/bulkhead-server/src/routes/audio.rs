//! Speech to text, as OpenAI serves it: `POST /v1/audio/transcriptions` and `POST /v1/audio/translations`, a
//! multipart form with the audio `file` and the options.
//!
//! The server reads the form, checks every option against the model (its languages, whether it translates), then
//! decodes and resamples the file on the blocking pool (as tokenization runs: at most one per core, never on the
//! async runtime's threads), so a file that is not audio, damaged, empty, in a codec this build lacks or longer
//! than `--max-audio-s` is a 4xx before any worker sees it. The decoded PCM goes to the model's supervisor as one
//! request; the worker computes the features, runs the encoder and decodes. `Server-Timing` names `decode`,
//! `queue`, `infer` (the worker's whole time) and within it `features`, `encode` and `generate`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulkhead_audio::{AudioError, Limits};
use bulkhead_core::ModelTask;

use super::common::{inference_headers, labelled, submit_audio, tokenize_off_runtime};
use super::common::{AudioRequest, FallbackChecks, SpeechOptions, SpeechTask, Transcript};
use crate::api::audio::{
    srt, vtt, ResponseFormat, TranscriptionForm, TranscriptionResponse, VerboseSegment, VerboseTranscription,
};
use crate::error::{ApiError, ErrorKind};
use crate::state::AppState;

/// The errors the speech routes answer with.
pub const AUDIO_ERRORS: &[ErrorKind] = &[
    ErrorKind::BadFile,
    ErrorKind::Invalid,
    ErrorKind::TooLarge,
    ErrorKind::FileTooLarge,
    ErrorKind::WrongKind,
    ErrorKind::UnknownModel,
    ErrorKind::Overloaded,
    ErrorKind::Poison,
    ErrorKind::Unavailable,
    ErrorKind::Internal,
];

/// The body limit of the speech routes: `--max-body-bytes`, but at least OpenAI's 25 MiB upload limit.
pub fn body_limit(max_body_bytes: usize) -> usize {
    max_body_bytes.max(25 << 20)
}

/// Transcribes an audio file in its spoken language (OpenAI compatible).
#[utoipa::path(
    post,
    path = "/v1/audio/transcriptions",
    tag = "OpenAI",
    request_body(content = TranscriptionForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "The transcription: `{\"text\"}` for `json`, the text, SubRip or WebVTT \
        as text for `text`, `srt` and `vtt`, and `verbose_json` with the language, duration and segments",
        body = VerboseTranscription))
)]
pub async fn transcriptions(
    State(state): State<Arc<AppState>>,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    speech(state, form, SpeechTask::Transcribe).await
}

/// Translates the speech of an audio file into English text (OpenAI compatible).
#[utoipa::path(
    post,
    path = "/v1/audio/translations",
    tag = "OpenAI",
    request_body(content = TranscriptionForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "The English text, in the `response_format` asked for",
        body = VerboseTranscription))
)]
pub async fn translations(State(state): State<Arc<AppState>>, form: Result<Multipart, MultipartRejection>) -> Response {
    speech(state, form, SpeechTask::Translate).await
}

/// The form's fields, as sent.
#[derive(Default)]
struct Form {
    file: Option<(Bytes, String)>,
    model: Option<String>,
    language: Option<String>,
    prompt: Option<String>,
    response_format: Option<String>,
    temperature: Option<String>,
    seed: Option<String>,
    thresholds: Vec<(String, String)>,
    granularities: Vec<String>,
    keep_alive: Option<String>,
}

fn form_error(e: MultipartError, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge(limit)
    } else {
        ApiError::BadFile(format!("cannot read the multipart form: {}", e.body_text()))
    }
}

async fn read_form(form: Result<Multipart, MultipartRejection>, limit: usize) -> Result<Form, ApiError> {
    let mut multipart = form.map_err(|e| {
        ApiError::BadFile(format!("{}; send a multipart/form-data body with the audio as `file`", e.body_text()))
    })?;
    let mut form = Form::default();
    while let Some(field) = multipart.next_field().await.map_err(|e| form_error(e, limit))? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            let filename = field.file_name().unwrap_or("file").to_string();
            let bytes = field.bytes().await.map_err(|e| form_error(e, limit))?;
            form.file = Some((bytes, filename));
            continue;
        }
        let text = field.text().await.map_err(|e| form_error(e, limit))?;
        let text = Some(text).filter(|t| !t.trim().is_empty());
        match name.as_str() {
            "model" => form.model = text,
            "language" => form.language = text,
            "prompt" => form.prompt = text,
            "response_format" => form.response_format = text,
            "temperature" => form.temperature = text,
            "seed" => form.seed = text,
            "compression_ratio_threshold" | "logprob_threshold" | "no_speech_threshold" => {
                form.thresholds.extend(text.map(|t| (name.clone(), t)))
            }
            "keep_alive" => form.keep_alive = text,
            "timestamp_granularities[]" | "timestamp_granularities" => form.granularities.extend(text),
            "stream" if text.as_deref().is_some_and(|t| t.trim() != "false") => {
                return Err(ApiError::Invalid("stream: streamed transcriptions are not served; omit `stream`".into()))
            }
            _ => {}
        }
    }
    Ok(form)
}

/// The fallback checks of a form: openai-whisper's defaults, each replaced by a number or turned off by `none`.
fn checks(form: &Form) -> Result<FallbackChecks, ApiError> {
    let mut c = FallbackChecks::default();
    for (name, value) in &form.thresholds {
        let v = if value.trim().eq_ignore_ascii_case("none") {
            None
        } else {
            let v = value.trim().parse::<f64>().ok().filter(|v| v.is_finite());
            Some(v.ok_or_else(|| ApiError::Invalid(format!("{name} `{value}` is not a number or `none`")))?)
        };
        match name.as_str() {
            "compression_ratio_threshold" => c.compression_ratio_threshold = v,
            "logprob_threshold" => c.logprob_threshold = v,
            _ => c.no_speech_threshold = v,
        }
    }
    Ok(c)
}

/// The options of a form, checked: the format, the temperature and seed, the timestamp granularities.
fn options(form: &Form) -> Result<(ResponseFormat, f32, u64), ApiError> {
    let format = match form.response_format.as_deref() {
        None => ResponseFormat::Json,
        Some(name) => ResponseFormat::parse(name).ok_or_else(|| {
            ApiError::Invalid(format!("response_format `{name}` is unknown; use one of {}", ResponseFormat::NAMES))
        })?,
    };
    let temperature = match form.temperature.as_deref() {
        None => 0.0,
        Some(t) => t
            .trim()
            .parse::<f32>()
            .ok()
            .filter(|t| t.is_finite())
            .ok_or_else(|| ApiError::Invalid(format!("temperature `{t}` is not a number")))?,
    };
    if !(0.0..=1.0).contains(&temperature) {
        return Err(ApiError::Invalid(format!("temperature {temperature} is out of range; send a value from 0 to 1")));
    }
    let seed = match form.seed.as_deref() {
        None => bulkhead_speech::DEFAULT_SEED,
        Some(s) => s
            .trim()
            .parse::<u64>()
            .map_err(|_| ApiError::Invalid(format!("seed `{s}` is not a whole number from 0 to 2^64 - 1")))?,
    };
    for g in &form.granularities {
        match g.trim() {
            "segment" if format == ResponseFormat::VerboseJson => {}
            "segment" => {
                return Err(ApiError::Invalid("timestamp_granularities[] needs response_format `verbose_json`".into()))
            }
            "word" => {
                return Err(ApiError::Invalid(
                    "timestamp_granularities[] `word`: word timestamps are not served; ask for `segment`".into(),
                ))
            }
            other => {
                return Err(ApiError::Invalid(format!("timestamp_granularities[] `{other}` is unknown; use `segment`")))
            }
        }
    }
    Ok((format, temperature, seed))
}

/// A decoding error as the request's fault: too long or too large is 413, anything else 400; the file is named.
fn audio_error(file: &str, e: AudioError) -> ApiError {
    let message = format!("{file}: {e}");
    match e {
        AudioError::TooLong { .. } | AudioError::TooLarge { .. } => ApiError::FileTooLarge(message),
        _ => ApiError::BadFile(message),
    }
}

async fn speech(state: Arc<AppState>, form: Result<Multipart, MultipartRejection>, task: SpeechTask) -> Response {
    let limit = body_limit(state.config.max_body_bytes);
    let form = match read_form(form, limit).await {
        Ok(f) => f,
        Err(e) => return labelled(e, &state.default_model),
    };
    let name = form.model.clone().unwrap_or_else(|| state.default_model.clone());
    let result = async {
        let keep_alive = form.keep_alive.clone().map(crate::api::models::KeepAlive::Duration);
        let model = state.model_for_kept(form.model.as_deref(), keep_alive.as_ref(), ModelTask::is_speech).await?;
        let model = &model;
        let info = model.speech()?;
        let (format, temperature, seed) = options(&form)?;
        let checks = checks(&form)?;
        if let Some(language) = &form.language {
            info.check_language(language)?;
        }
        if task == SpeechTask::Translate {
            info.check_translate(&model.name)?;
        }
        let Some((bytes, file)) = form.file else {
            return Err(ApiError::BadFile(
                "the form has no `file` field: send the audio as the multipart field `file`".into(),
            ));
        };
        let limits = Limits { max_bytes: limit as u64, max_seconds: state.config.max_audio_s };
        let rate = info.sampling_rate;
        let t0 = Instant::now();
        let pcm = tokenize_off_runtime(&state, move || bulkhead_audio::load(bytes, &limits, rate))
            .await?
            .map_err(|e| audio_error(&file, e))?;
        let decode_ms = t0.elapsed().as_secs_f64() * 1e3;
        state.metrics.stage_ms(&model.name, "decode", decode_ms);
        let options = SpeechOptions {
            language: form.language,
            task,
            prompt: form.prompt,
            temperature,
            seed,
            checks,
            timestamps: format.timed().then_some(true),
        };
        let computed = submit_audio(model, &state, AudioRequest { samples: pcm.samples, rate, options }).await?;
        let mut provenance = computed.provenance;
        provenance.timing.tokenize_ms = decode_ms;
        let t = &computed.value.timing;
        let timing = format!(
            "decode;dur={decode_ms:.3}, queue;dur={:.3}, infer;dur={:.3}, features;dur={:.3}, encode;dur={:.3}, \
             generate;dur={:.3}",
            provenance.timing.queue_ms, provenance.timing.infer_ms, t.features_ms, t.encode_ms, t.generate_ms
        );
        let mut resp = inference_headers(render(format, task, computed.value), model, &provenance);
        if let Ok(v) = HeaderValue::from_str(&timing) {
            resp.headers_mut().insert("server-timing", v);
        }
        Ok::<_, ApiError>(resp)
    }
    .await;
    result.unwrap_or_else(|e| labelled(e, &name))
}

/// The body of `format`.
fn render(format: ResponseFormat, task: SpeechTask, t: Transcript) -> Response {
    let segments =
        || -> Vec<VerboseSegment> { t.segments.iter().enumerate().map(|(id, s)| VerboseSegment::of(id, s)).collect() };
    let text = |body: String, kind: &'static str| ([(header::CONTENT_TYPE, kind)], body).into_response();
    match format {
        ResponseFormat::Json => Json(TranscriptionResponse { text: t.text }).into_response(),
        ResponseFormat::Text => text(format!("{}\n", t.text), "text/plain; charset=utf-8"),
        ResponseFormat::Srt => text(srt(&segments()), "text/plain; charset=utf-8"),
        ResponseFormat::Vtt => text(vtt(&segments()), "text/vtt; charset=utf-8"),
        ResponseFormat::VerboseJson => {
            let language = t
                .language
                .as_deref()
                .map_or("english".to_string(), |c| bulkhead_speech::language_name(c).unwrap_or(c).to_string());
            let segments = segments();
            Json(VerboseTranscription {
                task: task.name().into(),
                language,
                duration: t.duration_s,
                text: t.text,
                segments,
            })
            .into_response()
        }
    }
}
