//! `preprocessor_config.json` -> a [`Preprocessor`] configuration, with transformers' semantics: the processor
//! class's defaults, overridden by the keys the file sets.
//!
//! Keys read: `image_processor_type` (or `feature_extractor_type`), `do_resize`, `size`, `resample`, `do_center_crop`, `crop_size`,
//! `do_rescale`, `rescale_factor`, `do_normalize`, `image_mean`, `image_std`, `default_to_square`. A `null`
//! value means the class default. Other keys (`do_convert_rgb`, `processor_class`, `mask_size`, ...) do not
//! change the pixels of a decoded RGB image and are ignored.

use std::path::Path;

use serde_json::Value;

use crate::error::ConfigError;
use crate::resample::Filter;

/// Which transformers image processor a configuration follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessorKind {
    /// `CLIPImageProcessor`: shortest-edge resize (bicubic), centre crop, rescale, normalise (OpenAI mean/std).
    Clip,
    /// `SiglipImageProcessor`: resize to a fixed size, rescale, normalise (0.5 mean/std).
    Siglip,
    /// `Sam2ImageProcessor`: resize to 1024x1024 (bilinear, aspect not kept, no padding), rescale, normalise
    /// (ImageNet mean/std).
    Sam2,
}

/// A height and a width in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Size {
    /// Height.
    pub height: u32,
    /// Width.
    pub width: u32,
}

/// How the resize step chooses its output size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTo {
    /// The shorter side becomes this; the longer is scaled and truncated (`int(n * long / short)`).
    ShortestEdge(u32),
    /// Exactly this size (aspect ratio not kept).
    Exact(Size),
}

/// A fully resolved preprocessing configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessorConfig {
    /// The processor class followed.
    pub kind: ProcessorKind,
    /// Resize target and filter; `None` when `do_resize` is false.
    pub resize: Option<(ResizeTo, Filter)>,
    /// Centre-crop size; `None` when `do_center_crop` is false.
    pub center_crop: Option<Size>,
    /// Rescale factor (usually 1/255); `None` when `do_rescale` is false.
    pub rescale: Option<f64>,
    /// Per-channel mean and standard deviation; `None` when `do_normalize` is false.
    pub normalize: Option<([f64; 3], [f64; 3])>,
}

const OPENAI_CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const OPENAI_CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];
const IMAGENET_STANDARD: [f64; 3] = [0.5, 0.5, 0.5];
const IMAGENET_DEFAULT_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
const IMAGENET_DEFAULT_STD: [f64; 3] = [0.229, 0.224, 0.225];

impl PreprocessorConfig {
    /// The class defaults of a processor, as transformers 5 defines them.
    pub fn defaults(kind: ProcessorKind) -> PreprocessorConfig {
        let rescale = Some(1.0 / 255.0);
        match kind {
            ProcessorKind::Clip => PreprocessorConfig {
                kind,
                resize: Some((ResizeTo::ShortestEdge(224), Filter::Bicubic)),
                center_crop: Some(Size { height: 224, width: 224 }),
                rescale,
                normalize: Some((OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)),
            },
            ProcessorKind::Siglip => PreprocessorConfig {
                kind,
                resize: Some((ResizeTo::Exact(Size { height: 224, width: 224 }), Filter::Bicubic)),
                center_crop: None,
                rescale,
                normalize: Some((IMAGENET_STANDARD, IMAGENET_STANDARD)),
            },
            ProcessorKind::Sam2 => PreprocessorConfig {
                kind,
                resize: Some((ResizeTo::Exact(Size { height: 1024, width: 1024 }), Filter::Bilinear)),
                center_crop: None,
                rescale,
                normalize: Some((IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)),
            },
        }
    }

