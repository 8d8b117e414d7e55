//! SAM2's two graphs (`tests/fixtures/vision/sam2-tiny-random/`, a tiny random-weight `Sam2Model` made by
//! `scripts/fixtures/make_sam2.py`) against what transformers computed for it, on ONNX Runtime CPU: the vision
//! encoder's three image embeddings for two images, then every prompt set (one point, a foreground and a background
//! point, a box, a box and a point, a point with an earlier mask) through the prompt encoder + mask decoder, fed the
//! embeddings of one encoder run per image (the cached-embedding path: the decoder alone per click). Mask logits,
//! IoU predictions and object scores with `multimask_output` true and false; masks thresholded at 0 as
//! transformers' post-processing does. Also the cache and the configuration errors.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bulkhead_core::ModelFiles;
use bulkhead_graph::sam2::{build_sam2_cached, export_sam2, Sam2Graph, IMAGE_EMBEDDINGS};
use common::ort_env;
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;
use serde_json::Value;

const MIN_COS: f64 = 0.9999;
const MAX_LOGIT_DIFF: f32 = 1e-3;
const MAX_IOU_DIFF: f32 = 1e-3;
/// Share of low-resolution mask pixels allowed to flip after thresholding at 0.
const MAX_FLIPPED: f64 = 0.001;

fn folder() -> PathBuf {
    bulkhead_testkit::fixture("vision").join("sam2-tiny-random")
}

fn ready() -> bool {
    if let Err(e) = ort_env() {
        eprintln!("skipping: ONNX Runtime is unavailable: {e}");
        return false;
    }
    true
}

fn session(path: &Path) -> Session {
    common::session(ort_env().unwrap(), path, 2)
}

/// A tensor of the reference: its values (float32, or float16 widened) and shape.
fn load(dir: &Path, entry: &Value) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(dir.join(entry["file"].as_str().unwrap())).unwrap();
    let shape: Vec<usize> = entry["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    let values: Vec<f32> = match entry["dtype"].as_str().unwrap() {
        "float16" => bytes.chunks_exact(2).map(|c| f16(u16::from_le_bytes([c[0], c[1]]))).collect(),
        _ => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
    };
    assert_eq!(values.len(), shape.iter().product::<usize>(), "{}", entry["file"]);
    (values, shape)
}

/// IEEE half → single (normal and zero values; the pixel values have no subnormals worth keeping apart).
fn f16(h: u16) -> f32 {
    let sign = if h >> 15 == 1 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let mant = f32::from(h & 0x3ff);
    match exp {
        0 => sign * mant * 2f32.powi(-24),
        _ => sign * (1.0 + mant / 1024.0) * 2f32.powi(exp - 15),
    }
}

/// Cosine similarity and largest absolute difference.
fn stats(got: &[f32], want: &[f32]) -> (f64, f32) {
    assert_eq!(got.len(), want.len());
    let (mut dot, mut a, mut b, mut diff) = (0f64, 0f64, 0f64, 0f32);
    for (&x, &y) in got.iter().zip(want) {
        dot += f64::from(x) * f64::from(y);
        a += f64::from(x) * f64::from(x);
        b += f64::from(y) * f64::from(y);
        diff = diff.max((x - y).abs());
    }
    (dot / (a.sqrt() * b.sqrt()).max(1e-30), diff)
}

fn flipped(got: &[f32], want: &[f32]) -> usize {
    got.iter().zip(want).filter(|(x, y)| (**x > 0.0) != (**y > 0.0)).count()
}

fn run(session: &mut Session, inputs: &[(&str, Vec<usize>, Input)]) -> HashMap<String, Vec<f32>> {
    let mut feed: Vec<(String, SessionInputValue<'_>)> = vec![];
    for (name, shape, data) in inputs {
        let v: SessionInputValue<'_> = match data {
            Input::F32(d) => TensorRef::from_array_view((shape.clone(), d.as_slice())).unwrap().into(),
            Input::I64(d) => TensorRef::from_array_view((shape.clone(), d.as_slice())).unwrap().into(),
        };
        feed.push((name.to_string(), v));
    }
    let out = session.run(feed).unwrap();
    out.iter().map(|(k, v)| (k.to_string(), v.try_extract_tensor::<f32>().unwrap().1.to_vec())).collect()
}

