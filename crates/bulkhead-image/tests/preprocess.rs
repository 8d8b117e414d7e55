//! `pixel_values` against transformers' CLIPImageProcessor, SiglipImageProcessor and Sam2ImageProcessor (the
//! default torchvision backend) on the same image files loaded with `load_image`.
//!
//! Lossless sources must match bit for bit (SHA-256 of the float32 values); JPEG/WebP sources differ only by
//! the decoders' rounding and must stay within cosine 0.9999 (measured on the whole model input, whose float
//! values the fixture script proved to be `(input - mean') / std'` exactly).

mod common;

use bulkhead_image::{ImageError, PixelValues, Preprocessor, ProcessorKind, RgbImage, Size};
use common::{byte_diff, cosine, f32_bytes, f32_values, fixtures, image, max_abs, read, reference, sha256};

fn preprocessor(name: &str) -> Preprocessor {
    let text = String::from_utf8(read(&format!("configs/{name}.json"))).unwrap();
    Preprocessor::from_json(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every `stride`-th row and column of an image.
fn strided(image: &RgbImage, stride: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for y in (0..image.height()).step_by(stride as usize) {
        for x in (0..image.width()).step_by(stride as usize) {
            out.extend_from_slice(&image.pixel(x, y).unwrap());
        }
    }
    out
}

#[test]
fn configs_resolve_to_the_transformers_classes() {
    assert_eq!(preprocessor("clip").kind(), ProcessorKind::Clip);
    assert_eq!(preprocessor("siglip").kind(), ProcessorKind::Siglip);
    assert_eq!(preprocessor("sam2").kind(), ProcessorKind::Sam2);
    assert_eq!(preprocessor("clip").input_size(), Some(Size { height: 224, width: 224 }));
    assert_eq!(preprocessor("siglip").input_size(), Some(Size { height: 256, width: 256 }));
    assert_eq!(preprocessor("sam2").input_size(), Some(Size { height: 1024, width: 1024 }));

    // A model folder holds the same file as `preprocessor_config.json`.
    let dir = std::env::temp_dir().join(format!("bulkhead-image-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixtures().join("configs/clip.json"), dir.join("preprocessor_config.json")).unwrap();
    let from_dir = Preprocessor::from_model_dir(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(from_dir.unwrap(), preprocessor("clip"));
}

#[test]
fn pixel_values_match_transformers() {
    let reference = reference();
    println!(
        "| processor | image | shape | bit-exact | max abs (all values) | cosine | model-input levels differing |"
    );
    println!("|---|---|---|---|---|---|---|");
    for proc_name in ["clip", "siglip", "sam2", "clip_pad"] {
        let pre = preprocessor(proc_name);
        let entry = &reference["processors"][proc_name];
        for (image_name, case) in entry["images"].as_object().unwrap() {
            let decoded = image(image_name);
            let ours = pre.preprocess(&decoded).unwrap();
            let shape: Vec<u64> = case["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
            assert_eq!(
                vec![3, u64::from(ours.size.height), u64::from(ours.size.width)],
                shape,
                "{proc_name}/{image_name}"
            );
            let exact = sha256(&f32_bytes(&ours.data)) == case["pixel_values_sha256"].as_str().unwrap();

            // The strided float32 samples straight from transformers.
            let samples = f32_values(&read(case["samples"].as_str().unwrap()));
            let stride = case["sample_stride"].as_u64().unwrap() as usize;
            let ours_sampled: Vec<f32> = ours.data.iter().step_by(stride).copied().collect();
            let mut max = max_abs(&ours_sampled, &samples);
            let mut cos = cosine(&ours_sampled, &samples);
            let mut differing = 0.0;

            // Where the whole model input is stored (JPEG/WebP sources), compare everything.
            if let Some(png) = case["input_png"].as_str() {
                let expected = image(png);
                let input_stride = case["input_stride"].as_u64().unwrap() as u32;
                let ours_input = pre.resize_and_crop(&decoded).unwrap();
                let (_, _, share) = byte_diff(&strided(&ours_input, input_stride), expected.as_raw());
                differing = share;
                if input_stride == 1 {
                    let theirs = pre.normalize(&expected);
                    max = max.max(max_abs(&ours.data, &theirs));
                    cos = cosine(&ours.data, &theirs);
                }
            } else {
                let input_sha = sha256(pre.resize_and_crop(&decoded).unwrap().as_raw());
                if input_sha != case["input_sha256"].as_str().unwrap() {
                    differing = f64::NAN;
                }
            }
            println!(
                "| {proc_name} | {image_name} | {shape:?} | {exact} | {max:.3e} | {cos:.8} | {:.3}% |",
                differing * 100.0
            );
            let lossy = image_name.ends_with(".jpg") || image_name.ends_with(".webp");
            if lossy {
                // One or two levels on a few percent of the values: cosine well above 0.9999.
                assert!(cos >= 0.9999 && max <= 0.1, "{proc_name}/{image_name}: cosine {cos}, max abs {max}");
            } else {
                assert!(exact, "{proc_name}/{image_name}: max abs {max}, cosine {cos}");
            }
        }
    }
}

#[test]
fn extreme_aspect_ratios_are_refused_not_allocated() {
    let clip = preprocessor("clip");
    // 1x20000: a 224 shortest edge makes the long side 4,480,000.
    let needle = RgbImage::new(1, 20_000, vec![128; 60_000]).unwrap();
    let err = clip.preprocess(&needle).unwrap_err();
    assert!(
        matches!(err, ImageError::ExtremeAspectRatio { width: 1, height: 20_000, resized_height: 4_480_000, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("aspect ratio"), "{err}");
    // 10x5000 (224x112000 after the resize) is fine with the crop (only the crop is computed) but too large
    // without one.
    let long = RgbImage::new(10, 5_000, vec![77; 150_000]).unwrap();
    assert_eq!(clip.preprocess(&long).unwrap().size, Size { height: 224, width: 224 });
    let text = String::from_utf8(read("configs/clip.json"))
        .unwrap()
        .replace(r#""do_center_crop": true"#, r#""do_center_crop": false"#);
    let no_crop = Preprocessor::from_json(&text).unwrap();
    assert!(matches!(no_crop.preprocess(&long), Err(ImageError::ExtremeAspectRatio { .. })));
}

#[test]
fn batches_stack_images_of_one_size() {
    let siglip = preprocessor("siglip");
    let a = siglip.preprocess(&image("photo.png")).unwrap();
    let b = siglip.preprocess(&image("tiny.png")).unwrap();
    let batch = PixelValues::stack(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(batch.len(), 2 * 3 * 256 * 256);
    assert_eq!(&batch[..a.data.len()], &a.data[..]);
    assert_eq!(&batch[a.data.len()..], &b.data[..]);
    let sam = preprocessor("sam2").preprocess(&image("tiny.png")).unwrap();
    assert!(PixelValues::stack(&[a, sam]).is_none());
    assert!(PixelValues::stack(&[]).is_none());
}
