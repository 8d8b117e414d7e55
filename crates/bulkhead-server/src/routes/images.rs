//! Image embeddings of image-text models (CLIP, SigLIP): `POST /embeddings_image` (infinity's shape) and the image
//! parts of `POST /v1/embeddings`, mixed with texts in one request (each item goes to its own tower).
//!
//! An image is fetched (`data:` URLs always; `http(s)://` only with `--allow-image-urls`, under a time and size
//! limit), then decoded and preprocessed on the blocking pool (`bulkhead-image`: the pixel count the header declares
//! is refused past `--max-image-pixels` before any decoder runs), so a bad image is a 4xx before any worker sees it.
//! The pixel values go to the model's batcher as [`Row::Pixels`]: concurrent image requests batch together as
//! token rows do, counted by their encoder positions. `Server-Timing` adds `decode` and `preprocess`.

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::Response;
use axum::Json;
use base64::Engine as _;
use bulkhead_core::{ModelTask, Row};
use bulkhead_embed::truncate_dims;
use bulkhead_image::{Limits, Preprocessor};

use super::common::{inference_headers, labelled, submit_rows, tokenize_off_runtime, JsonBody, Provenance};
use super::embed::{embed, EmbedJob, Inputs, Normalize};
use crate::api::images::{ContentPart, ImageEmbeddingsRequest, ImageUrl};
use crate::api::openai::{EncodingFormat, QuantizationRanges};
use crate::api::tei::TeiItem;
use crate::config::ImageLimits;
use crate::error::{ApiError, ErrorKind};
use crate::state::{AppState, ModelEntry, ModelKind};

/// The errors `/embeddings_image` answers with.
pub const IMAGE_ERRORS: &[ErrorKind] = &[
    ErrorKind::MalformedJson,
    ErrorKind::WrongKind,
    ErrorKind::UnknownModel,
    ErrorKind::TooLarge,
    ErrorKind::Invalid,
    ErrorKind::Poison,
    ErrorKind::Overloaded,
    ErrorKind::Internal,
    ErrorKind::Unavailable,
];

/// Milliseconds of the image stages of one request (summed over its images).
#[derive(Debug, Clone, Copy, Default)]
pub struct ImageTiming {
    /// Bytes to RGB pixels (URL fetches included).
    pub decode_ms: f64,
    /// Resize, crop, rescale and normalise.
    pub preprocess_ms: f64,
}

/// Embedded images with what the response needs.
pub struct EmbeddedImages {
    /// One vector per image.
    pub vectors: Vec<Vec<f32>>,
    /// Who computed them, the queue / infer / post timing.
    pub provenance: Provenance,
    /// The image stages.
    pub timing: ImageTiming,
    /// Encoder positions run (what `usage` counts for images).
    pub positions: usize,
}

/// The image side of `model`: its processor and the positions of one image; a clear 400 for a model without one.
fn image_side(model: &ModelEntry) -> Result<(Arc<Preprocessor>, usize), ApiError> {
    match &model.kind {
        ModelKind::ImageText { preprocessor, image_positions, .. } => Ok((preprocessor.clone(), *image_positions)),
        _ => {
            let task = model.task().unwrap_or(&ModelTask::Embedding);
            Err(ApiError::WrongKind(format!(
                "model `{}` is {}, which takes {} only; image inputs need an image-text model (CLIP, SigLIP): GET \
                 /v1/models lists each model's `inputs`",
                model.name,
                task.noun(),
                if matches!(model.kind, ModelKind::Tensor { .. }) { "named tensors" } else { "texts" },
            )))
        }
    }
}

/// Where an image's bytes come from.
enum Source {
    /// The bytes of a `data:` URL.
    Inline(Vec<u8>),
    /// An `http(s)://` URL to fetch.
    Fetch(String),
}