enum Input {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(folder().join("reference.json")).unwrap()).unwrap()
}

/// The decoder's inputs for one prompt case.
fn prompt_inputs(
    dir: &Path,
    prompt: &Value,
    size: usize,
    embeddings: &[Vec<f32>; 3],
    shapes: &[Vec<usize>],
) -> Vec<(&'static str, Vec<usize>, Input)> {
    let floats = |v: &Value| -> Vec<f32> {
        let mut out = vec![];
        fn walk(v: &Value, out: &mut Vec<f32>) {
            match v {
                Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                x => out.push(x.as_f64().unwrap() as f32),
            }
        }
        walk(v, &mut out);
        out
    };
    let points = prompt.get("input_points").map(floats).unwrap_or_default();
    let labels: Vec<i64> =
        prompt.get("input_labels").map(floats).unwrap_or_default().iter().map(|&x| x as i64).collect();
    let boxes = prompt.get("input_boxes").map(floats).unwrap_or_default();
    let (mask, has_mask) = match prompt.get("input_masks") {
        Some(entry) => (load(dir, entry).0, 1.0),
        None => (vec![0.0; size * size / 16], 0.0),
    };
    let n = labels.len();
    vec![
        (IMAGE_EMBEDDINGS[0], shapes[0].clone(), Input::F32(embeddings[0].clone())),
        (IMAGE_EMBEDDINGS[1], shapes[1].clone(), Input::F32(embeddings[1].clone())),
        (IMAGE_EMBEDDINGS[2], shapes[2].clone(), Input::F32(embeddings[2].clone())),
        ("input_points", vec![1, 1, n, 2], Input::F32(points)),
        ("input_labels", vec![1, 1, n], Input::I64(labels)),
        ("input_boxes", vec![1, boxes.len() / 4, 4], Input::F32(boxes)),
        ("input_masks", vec![1, 1, size / 4, size / 4], Input::F32(mask)),
        ("has_mask_input", vec![1], Input::F32(vec![has_mask])),
    ]
}

