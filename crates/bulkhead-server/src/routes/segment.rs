//! `POST /v1/segment`: promptable segmentation (SAM2), JSON or multipart.
//!
//! The image is decoded (its pixel count refused from the header past `--max-image-pixels`), oriented and resized
//! to the model input here, on the blocking pool, so a bad image is a 4xx before any worker sees it; the prepared
//! image is kept by its content id (`image_id`, [`Segmenter`](crate::segmenter::Segmenter)). The worker keeps the
//! image embeddings by the same id, so a later prompt on the image runs the mask decoder alone. A job goes out
//! without the image when the image was seen before; a worker that no longer holds its embedding (restarted,
//! recycled, evicted) answers "send the image" and gets it on a second try.
//!
//! `Server-Timing`: `decode` and `preprocess` (0 when the image came from the cache), `queue`, `encode` (0 when the
//! embedding was reused), `decode_masks`, `infer` (the worker's whole prediction), `post` (upscaling and encoding the
//! masks), and `tokenize` (decode + preprocess: the server-side preparation every route reports).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Json;
use base64::Engine as _;
use bulkhead_core::ModelTask;
use bulkhead_image::{decode, ImageError, Limits, Size};
use bulkhead_segment::prompt::final_masks;
use bulkhead_segment::{image_id, InputImage, MappedPrompt, Masks, SegmentJob, SegmentOutput};

use super::common::{inference_headers, labelled, submit_segment, tokenize_off_runtime, JsonBody};
use crate::api::models::KeepAlive;
use crate::api::segment::{MaskFormat, Rle, SegmentMask, SegmentRequest, SegmentResponse};
use crate::error::{ApiError, ErrorKind};
use crate::segmenter::PreparedImage;
use crate::state::{AppState, ModelEntry};

/// The errors `/v1/segment` answers with.
pub const SEGMENT_ERRORS: &[ErrorKind] = &[
    ErrorKind::MalformedJson,
    ErrorKind::Invalid,
    ErrorKind::TooLarge,
    ErrorKind::WrongKind,
    ErrorKind::UnknownModel,
    ErrorKind::Poison,
    ErrorKind::Unavailable,
    ErrorKind::Internal,
];

/// A request, from JSON or multipart, with the image's bytes decoded from base64.
#[derive(Default)]
struct Parsed {
    model: Option<String>,
    image: Option<Vec<u8>>,
    image_id: Option<String>,
    points: Vec<[f32; 2]>,
    labels: Option<Vec<i64>>,
    boxes: Vec<[f32; 4]>,
    multimask: Option<bool>,
    format: Option<MaskFormat>,
    keep_alive: Option<KeepAlive>,
    /// The mask prompt, decoded (its size is checked against the model's).
    mask_input: Option<Vec<f32>>,
    return_logits: bool,
}

/// A mask prompt from its base64 (little-endian f32).
fn mask_base64(text: &str) -> Result<Vec<f32>, ApiError> {
    let data: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD.decode(data.as_bytes()).map_err(|e| {
        ApiError::Invalid(format!("`mask_input` is not base64: {e}; send an entry of an earlier `low_res_logits`"))
    })?;
    if bytes.is_empty() || bytes.len() % 4 != 0 {
        return Err(ApiError::Invalid(format!(
            "`mask_input` holds {} bytes, not a whole number of float32 values; send an entry of an earlier \
             `low_res_logits`",
            bytes.len()
        )));
    }
    let values: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    if values.iter().any(|v| !v.is_finite()) {
        return Err(ApiError::Invalid("`mask_input` holds a value that is not a finite number".into()));
    }
    Ok(values)
}

/// Logits as base64 of little-endian f32.
fn logits_base64(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn image_base64(text: &str) -> Result<Vec<u8>, ApiError> {
    let data = match text.strip_prefix("data:") {
        Some(rest) => match rest.split_once(',') {
            Some((meta, data)) if meta.ends_with(";base64") => data,
            _ => return Err(ApiError::Invalid("`image`: a data URL must be `data:image/...;base64,<data>`".into())),
        },
        None => text,
    };
    let data: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(data.as_bytes())
        .map_err(|e| ApiError::Invalid(format!("`image` is neither base64 nor a base64 data URL: {e}")))
}

/// Each of `items` as exactly `N` numbers (a point `[x, y]`, a box `[x0, y0, x1, y1]`).
fn fixed<const N: usize>(items: Vec<Vec<f32>>, what: &str, shape: &str) -> Result<Vec<[f32; N]>, ApiError> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let n = v.len();
            <[f32; N]>::try_from(v)
                .map_err(|_| ApiError::Invalid(format!("{what} {i} has {n} numbers; each {what} is {shape}")))
        })
        .collect()
}