/// Reads one image URL: a `data:` URL's bytes, an `http(s)://` URL to fetch (only when allowed), or a refusal.
fn parse_url(i: usize, url: &str, allow_fetch: bool) -> Result<Source, ApiError> {
    let bad = |what: String| ApiError::Invalid(format!("input {i}: {what}"));
    let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("data") => {
            let rest = &url[5..];
            let (meta, data) = rest
                .split_once(',')
                .ok_or_else(|| bad("the data URL has no `,` before its data; send data:image/png;base64,...".into()))?;
            let mut parts = meta.split(';');
            let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            if !parts.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
                return Err(bad(
                    "the data URL is not base64 (`;base64,` is missing); send data:image/png;base64,...".into()
                ));
            }
            if !(media.is_empty() || media.starts_with("image/") || media == "application/octet-stream") {
                return Err(bad(format!(
                    "the data URL's media type is `{media}`, not an image (image/png, image/jpeg, image/webp)"
                )));
            }
            let text: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let engines = [
                &base64::engine::general_purpose::STANDARD,
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                &base64::engine::general_purpose::URL_SAFE,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ];
            engines
                .iter()
                .find_map(|e| e.decode(&text).ok())
                .map(Source::Inline)
                .ok_or_else(|| bad("the data URL's data is not valid base64".into()))
        }
        Some("http" | "https") if allow_fetch => Ok(Source::Fetch(url.to_string())),
        Some("http" | "https") => Err(bad(
            "image URLs are not fetched by this server (start it with --allow-image-urls to allow it); send the \
             image inline as a data URL (data:image/png;base64,...)"
                .into(),
        )),
        _ => {
            let shown: String = url.chars().take(40).collect();
            Err(bad(format!(
                "`{shown}{}` is not an image URL; send a data URL (data:image/png;base64,...){}",
                if url.chars().count() > 40 { "..." } else { "" },
                if allow_fetch { " or an http(s) URL" } else { "" }
            )))
        }
    }
}