#[test]
fn sam2_matches_transformers_encoder_once_then_every_prompt() {
    if !ready() {
        return;
    }
    let dir = folder();
    let model = ModelFiles::open(&dir).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let encoder = build_sam2_cached(&model, Sam2Graph::VisionEncoder, cache.path()).unwrap();
    let decoder = build_sam2_cached(&model, Sam2Graph::PromptEncoderMaskDecoder, cache.path()).unwrap();
    let mut encoder = session(&encoder.path);
    let mut decoder = session(&decoder.path);
    let r = reference();
    let size = r["image_size"].as_u64().unwrap() as usize;
    let mut table = vec![];
    for (i, image) in r["images"].as_array().unwrap().iter().enumerate() {
        let (pixels, shape) = load(&dir, &image["pixel_values"]);
        let out = run(&mut encoder, &[("pixel_values", shape, Input::F32(pixels))]);
        let mut shapes = vec![];
        let mut ours: Vec<Vec<f32>> = vec![];
        for (k, entry) in image["image_embeddings"].as_array().unwrap().iter().enumerate() {
            let (want, shape) = load(&dir, entry);
            let got = &out[IMAGE_EMBEDDINGS[k]];
            let (cos, diff) = stats(got, &want);
            table.push(format!("image{i} {}: cos {cos:.7} max|diff| {diff:.2e}", IMAGE_EMBEDDINGS[k]));
            assert!(cos >= MIN_COS, "image {i} {}: cosine {cos}", IMAGE_EMBEDDINGS[k]);
            ours.push(got.clone());
            shapes.push(shape);
        }
        let ours: [Vec<f32>; 3] = ours.try_into().unwrap();
        // Every prompt set runs the decoder alone against this one encoder run.
        for case in image["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let inputs = prompt_inputs(&dir, &case["prompt"], size, &ours, &shapes);
            let out = run(&mut decoder, &inputs);
            for (tag, masks, ious) in
                [("multi", "pred_masks", "iou_scores"), ("single", "single_pred_masks", "single_iou_scores")]
            {
                let (want_masks, _) = load(&dir, &case[tag]["pred_masks"]);
                let (want_iou, _) = load(&dir, &case[tag]["iou_scores"]);
                let want_obj: Vec<f32> = case[tag]["object_score_logits"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect();
                let (cos, diff) = stats(&out[masks], &want_masks);
                let flips = flipped(&out[masks], &want_masks);
                let (_, iou_diff) = stats(&out[ious], &want_iou);
                let (_, obj_diff) = stats(&out["object_score_logits"], &want_obj);
                table.push(format!(
                    "image{i} {name} {tag}: masks cos {cos:.7} max|diff| {diff:.2e} flipped {flips}/{} iou \
                     max|diff| {iou_diff:.2e} object score max|diff| {obj_diff:.2e}",
                    want_masks.len()
                ));
                let what = format!("image {i} {name} multimask={}", tag == "multi");
                assert!(cos >= MIN_COS, "{what}: mask cosine {cos}");
                assert!(diff <= MAX_LOGIT_DIFF, "{what}: mask logits differ by {diff}");
                assert!(flips as f64 <= MAX_FLIPPED * want_masks.len() as f64, "{what}: {flips} pixels flipped");
                assert!(iou_diff <= MAX_IOU_DIFF, "{what}: IoU differs by {iou_diff}");
                assert!(obj_diff <= MAX_LOGIT_DIFF, "{what}: object score differs by {obj_diff}");
            }
        }
    }
    eprintln!("{}", table.join("\n"));
}

#[test]
fn sam2_graphs_are_cached_and_exported() {
    if !ready() {
        return;
    }
    let model = ModelFiles::open(&folder()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let first = build_sam2_cached(&model, Sam2Graph::VisionEncoder, cache.path()).unwrap();
    let again = build_sam2_cached(&model, Sam2Graph::VisionEncoder, cache.path()).unwrap();
    let decoder = build_sam2_cached(&model, Sam2Graph::PromptEncoderMaskDecoder, cache.path()).unwrap();
    assert!(!first.cache_hit && again.cache_hit && !decoder.cache_hit);
    assert_eq!(first.path, again.path);
    assert_ne!(first.key, decoder.key, "the two graphs share a cache entry");
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("decoder.onnx");
    export_sam2(&model, Sam2Graph::PromptEncoderMaskDecoder, &file).unwrap();
    let s = session(&file);
    let names: Vec<String> = s.inputs().iter().map(|i| i.name().to_string()).collect();
    assert_eq!(
        names,
        [
            "image_embeddings.0",
            "image_embeddings.1",
            "image_embeddings.2",
            "input_points",
            "input_labels",
            "input_boxes",
            "input_masks",
            "has_mask_input"
        ]
    );
}

#[test]
fn sam2_config_errors_name_the_file_and_the_field() {
    let src = folder();
    type Edit = fn(&mut Value);
    let cases: [(&str, Edit, &str); 3] = [
        (
            "windows",
            |v| v["vision_config"]["backbone_config"]["window_size_per_stage"] = serde_json::json!([8, 4, 6]),
            "vision_config.backbone_config.window_size_per_stage",
        ),
        ("act", |v| v["mask_decoder_config"]["hidden_act"] = "relu".into(), "mask_decoder_config.hidden_act"),
        ("fpn", |v| v["vision_config"]["fpn_hidden_size"] = 64.into(), "mask_decoder_config.hidden_size"),
    ];
    for (name, edit, field) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
        edit(&mut config);
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        std::fs::copy(src.join("model.safetensors"), dir.path().join("model.safetensors")).unwrap();
        let model = ModelFiles::open(dir.path()).unwrap();
        let err = export_sam2(&model, Sam2Graph::VisionEncoder, &dir.path().join("x.onnx")).unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains(field), "{name}: {err}");
    }
    // A tensor of the wrong shape names the safetensors file and the tensor.
    let dir = tempfile::tempdir().unwrap();
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config["vision_config"]["backbone_config"]["embed_dim_per_stage"] = serde_json::json!([8, 12, 16, 32]);
    config["vision_config"]["backbone_channel_list"] = serde_json::json!([32, 16, 12, 8]);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.path().join("model.safetensors")).unwrap();
    let model = ModelFiles::open(dir.path()).unwrap();
    let err = export_sam2(&model, Sam2Graph::VisionEncoder, &dir.path().join("x.onnx")).unwrap_err().to_string();
    assert!(err.contains("model.safetensors") && err.contains("blocks.5"), "{err}");
}