    /// Reads `preprocessor_config.json` from a model folder.
    pub fn from_model_dir(dir: &Path) -> Result<PreprocessorConfig, ConfigError> {
        let path = dir.join("preprocessor_config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        PreprocessorConfig::from_json(&text)
    }

    /// Parses the text of a `preprocessor_config.json`.
    pub fn from_json(text: &str) -> Result<PreprocessorConfig, ConfigError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let obj = value.as_object().ok_or_else(|| ConfigError::Invalid("the top level is not an object".into()))?;
        let field = |key: &str| obj.get(key).filter(|v| !v.is_null());
        // Older folders (openai/clip-*) name a feature extractor instead; transformers maps it to the processor.
        let type_name = field("image_processor_type")
            .or_else(|| field("feature_extractor_type"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ConfigError::Invalid("neither `image_processor_type` nor `feature_extractor_type` is set".into())
            })?;
        let kind = match type_name.strip_suffix("Fast").unwrap_or(type_name) {
            "CLIPImageProcessor" | "CLIPFeatureExtractor" => ProcessorKind::Clip,
            "SiglipImageProcessor" => ProcessorKind::Siglip,
            "Sam2ImageProcessor" => ProcessorKind::Sam2,
            _ => return Err(ConfigError::UnsupportedProcessor(type_name.to_string())),
        };
        let mut config = PreprocessorConfig::defaults(kind);
        // CLIP and SigLIP set `default_to_square = False`; SAM2 keeps the base class's True.
        let default_to_square = match field("default_to_square") {
            Some(v) => flag(v, "default_to_square")?,
            None => kind == ProcessorKind::Sam2,
        };

        let (mut target, mut filter) = config.resize.expect("every class default resizes");
        if let Some(v) = field("size") {
            target = resize_to(v, default_to_square)?;
        }
        if let Some(v) = field("resample") {
            filter = match v.as_i64() {
                Some(2) => Filter::Bilinear,
                Some(3) => Filter::Bicubic,
                Some(other) => return Err(ConfigError::UnsupportedResample(other)),
                None => return Err(ConfigError::Invalid("`resample` is not an integer".into())),
            };
        }
        config.resize = enabled(field("do_resize"), "do_resize", true)?.then_some((target, filter));
        if let ResizeTo::Exact(size) = target {
            bounded(size, "size")?;
        }

        let mut crop = config.center_crop;
        if let Some(v) = field("crop_size") {
            crop = match resize_to(v, true)? {
                ResizeTo::Exact(size) => Some(size),
                ResizeTo::ShortestEdge(_) => {
                    return Err(ConfigError::BadValue("`crop_size` must give a height and a width".into()))
                }
            };
        }
        let crop_default = config.center_crop.is_some();
        config.center_crop = if enabled(field("do_center_crop"), "do_center_crop", crop_default)? {
            Some(crop.ok_or_else(|| ConfigError::BadValue("`do_center_crop` is set without `crop_size`".into()))?)
        } else {
            None
        };

        if let Some(crop) = config.center_crop {
            bounded(crop, "crop_size")?;
        }

        let factor = match field("rescale_factor") {
            Some(v) => v.as_f64().ok_or_else(|| ConfigError::Invalid("`rescale_factor` is not a number".into()))?,
            None => config.rescale.unwrap_or(1.0 / 255.0),
        };
        if !(factor.is_finite() && factor > 0.0) {
            return Err(ConfigError::BadValue(format!("`rescale_factor` = {factor} is not a positive number")));
        }
        config.rescale = enabled(field("do_rescale"), "do_rescale", true)?.then_some(factor);

        let (mut mean, mut std) = config.normalize.expect("every class default normalises");
        if let Some(v) = field("image_mean") {
            mean = triple(v, "image_mean")?;
        }
        if let Some(v) = field("image_std") {
            std = triple(v, "image_std")?;
        }
        if std.iter().any(|&s| !(s.is_finite() && s != 0.0)) || mean.iter().any(|m| !m.is_finite()) {
            return Err(ConfigError::BadValue(format!("image_mean {mean:?} / image_std {std:?} cannot normalise")));
        }
        config.normalize = enabled(field("do_normalize"), "do_normalize", true)?.then_some((mean, std));
        Ok(config)
    }
}

/// A model input of at most 4096 x 4096 pixels (the largest vision models take a few thousand a side).
fn bounded(size: Size, key: &str) -> Result<(), ConfigError> {
    if u64::from(size.height) * u64::from(size.width) > 1 << 24 {
        return Err(ConfigError::BadValue(format!("{key} {}x{} is over 16,777,216 pixels", size.width, size.height)));
    }
    Ok(())
}

fn flag(v: &Value, key: &str) -> Result<bool, ConfigError> {
    v.as_bool().ok_or_else(|| ConfigError::Invalid(format!("`{key}` is not a boolean")))
}

fn enabled(v: Option<&Value>, key: &str, default: bool) -> Result<bool, ConfigError> {
    v.map_or(Ok(default), |v| flag(v, key))
}

fn positive(v: &Value, what: &str) -> Result<u32, ConfigError> {
    v.as_u64()
        .filter(|&n| (1..=65_536).contains(&n))
        .map(|n| n as u32)
        .ok_or_else(|| ConfigError::BadValue(format!("{what} = {v} is not a size between 1 and 65536")))
}