/// Fetches an image URL under the time and size limits (blocking: runs on the blocking pool).
fn fetch(i: usize, url: &str, limits: &ImageLimits) -> Result<Vec<u8>, ApiError> {
    let bad = |what: String| ApiError::Invalid(format!("input {i}: fetching {url}: {what}"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(3)
        .timeout_global(Some(limits.fetch_timeout))
        .user_agent(format!("bulkhead/{}", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let resp = agent.get(url).call().map_err(|e| bad(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(bad(format!("the server answered {}", resp.status())));
    }
    let mut bytes = vec![];
    let max = limits.max_bytes;
    resp.into_body()
        .into_reader()
        .take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("reading the body: {e}")))?;
    if bytes.len() > max {
        return Err(bad(format!("the image is over the limit of {max} bytes")));
    }
    Ok(bytes)
}

/// Fetches, decodes and preprocesses `urls` into image rows (on the blocking pool).
async fn prepare(
    state: &AppState,
    urls: Vec<String>,
    preprocessor: Arc<Preprocessor>,
    positions: usize,
) -> Result<(Vec<Row>, ImageTiming), ApiError> {
    let limits = state.config.images.clone();
    let sources =
        urls.iter().enumerate().map(|(i, u)| parse_url(i, u, limits.allow_urls)).collect::<Result<Vec<_>, _>>()?;
    tokenize_off_runtime(state, move || {
        let mut timing = ImageTiming::default();
        let decode_limits = Limits { max_bytes: limits.max_bytes, max_pixels: limits.max_pixels };
        let mut rows = Vec::with_capacity(sources.len());
        for (i, source) in sources.into_iter().enumerate() {
            let t0 = Instant::now();
            let bytes = match source {
                Source::Inline(b) => b,
                Source::Fetch(url) => fetch(i, &url, &limits)?,
            };
            let decoded = bulkhead_image::decode(&bytes, decode_limits)
                .map_err(|e| ApiError::Invalid(format!("input {i}: {e}")))?;
            let t1 = Instant::now();
            timing.decode_ms += (t1 - t0).as_secs_f64() * 1e3;
            let pixels =
                preprocessor.preprocess(&decoded.image).map_err(|e| ApiError::Invalid(format!("input {i}: {e}")))?;
            timing.preprocess_ms += t1.elapsed().as_secs_f64() * 1e3;
            rows.push(Row::Pixels { values: pixels.data, positions });
        }
        Ok((rows, timing))
    })
    .await?
}

/// Embeds images of `model`: fetch, decode and preprocess here, then the model's batcher; `dimensions` and
/// normalisation as for texts.
pub async fn embed_images(
    model: &ModelEntry,
    state: &AppState,
    urls: Vec<String>,
    dimensions: Option<usize>,
    normalize: Normalize,
) -> Result<EmbeddedImages, ApiError> {
    let (preprocessor, positions) = image_side(model)?;
    let (_, native) = model.embedding()?;
    if let Some(d) = dimensions {
        model.files.matryoshka.check(d, native).map_err(ApiError::Invalid)?;
    }
    let n = urls.len();
    if n == 0 {
        return Err(ApiError::Invalid("the input is empty; send at least one image".into()));
    }
    if n > state.config.max_inputs {
        return Err(ApiError::Invalid(format!(
            "{n} inputs in one request; the limit is {} (--max-inputs)",
            state.config.max_inputs
        )));
    }
    let (rows, timing) = prepare(state, urls, preprocessor, positions).await?;
    state.metrics.stage_ms(&model.name, "decode", timing.decode_ms);
    state.metrics.stage_ms(&model.name, "preprocess", timing.preprocess_ms);
    let computed = submit_rows(model, state, rows, Vec::new).await?;
    let t1 = Instant::now();
    let mut vectors = computed.value;
    let normalize = match normalize {
        Normalize::Always => true,
        Normalize::Never => false,
        Normalize::AsModel => dimensions.is_some_and(|d| d < native) && model.files.normalize,
    };
    let dims = dimensions.unwrap_or(native);
    if normalize || dims < native {
        vectors.iter_mut().for_each(|v| truncate_dims(v, dims, normalize));
    }
    let mut provenance = computed.provenance;
    provenance.timing.post_ms += t1.elapsed().as_secs_f64() * 1e3;
    Ok(EmbeddedImages { vectors, provenance, timing, positions: positions * n })
}

/// `Server-Timing` with the image stages, on top of [`inference_headers`].
pub fn image_headers(
    body: Json<impl serde::Serialize>,
    entry: &ModelEntry,
    p: &Provenance,
    images: ImageTiming,
) -> Response {
    let mut resp = inference_headers(body, entry, p);
    let t = &p.timing;
    let tokenize = if t.tokenize_ms > 0.0 { format!("tokenize;dur={:.3}, ", t.tokenize_ms) } else { String::new() };
    let timing = format!(
        "decode;dur={:.3}, preprocess;dur={:.3}, {tokenize}queue;dur={:.3}, infer;dur={:.3}, post;dur={:.3}",
        images.decode_ms, images.preprocess_ms, t.queue_ms, t.infer_ms, t.post_ms
    );
    if let Ok(v) = HeaderValue::from_str(&timing) {
        resp.headers_mut().insert("server-timing", v);
    }
    resp
}

/// Texts and images of one request, embedded.
pub struct EmbeddedItems {
    /// One vector per item, in input order.
    pub vectors: Vec<Vec<f32>>,
    /// Text tokens and image encoder positions run.
    pub tokens: usize,
    /// Who computed them; the text and image halves ran at once, so each stage is the longer of the two.
    pub provenance: Provenance,
    /// The image stages.
    pub timing: ImageTiming,
}

/// A mixed input (`/v1/embeddings`, `/embed`): texts through the text tower, images through the vision tower, at
/// once; the vectors in input order. `text_job` says how texts are prompted, truncated and normalised.
pub async fn embed_items(
    model: &ModelEntry,
    state: &AppState,
    items: Vec<ContentPart>,
    text_job: EmbedJob,
) -> Result<EmbeddedItems, ApiError> {
    let (mut texts, mut urls, mut order) = (vec![], vec![], vec![]);
    for item in items {
        match item {
            ContentPart::Text { text: t } => {
                order.push(false);
                texts.push(t);
            }
            ContentPart::ImageUrl { image_url } => {
                order.push(true);
                urls.push(image_url.url().to_string());
            }
        }
    }
    if order.len() > state.config.max_inputs {
        return Err(ApiError::Invalid(format!(
            "{} inputs in one request; the limit is {} (--max-inputs)",
            order.len(),
            state.config.max_inputs
        )));
    }
    if urls.is_empty() {
        // Only texts (content parts of type `text`): the text path alone, on any embedding model.
        let e = embed(model, state, EmbedJob { inputs: Inputs::Texts(texts), ..text_job }).await?;
        let timing = ImageTiming::default();
        return Ok(EmbeddedItems { vectors: e.vectors, tokens: e.tokens, provenance: e.provenance, timing });
    }
    image_side(model)?;
    let (dimensions, normalize) = (text_job.dimensions, text_job.normalize);
    let has_texts = !texts.is_empty();
    let text_job = EmbedJob { inputs: Inputs::Texts(texts), ..text_job };
    let images = embed_images(model, state, urls, dimensions, normalize);
    let (texts, images) = if has_texts {
        let (t, i) = tokio::join!(embed(model, state, text_job), images);
        (Some(t?), i?)
    } else {
        (None, images.await?)
    };
    let mut provenance = images.provenance;
    let mut tokens = images.positions;
    let mut text_vectors = vec![].into_iter();
    if let Some(t) = texts {
        let (a, b) = (&mut provenance.timing, &t.provenance.timing);
        a.tokenize_ms = b.tokenize_ms;
        a.queue_ms = a.queue_ms.max(b.queue_ms);
        a.infer_ms = a.infer_ms.max(b.infer_ms);
        a.post_ms = a.post_ms.max(b.post_ms);
        tokens += t.tokens;
        text_vectors = t.vectors.into_iter();
    }
    let mut image_vectors = images.vectors.into_iter();
    let vectors: Vec<Vec<f32>> = order
        .iter()
        .map(|&is_image| if is_image { image_vectors.next() } else { text_vectors.next() })
        .collect::<Option<_>>()
        .ok_or_else(|| ApiError::Internal("the model answered fewer vectors than inputs".into()))?;
    Ok(EmbeddedItems { vectors, tokens, provenance, timing: images.timing })
}

/// [`embed_items`] answered in OpenAI's shape (`/v1/embeddings`).
pub async fn openai_items(
    model: &ModelEntry,
    state: &AppState,
    items: Vec<ContentPart>,
    text_job: EmbedJob,
    encoding: EncodingFormat,
    ranges: Option<QuantizationRanges>,
) -> Result<Response, ApiError> {
    let e = embed_items(model, state, items, text_job).await?;
    let body = super::encodings::response(model.name.clone(), e.vectors, e.tokens, encoding, ranges)?;
    Ok(image_headers(Json(body), model, &e.provenance, e.timing))
}

/// Embeds images (infinity-compatible `/embeddings_image`): an OpenAI-shaped list of embeddings.
#[utoipa::path(
    post,
    path = "/embeddings_image",
    tag = "infinity",
    request_body = ImageEmbeddingsRequest,
    responses((status = 200, description = "One embedding per image", body = crate::api::openai::EmbeddingsResponse))
)]
pub async fn embeddings_image(
    State(state): State<Arc<AppState>>,
    JsonBody(req): JsonBody<ImageEmbeddingsRequest>,
) -> Response {
    let name = req.model.as_ref().map_or_else(|| state.default_model.clone(), |m| m.0.clone());
    match run(&state, req).await {
        Ok(resp) => resp,
        Err(e) => labelled(e, &name),
    }
}

async fn run(state: &AppState, req: ImageEmbeddingsRequest) -> Result<Response, ApiError> {
    let name = req.model.as_ref().map(|m| m.0.as_str());
    let model = state.model_for_kept(name, req.keep_alive.as_ref(), ModelTask::takes_images).await?;
    let model = &model;
    let encoding = req.encoding_format.unwrap_or_default();
    let images = req.input.into_vec();
    super::encodings::check_calibration(encoding, false, images.len())?;
    let e = embed_images(model, state, images, None, Normalize::AsModel).await?;
    let body = super::encodings::response(model.name.clone(), e.vectors, e.positions, encoding, None)?;
    Ok(image_headers(Json(body), model, &e.provenance, e.timing))
}

/// `/embed`'s items as the mixed input of [`embed_items`].
pub fn tei_items(items: Vec<TeiItem>) -> Vec<ContentPart> {
    items
        .into_iter()
        .map(|item| match item {
            TeiItem::Text(t) => ContentPart::Text { text: t.text },
            TeiItem::Image(i) => ContentPart::ImageUrl { image_url: ImageUrl::Url(i.image) },
        })
        .collect()
}

/// The inputs a model takes, for `/v1/models`: `text`, `image`, or `tensor`.
pub fn model_inputs(model: &ModelEntry) -> Vec<String> {
    let names: &[&str] = match &model.kind {
        ModelKind::ImageText { .. } => &["text", "image"],
        ModelKind::Tensor { .. } => &["tensor"],
        _ => &["text"],
    };
    names.iter().map(|s| s.to_string()).collect()
}