impl Parsed {
    fn from_json(r: SegmentRequest) -> Result<Parsed, ApiError> {
        Ok(Parsed {
            model: r.model,
            image: r.image.as_deref().map(image_base64).transpose()?,
            image_id: r.image_id,
            points: fixed(r.points.unwrap_or_default(), "point", "[x, y]")?,
            labels: r.point_labels,
            boxes: fixed(r.boxes.unwrap_or_default(), "box", "[x0, y0, x1, y1]")?,
            multimask: r.multimask_output,
            format: r.mask_format,
            keep_alive: r.keep_alive,
            mask_input: r.mask_input.as_deref().map(mask_base64).transpose()?,
            return_logits: r.return_low_res_logits.unwrap_or(false),
        })
    }

    async fn from_multipart(req: Request, state: &Arc<AppState>) -> Result<Parsed, ApiError> {
        let bad = |e: axum::extract::multipart::MultipartError| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(state.config.max_body_bytes)
            } else {
                ApiError::Invalid(format!("malformed multipart body: {}", e.body_text()))
            }
        };
        let mut form = Multipart::from_request(req, state)
            .await
            .map_err(|e| ApiError::Invalid(format!("malformed multipart body: {}", e.body_text())))?;
        let mut p = Parsed::default();
        while let Some(field) = form.next_field().await.map_err(bad)? {
            let name = field.name().unwrap_or_default().to_string();
            if name == "file" {
                p.image = Some(field.bytes().await.map_err(bad)?.to_vec());
                continue;
            }
            let text = field.text().await.map_err(bad)?;
            let json = |what: &str| -> Result<serde_json::Value, ApiError> {
                serde_json::from_str(&text).map_err(|e| ApiError::Invalid(format!("`{what}` is not JSON: {e}")))
            };
            let typed = |what: &str, v: serde_json::Value| {
                ApiError::Invalid(format!("`{what}`: {v} is not of the expected shape"))
            };
            match name.as_str() {
                "model" => p.model = Some(text),
                "keep_alive" => p.keep_alive = Some(KeepAlive::Duration(text)),
                "mask_input" => p.mask_input = Some(mask_base64(&text)?),
                "return_low_res_logits" => {
                    p.return_logits = text.trim().parse().map_err(|_| {
                        ApiError::Invalid(format!("`return_low_res_logits` is `{text}`, not true or false"))
                    })?
                }
                "image" => p.image = Some(image_base64(&text)?),
                "image_id" => p.image_id = Some(text),
                "points" => {
                    let v = json("points")?;
                    let items = serde_json::from_value(v.clone()).map_err(|_| typed("points", v))?;
                    p.points = fixed(items, "point", "[x, y]")?;
                }
                "point_labels" => {
                    let v = json("point_labels")?;
                    p.labels = Some(serde_json::from_value(v.clone()).map_err(|_| typed("point_labels", v))?);
                }
                "boxes" => {
                    let v = json("boxes")?;
                    let items = serde_json::from_value(v.clone()).map_err(|_| typed("boxes", v))?;
                    p.boxes = fixed(items, "box", "[x0, y0, x1, y1]")?;
                }
                "multimask_output" => {
                    p.multimask =
                        Some(text.trim().parse().map_err(|_| {
                            ApiError::Invalid(format!("`multimask_output` is `{text}`, not true or false"))
                        })?)
                }
                "mask_format" => {
                    let v = serde_json::Value::String(text.trim().to_string());
                    p.format = Some(
                        serde_json::from_value(v)
                            .map_err(|_| ApiError::Invalid(format!("`mask_format` is `{text}`, not `rle` or `png`")))?,
                    )
                }
                other => {
                    return Err(ApiError::Invalid(format!(
                        "unknown multipart field `{other}`; expected file, model, image, image_id, points, \
                         point_labels, boxes, multimask_output, mask_format, mask_input, return_low_res_logits, \
                         keep_alive"
                    )))
                }
            }
        }
        Ok(p)
    }
}

/// An image error as the client's fault: 413 for too many pixels or bytes, 422 otherwise.
fn image_error(e: ImageError) -> ApiError {
    match e {
        ImageError::TooManyPixels { .. } | ImageError::TooManyBytes { .. } => {
            ApiError::InputTooLarge(format!("`image`: {e}"))
        }
        other => ApiError::Invalid(format!("`image`: {other}")),
    }
}

