//! The feature extractor's configuration, read from a model folder's `preprocessor_config.json` with the defaults
//! and field names of transformers' `WhisperFeatureExtractor` (Whisper, Qwen3-ASR, Qwen2-Audio and others ship
//! such a file). A value the extractor cannot follow exactly is refused, never ignored.

use std::path::Path;

use serde::Deserialize;

use crate::ConfigError;

/// The file name in a model folder.
pub const PREPROCESSOR_CONFIG: &str = "preprocessor_config.json";

/// The log-mel front end's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureConfig {
    /// Mel bins (`feature_size`, or `num_mel_bins`): 80 for Whisper up to large-v2, 128 for large-v3 and Qwen3-ASR.
    pub n_mels: usize,
    /// The rate the model takes, in Hz (`sampling_rate`).
    pub sampling_rate: u32,
    /// Samples between frames (`hop_length`).
    pub hop_length: usize,
    /// The FFT and window length (`n_fft`).
    pub n_fft: usize,
    /// The fixed input length of padded models, in seconds (`chunk_length`).
    pub chunk_length: usize,
    /// The fixed input length in samples (`n_samples`; default `chunk_length * sampling_rate`).
    pub n_samples: usize,
    /// The fixed input length in frames (`nb_max_frames`; default `n_samples / hop_length`).
    pub nb_max_frames: usize,
    /// The sample value audio is padded with (`padding_value`).
    pub padding_value: f32,
    /// Whether the model's processor asks for the attention mask (`return_attention_mask`).
    pub return_attention_mask: bool,
    /// The processor class the file names (`processor_class`), if any, e.g. `WhisperProcessor`.
    pub processor_class: Option<String>,
}

impl FeatureConfig {
    /// transformers' `WhisperFeatureExtractor` defaults with `n_mels` bins: 16 kHz, n_fft 400, hop 160, 30 s.
    pub fn whisper(n_mels: usize) -> Self {
        FeatureConfig {
            n_mels,
            sampling_rate: 16000,
            hop_length: 160,
            n_fft: 400,
            chunk_length: 30,
            n_samples: 480_000,
            nb_max_frames: 3000,
            padding_value: 0.0,
            return_attention_mask: false,
            processor_class: None,
        }
    }

    /// Reads `preprocessor_config.json` (a file, or the folder holding it).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let path = if path.is_dir() { path.join(PREPROCESSOR_CONFIG) } else { path.to_path_buf() };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io { path: path.clone(), source })?;
        Self::parse(&text, &path)
    }

    /// Parses the JSON text of a `preprocessor_config.json`.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, Path::new("<inline>"))
    }

    fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: Raw = serde_json::from_str(text)
            .map_err(|e| ConfigError::Json { path: path.to_path_buf(), detail: e.to_string() })?;
        let unsupported = |field: &'static str, value: String, reason: &str| ConfigError::Unsupported {
            path: path.to_path_buf(),
            field,
            value,
            reason: reason.to_string(),
        };
        if let Some(kind) = raw.feature_extractor_type.as_deref() {
            if kind != "WhisperFeatureExtractor" {
                return Err(unsupported(
                    "feature_extractor_type",
                    format!("{kind:?}"),
                    "only WhisperFeatureExtractor's log-mel front end is implemented",
                ));
            }
        }
        if raw.dither != 0.0 {
            return Err(unsupported(
                "dither",
                raw.dither.to_string(),
                "dithering adds random noise to every frame; only 0.0 (transformers' default) is supported",
            ));
        }
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let n_mels = size(raw.num_mel_bins.or(raw.feature_size).unwrap_or(80));
        let sampling_rate = u32::try_from(raw.sampling_rate.unwrap_or(16000))
            .map_err(|_| unsupported("sampling_rate", format!("{:?}", raw.sampling_rate), "too large"))?;
        let hop_length = size(raw.hop_length.unwrap_or(160));
        let chunk_length = size(raw.chunk_length.unwrap_or(30));
        let n_samples = raw.n_samples.map_or(chunk_length.saturating_mul(sampling_rate as usize), size);
        let config = FeatureConfig {
            n_mels,
            sampling_rate,
            hop_length,
            n_fft: size(raw.n_fft.unwrap_or(400)),
            chunk_length,
            n_samples,
            nb_max_frames: raw.nb_max_frames.map_or(n_samples / hop_length.max(1), size),
            padding_value: raw.padding_value.unwrap_or(0.0),
            return_attention_mask: raw.return_attention_mask.unwrap_or(false),
            processor_class: raw.processor_class,
        };
        config.check(path)?;
        Ok(config)
    }

    /// Refuses values the extractor cannot compute with (zero sizes, an odd FFT, inconsistent lengths).
    pub(crate) fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let unsupported = |field: &'static str, value: String, reason: String| ConfigError::Unsupported {
            path: path.to_path_buf(),
            field,
            value,
            reason,
        };
        for (field, value) in [
            ("feature_size", self.n_mels),
            ("sampling_rate", self.sampling_rate as usize),
            ("hop_length", self.hop_length),
            ("chunk_length", self.chunk_length),
            ("n_samples", self.n_samples),
            ("nb_max_frames", self.nb_max_frames),
        ] {
            if value == 0 {
                return Err(unsupported(field, "0".into(), "must be at least 1".into()));
            }
        }
        if self.n_fft % 2 == 1 || self.n_fft < 4 || self.n_fft > 65536 {
            return Err(unsupported("n_fft", self.n_fft.to_string(), "must be even, from 4 to 65536".into()));
        }
        if self.n_mels > 512 {
            return Err(unsupported("feature_size", self.n_mels.to_string(), "more than 512 mel bins".into()));
        }
        if self.nb_max_frames != self.n_samples / self.hop_length {
            return Err(unsupported(
                "nb_max_frames",
                self.nb_max_frames.to_string(),
                format!("must be n_samples / hop_length = {}", self.n_samples / self.hop_length),
            ));
        }
        if !self.padding_value.is_finite() {
            return Err(unsupported("padding_value", self.padding_value.to_string(), "must be finite".into()));
        }
        Ok(())
    }
}

/// The file as written; unknown fields are ignored (they describe the processor, not the features).
#[derive(Deserialize)]
struct Raw {
    feature_extractor_type: Option<String>,
    feature_size: Option<u64>,
    num_mel_bins: Option<u64>,
    sampling_rate: Option<u64>,
    hop_length: Option<u64>,
    n_fft: Option<u64>,
    chunk_length: Option<u64>,
    n_samples: Option<u64>,
    nb_max_frames: Option<u64>,
    padding_value: Option<f32>,
    #[serde(default)]
    dither: f64,
    return_attention_mask: Option<bool>,
    processor_class: Option<String>,
}
