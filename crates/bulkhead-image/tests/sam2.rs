//! SAM2 prompt mapping and mask post-processing against transformers' `Sam2Processor` and
//! `Sam2ImageProcessor.post_process_masks`, and the COCO RLE / PNG encoders.

mod common;

use bulkhead_image::sam2::{map_box, map_point, post_process_masks, BoxPrompt, Point};
use bulkhead_image::{decode, CocoRle, Limits, Mask, PromptError, Size};
use common::{image, reference};
use serde_json::Value;

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn prompts_map_exactly_as_the_processor_does() {
    let reference = reference();
    for case in reference["sam2_prompts"].as_array().unwrap() {
        let size = f32s(&case["original_size"]);
        let original = Size { height: size[0] as u32, width: size[1] as u32 };
        for (point, mapped) in case["points"].as_array().unwrap().iter().zip(case["mapped_points"].as_array().unwrap())
        {
            let p = f32s(point);
            let ours = map_point(Point { x: p[0], y: p[1], foreground: true }, original, 1024).unwrap();
            assert_eq!(ours.to_vec(), f32s(mapped), "point {p:?} in {original:?}");
        }
        for (b, mapped) in case["boxes"].as_array().unwrap().iter().zip(case["mapped_boxes"].as_array().unwrap()) {
            let b = f32s(b);
            let ours = map_box(BoxPrompt { x0: b[0], y0: b[1], x1: b[2], y1: b[3] }, original, 1024).unwrap();
            assert_eq!(ours.to_vec(), f32s(mapped), "box {b:?} in {original:?}");
        }
    }
    let original = Size { height: 517, width: 333 };
    let outside = map_point(Point { x: 400.0, y: 10.0, foreground: true }, original, 1024);
    assert!(matches!(outside, Err(PromptError::PointOutside { .. })));
    assert!(matches!(
        map_point(Point { x: f32::NAN, y: 1.0, foreground: false }, original, 1024),
        Err(PromptError::NotFinite(_))
    ));
    let swapped = map_box(BoxPrompt { x0: 50.0, y0: 10.0, x1: 20.0, y1: 30.0 }, original, 1024);
    assert!(matches!(swapped, Err(PromptError::BadBox { .. })));
}

/// The 3 low-resolution logit planes of the fixture (int8 / 4, stored as an 8-bit PNG with +128).
fn logits(masks: &Value) -> Vec<f32> {
    let png = image(masks["logits_png"].as_str().unwrap());
    let offset = masks["offset"].as_f64().unwrap() as f32;
    let scale = masks["scale"].as_f64().unwrap() as f32;
    png.as_raw().chunks_exact(3).map(|p| (f32::from(p[0]) - offset) * scale).collect()
}

#[test]
fn masks_post_process_as_transformers_does() {
    let reference = reference();
    let masks = &reference["sam2_masks"];
    let logits = logits(masks);
    assert_eq!(logits.len(), 3 * 256 * 256);
    let low = Size { height: 256, width: 256 };
    println!("| original size | mask | pixels | differing pixels | share | IoU |");
    println!("|---|---|---|---|---|---|");
    for case in masks["cases"].as_array().unwrap() {
        let size = f32s(&case["original_size"]);
        let original = Size { height: size[0] as u32, width: size[1] as u32 };
        let ours = post_process_masks(&logits, 3, low, original, 0.0).unwrap();
        for (i, (mask, rle)) in ours.iter().zip(case["rle"].as_array().unwrap()).enumerate() {
            let expected_rle: CocoRle = serde_json::from_value(rle.clone()).unwrap();
            let expected = Mask::from_rle(&expected_rle).expect("the reference RLE adds up");
            let differing = mask.as_raw().iter().zip(expected.as_raw()).filter(|(a, b)| a != b).count();
            let pixels = mask.as_raw().len();
            let iou = mask.iou(&expected).unwrap();
            println!(
                "| {}x{} | {i} | {pixels} | {differing} | {:.5}% | {iou:.6} |",
                original.width,
                original.height,
                differing as f64 / pixels as f64 * 100.0
            );
            assert!(iou >= 0.99, "{original:?} mask {i}: IoU {iou}");
            if differing == 0 {
                // Identical masks must encode to the identical RLE.
                assert_eq!(mask.to_rle(), expected_rle, "{original:?} mask {i}");
            }
        }
    }
}

#[test]
fn rle_matches_the_reference_encoder_and_round_trips() {
    let reference = reference();
    for case in reference["sam2_masks"]["cases"].as_array().unwrap() {
        for rle in case["rle"].as_array().unwrap() {
            let expected: CocoRle = serde_json::from_value(rle.clone()).unwrap();
            let mask = Mask::from_rle(&expected).unwrap();
            assert_eq!(mask.to_rle(), expected);
            // The JSON shape is COCO's: {"size": [h, w], "counts": [...]}.
            assert_eq!(&serde_json::to_value(mask.to_rle()).unwrap(), rle);
        }
    }
}

#[test]
fn png_masks_decode_back_to_the_same_mask() {
    let size = Size { height: 37, width: 700 };
    let mask = Mask::from_fn(size, |i| (i / 7 + i / 700) % 3 == 0);
    let png = mask.to_png();
    let decoded = decode(&png, Limits::default()).unwrap().image;
    assert_eq!((decoded.width(), decoded.height()), (700, 37));
    for y in 0..37 {
        for x in 0..700 {
            let expected = if mask.get(x, y) { 255 } else { 0 };
            assert_eq!(decoded.pixel(x, y).unwrap(), [expected; 3]);
        }
    }
}