/// The image of a request, prepared: from the cache when its bytes (or its id) were seen before.
struct Resolved {
    id: String,
    image: Arc<PreparedImage>,
    /// Whether it was decoded for this request (a worker cannot hold its embedding yet).
    fresh: bool,
    decode_ms: f64,
    preprocess_ms: f64,
}

async fn resolve(model: &Arc<ModelEntry>, state: &AppState, p: &mut Parsed) -> Result<Resolved, ApiError> {
    let seg = model.segmenter()?;
    match (p.image.take(), p.image_id.take()) {
        (Some(_), Some(_)) => Err(ApiError::Invalid("give either `image` or `image_id`, not both".into())),
        (None, None) => Err(ApiError::Invalid(
            "no image: give `image` (base64 or a data URL; a `file` part in multipart) or the `image_id` of an \
             earlier answer"
                .into(),
        )),
        (None, Some(id)) => match seg.image(&id) {
            Some(image) => Ok(Resolved { id, image, fresh: false, decode_ms: 0.0, preprocess_ms: 0.0 }),
            None => Err(ApiError::Invalid(format!(
                "unknown `image_id` `{id}`: this server has not seen that image or no longer holds it \
                 (--image-cache-mb); send the image again"
            ))),
        },
        (Some(bytes), None) => {
            let entry = model.clone();
            let limits = Limits { max_bytes: state.config.max_body_bytes, max_pixels: state.config.images.max_pixels };
            tokenize_off_runtime(state, move || prepare(&entry, &bytes, limits)).await?
        }
    }
}

/// Hash, then decode and resize unless the same bytes were prepared before (blocking: runs off the runtime).
fn prepare(model: &ModelEntry, bytes: &[u8], limits: Limits) -> Result<Resolved, ApiError> {
    let seg = model.segmenter()?;
    let id = image_id(bytes);
    if let Some(image) = seg.image(&id) {
        return Ok(Resolved { id, image, fresh: false, decode_ms: 0.0, preprocess_ms: 0.0 });
    }
    let t = Instant::now();
    let decoded = decode(bytes, limits).map_err(image_error)?.image;
    let decode_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let input = seg.preprocessor.resize_and_crop(&decoded).map_err(image_error)?;
    let preprocess_ms = t.elapsed().as_secs_f64() * 1e3;
    let original = Size { height: decoded.height(), width: decoded.width() };
    let input = InputImage { width: input.width(), height: input.height(), rgb: input.as_raw().to_vec() };
    let image = Arc::new(PreparedImage { original, input });
    seg.keep(id.clone(), image.clone());
    Ok(Resolved { id, image, fresh: true, decode_ms, preprocess_ms })
}

/// Promptable segmentation (SAM2): masks at the original image size for points and/or a box, with their
/// predicted IoU. Send the image (base64 or a data URL as JSON, or a `file` part as multipart) once; later prompts
/// on it may send the answer's `image_id` instead, and reuse its embedding.
#[utoipa::path(
    post,
    path = "/v1/segment",
    tag = "bulkhead",
    request_body(content(
        (SegmentRequest = "application/json"),
        (SegmentRequest = "multipart/form-data")
    )),
    responses((status = 200, description = "The masks and their predicted IoU", body = SegmentResponse))
)]
pub async fn segment(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"));
    let parsed = if multipart {
        Parsed::from_multipart(req, &state).await
    } else {
        match JsonBody::<SegmentRequest>::from_request(req, &state).await {
            Ok(JsonBody(r)) => Parsed::from_json(r),
            Err(e) => Err(e),
        }
    };
    let mut parsed = match parsed {
        Ok(p) => p,
        Err(e) => return labelled(e, ""),
    };
    let segments = |t: &ModelTask| matches!(t, ModelTask::Segmentation);
    let model = match state.model_for_kept(parsed.model.as_deref(), parsed.keep_alive.as_ref(), segments).await {
        Ok(m) => m,
        Err(e) => return labelled(e, parsed.model.as_deref().unwrap_or("")),
    };
    match run(&model, &state, &mut parsed).await {
        Ok(resp) => resp,
        Err(e) => labelled(e, &model.name),
    }
}