/// transformers' `get_size_dict`: a dict, an int (square or shortest edge) or a `[height, width]` list.
fn resize_to(v: &Value, default_to_square: bool) -> Result<ResizeTo, ConfigError> {
    match v {
        Value::Number(_) => {
            let n = positive(v, "size")?;
            Ok(if default_to_square {
                ResizeTo::Exact(Size { height: n, width: n })
            } else {
                ResizeTo::ShortestEdge(n)
            })
        }
        Value::Array(items) if items.len() == 2 => {
            Ok(ResizeTo::Exact(Size { height: positive(&items[0], "height")?, width: positive(&items[1], "width")? }))
        }
        Value::Object(map) => {
            let get = |k: &str| map.get(k).filter(|v| !v.is_null());
            if let Some(longest) = get("longest_edge") {
                return Err(ConfigError::BadValue(format!(
                    "size with `longest_edge` ({longest}) is not supported; use `shortest_edge` or `height`/`width`"
                )));
            }
            match (get("shortest_edge"), get("height"), get("width")) {
                (Some(s), None, None) => Ok(ResizeTo::ShortestEdge(positive(s, "shortest_edge")?)),
                (None, Some(h), Some(w)) => {
                    Ok(ResizeTo::Exact(Size { height: positive(h, "height")?, width: positive(w, "width")? }))
                }
                _ => Err(ConfigError::BadValue(format!(
                    "size {v} needs either `shortest_edge` or both `height` and `width`"
                ))),
            }
        }
        _ => Err(ConfigError::Invalid(format!("size {v} is neither a number, a [height, width] list nor an object"))),
    }
}

/// A mean or standard deviation: one number for all channels, or three.
fn triple(v: &Value, key: &str) -> Result<[f64; 3], ConfigError> {
    let bad = || ConfigError::BadValue(format!("`{key}` = {v} is neither a number nor three numbers"));
    match v {
        Value::Number(n) => n.as_f64().map(|x| [x; 3]).ok_or_else(bad),
        Value::Array(items) if items.len() == 3 => {
            let mut out = [0.0; 3];
            for (o, item) in out.iter_mut().zip(items) {
                *o = item.as_f64().ok_or_else(bad)?;
            }
            Ok(out)
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<PreprocessorConfig, ConfigError> {
        PreprocessorConfig::from_json(json)
    }

    #[test]
    fn sizes_follow_get_size_dict() {
        // An integer is a shortest edge for CLIP and SigLIP, a square for SAM2.
        let clip = parse(r#"{"image_processor_type": "CLIPImageProcessor", "size": 336, "crop_size": 336}"#).unwrap();
        assert_eq!(clip.resize, Some((ResizeTo::ShortestEdge(336), Filter::Bicubic)));
        assert_eq!(clip.center_crop, Some(Size { height: 336, width: 336 }));
        let sam = parse(r#"{"image_processor_type": "Sam2ImageProcessorFast", "size": 512}"#).unwrap();
        assert_eq!(sam.resize, Some((ResizeTo::Exact(Size { height: 512, width: 512 }), Filter::Bilinear)));
        let siglip = parse(r#"{"image_processor_type": "SiglipImageProcessor", "size": [384, 320], "resample": 2}"#);
        let expected = ResizeTo::Exact(Size { height: 384, width: 320 });
        assert_eq!(siglip.unwrap().resize, Some((expected, Filter::Bilinear)));
    }

    #[test]
    fn switches_and_nulls() {
        let off = parse(
            r#"{"image_processor_type": "CLIPImageProcessor", "do_resize": false, "do_center_crop": false,
                "do_rescale": false, "do_normalize": false, "crop_size": null}"#,
        )
        .unwrap();
        assert_eq!((off.resize, off.center_crop, off.rescale, off.normalize), (None, None, None, None));
        let nulls = parse(r#"{"image_processor_type": "Sam2ImageProcessorFast", "crop_size": null, "do_pad": null}"#);
        assert_eq!(nulls.unwrap(), PreprocessorConfig::defaults(ProcessorKind::Sam2));
        let one_mean = parse(r#"{"image_processor_type": "SiglipImageProcessor", "image_mean": 0.25}"#).unwrap();
        assert_eq!(one_mean.normalize.unwrap().0, [0.25; 3]);
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        assert!(matches!(parse("{"), Err(ConfigError::Invalid(_))));
        assert!(matches!(parse(r#"{"size": 3}"#), Err(ConfigError::Invalid(_))));
        let vit = parse(r#"{"image_processor_type": "ViTImageProcessor"}"#);
        assert!(matches!(vit, Err(ConfigError::UnsupportedProcessor(name)) if name == "ViTImageProcessor"));
        let lanczos = parse(r#"{"image_processor_type": "CLIPImageProcessor", "resample": 1}"#);
        assert_eq!(lanczos, Err(ConfigError::UnsupportedResample(1)));
        let longest = parse(r#"{"image_processor_type": "CLIPImageProcessor", "size": {"longest_edge": 5}}"#);
        assert!(matches!(longest, Err(ConfigError::BadValue(_))));
        let zero_std = parse(r#"{"image_processor_type": "CLIPImageProcessor", "image_std": [0, 1, 1]}"#);
        assert!(matches!(zero_std, Err(ConfigError::BadValue(_))));
        let huge =
            parse(r#"{"image_processor_type": "SiglipImageProcessor", "size": {"height": 60000, "width": 60000}}"#);
        assert!(matches!(huge, Err(ConfigError::BadValue(_))));
        let zero_size = parse(r#"{"image_processor_type": "CLIPImageProcessor", "size": 0}"#);
        assert!(matches!(zero_size, Err(ConfigError::BadValue(_))));
    }
}
