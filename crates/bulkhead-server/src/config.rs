//! Server settings, with the defaults documented in one place.

use std::time::Duration;

use crate::grouping::Grouping;
use crate::http::ConnectionLimits;
use crate::trace::TraceConfig;

/// Settings of the HTTP layer and the batcher.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Padded tokens (rows x longest row) a batch may hold.
    pub max_batch_tokens: usize,
    /// Rows a batch may hold.
    pub max_batch_size: usize,
    /// How a batch's rows are cut into forward passes by length. Default: padding within 15% of the real tokens
    /// or 8 tokens per row.
    pub grouping: Grouping,
    /// Extra time a batch may wait for more requests when a worker is free (0: dispatch at once; batches still form
    /// while the workers are busy).
    pub max_batch_wait: Duration,
    /// Batches in flight per model (the workers' queue depth).
    pub max_concurrent_batches: usize,
    /// A request is *long* when one of its rows has more tokens than this (`None`: none is long; default 128). A
    /// batch of short requests only may run beside `max_concurrent_batches` batches, and short requests pass long
    /// ones waiting for a batch slot, so short requests never wait in the batcher behind long ones. The supervisor
    /// takes the same limit for its short lane.
    pub long_row_tokens: Option<usize>,
    /// Requests waiting per model before new ones get 429.
    pub max_queue: usize,
    /// Inputs per request.
    pub max_inputs: usize,
    /// Request body limit in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Bearer token required on every route but the liveness probes.
    pub api_key: Option<String>,
    /// `/health` fails when no unit of a model answered a forward pass for this long and none can now.
    pub health_window: Duration,
    /// A request still unanswered after this long gets 504 (`None`: no deadline). Default 120 s.
    pub request_timeout: Option<Duration>,
    /// Header and keep-alive timeouts and the connection limit. Defaults: 10 s, 60 s, 8192.
    pub connections: ConnectionLimits,
    /// Where OpenTelemetry traces go (`--otlp-endpoint`); `None`: no traces (the default).
    pub traces: Option<TraceConfig>,
    /// Bytes of prepared images a segmentation model keeps by `image_id` (`--image-cache-mb`). Default 256 MiB.
    pub image_cache_bytes: usize,
    /// What image inputs may be (image-text models).
    pub images: ImageLimits,
    /// The longest audio a speech route takes, in seconds (`--max-audio-s`, default 3600).
    pub max_audio_s: f64,
}

/// Limits on image inputs (`/v1/embeddings` image parts, `/embeddings_image`).
#[derive(Debug, Clone)]
pub struct ImageLimits {
    /// Pixels an image's header may declare (refused before decoding past it). Default 89,478,485 (PIL's
    /// decompression-bomb limit).
    pub max_pixels: u64,
    /// Encoded bytes of one image. Default 64 MiB (the request body limit is usually lower).
    pub max_bytes: usize,
    /// Fetch `http://` and `https://` image URLs (`--allow-image-urls`); otherwise only `data:` URLs are taken.
    pub allow_urls: bool,
    /// The longest a URL fetch may take, connection included. Default 10 s.
    pub fetch_timeout: Duration,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits {
            max_pixels: bulkhead_image::DEFAULT_MAX_PIXELS,
            max_bytes: bulkhead_image::DEFAULT_MAX_BYTES,
            allow_urls: false,
            fetch_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_batch_tokens: 16_384,
            max_batch_size: 64,
            grouping: Grouping::default(),
            max_batch_wait: Duration::ZERO,
            max_concurrent_batches: 2,
            long_row_tokens: Some(128),
            max_queue: 1024,
            max_inputs: 2048,
            max_body_bytes: 8 << 20,
            api_key: None,
            health_window: Duration::from_secs(60),
            request_timeout: Some(Duration::from_secs(120)),
            connections: ConnectionLimits {
                header_timeout: Duration::from_secs(10),
                keep_alive_timeout: Duration::from_secs(60),
                max_connections: 8192,
            },
            traces: None,
            image_cache_bytes: 256 << 20,
            images: ImageLimits::default(),
            max_audio_s: 3600.0,
        }
    }
}