async fn run(model: &Arc<ModelEntry>, state: &AppState, p: &mut Parsed) -> Result<Response, ApiError> {
    let resolved = resolve(model, state, p).await?;
    let seg = model.segmenter()?;
    let prompt = MappedPrompt::new(&p.points, p.labels.as_deref(), &p.boxes, resolved.image.original, seg.side)
        .map_err(|e| ApiError::Invalid(e.to_string()))?;
    let multimask = p.multimask.unwrap_or(true);
    let mut prompt = prompt.prompt;
    if let Some(mask) = p.mask_input.take() {
        let side = seg.side as usize / 4;
        if mask.len() != side * side {
            return Err(ApiError::Invalid(format!(
                "`mask_input` holds {} values; this model's low-resolution masks are {side} x {side} ({} values): \
                 send an entry of an earlier answer's `low_res_logits`",
                mask.len(),
                side * side
            )));
        }
        prompt.mask = Some(mask);
    }
    let mut job = SegmentJob {
        image_id: resolved.id.clone(),
        image: resolved.fresh.then(|| resolved.image.input.clone()),
        prompt,
        multimask,
    };
    let mut computed = submit_segment(model, state, job.clone()).await?;
    let mut queue_ms = computed.provenance.timing.queue_ms;
    if computed.value == SegmentOutput::NeedImage {
        // The worker holds no embedding for this image (it restarted, was recycled, or evicted it): send it.
        job.image = Some(resolved.image.input.clone());
        computed = submit_segment(model, state, job).await?;
        queue_ms += computed.provenance.timing.queue_ms;
    }
    let SegmentOutput::Masks(masks) = computed.value else {
        return Err(ApiError::Internal("the worker asked for the image it was just sent".into()));
    };
    let side = masks.side;
    let low_res_logits =
        p.return_logits.then(|| masks.logits.chunks(side.max(1) * side.max(1)).map(logits_base64).collect::<Vec<_>>());
    let format = p.format.unwrap_or_default();
    let original = resolved.image.original;
    let t = Instant::now();
    let (out_masks, iou_scores, cached, encode_ms, decode_masks_ms) =
        tokenize_off_runtime(state, move || encode_masks(&masks, original, format)).await??;
    let post_ms = t.elapsed().as_secs_f64() * 1e3;
    for (stage, ms) in [
        ("decode", resolved.decode_ms),
        ("preprocess", resolved.preprocess_ms),
        ("encode", encode_ms),
        ("decode_masks", decode_masks_ms),
        ("post", post_ms),
    ] {
        state.metrics.stage_ms(&model.name, stage, ms);
    }
    let body = SegmentResponse {
        image_id: resolved.id,
        width: original.width,
        height: original.height,
        masks: out_masks,
        iou_scores,
        embedding_cached: cached,
        low_res_side: p.return_logits.then_some(side),
        low_res_logits,
    };
    let mut provenance = computed.provenance;
    provenance.timing.tokenize_ms = resolved.decode_ms + resolved.preprocess_ms;
    provenance.timing.queue_ms = queue_ms;
    provenance.timing.post_ms = post_ms;
    let mut resp = inference_headers(Json(body), model, &provenance);
    let timing = format!(
        "decode;dur={:.3}, preprocess;dur={:.3}, tokenize;dur={:.3}, queue;dur={:.3}, encode;dur={:.3}, \
         decode_masks;dur={:.3}, infer;dur={:.3}, post;dur={post_ms:.3}",
        resolved.decode_ms,
        resolved.preprocess_ms,
        provenance.timing.tokenize_ms,
        queue_ms,
        encode_ms,
        decode_masks_ms,
        provenance.timing.infer_ms,
    );
    if let Ok(v) = HeaderValue::from_str(&timing) {
        resp.headers_mut().insert("server-timing", v);
    }
    Ok(resp)
}

type Encoded = (Vec<SegmentMask>, Vec<f32>, bool, f64, f64);

/// Upscales the low-resolution logits to the original size, thresholds at 0 and encodes each mask.
fn encode_masks(masks: &Masks, original: Size, format: MaskFormat) -> Result<Encoded, ApiError> {
    let finals = final_masks(masks, original).map_err(|e| ApiError::Internal(format!("mask post-processing: {e}")))?;
    let out = finals
        .iter()
        .map(|m| match format {
            MaskFormat::Rle => {
                let rle = m.to_rle();
                SegmentMask::Rle { rle: Rle { size: rle.size, counts: rle.counts } }
            }
            MaskFormat::Png => SegmentMask::Png { png: base64::engine::general_purpose::STANDARD.encode(m.to_png()) },
        })
        .collect();
    Ok((out, masks.iou_scores.clone(), masks.embedding_cached, masks.encode_ms, masks.decode_ms))
}
