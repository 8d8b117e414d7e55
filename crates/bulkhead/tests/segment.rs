//! Segmentation end to end: `bulkhead serve` on the tiny random-weight SAM2 fixture
//! (`tests/fixtures/vision/sam2-tiny-random/`, from `scripts/fixtures/make_sam2.py`) with real workers on ONNX
//! Runtime, against what transformers answers for the same PNG files and prompts (`e2e.json`, from
//! `scripts/fixtures/make_sam2_e2e.py`): masks at the original size as COCO RLE, JSON and multipart, PNG masks, the
//! embedding reused by `image_id`, a worker that aborts on a click (the click is still answered, the restarted
//! worker asks for the image again), every bad input a 4xx naming the problem, and `bulkhead segment`.

mod common;

use std::path::PathBuf;

use base64::Engine as _;
use bulkhead_image::{CocoRle, Mask};
use common::{bulkhead, fixture, need, stderr, venv_python, Server};
use serde_json::{json, Value};

fn folder() -> PathBuf {
    fixture("vision").join("sam2-tiny-random")
}

fn e2e() -> Value {
    serde_json::from_str(&std::fs::read_to_string(folder().join("e2e.json")).unwrap()).unwrap()
}

fn png(i: usize) -> Vec<u8> {
    std::fs::read(folder().join(format!("image{i}.png"))).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// ONNX Runtime comes from the project's .venv.
fn ready() -> bool {
    need(venv_python(), "the project's .venv with ONNX Runtime (scripts/setup.sh)").is_some()
}

fn serve(extra: &[&str], env: &[(&str, &str)]) -> Server {
    let model = folder();
    let mut args = vec!["--model", model.to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start(&args, env)
}

/// One `Server-Timing` entry in milliseconds.
fn timing(r: &common::HttpResponse, name: &str) -> f64 {
    let header = r.header("server-timing").unwrap_or_else(|| panic!("no Server-Timing: {:?}", r.headers));
    header
        .split(',')
        .find_map(|e| e.trim().strip_prefix(&format!("{name};dur=")).map(|v| v.parse::<f64>().unwrap()))
        .unwrap_or_else(|| panic!("no `{name}` in Server-Timing: {header}"))
}

/// The masks of a response (RLE or PNG) as masks.
fn masks(v: &Value) -> Vec<Mask> {
    v["masks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match (m.get("rle"), m.get("png")) {
            (Some(rle), _) => Mask::from_rle(&serde_json::from_value::<CocoRle>(rle.clone()).unwrap()).unwrap(),
            (_, Some(png)) => {
                let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
                let img = bulkhead_image::decode(&bytes, Default::default()).unwrap().image;
                let size = bulkhead_image::Size { height: img.height(), width: img.width() };
                Mask::from_fn(size, |i| img.as_raw()[i * 3] == 255)
            }
            _ => panic!("a mask that is neither rle nor png: {m}"),
        })
        .collect()
}

fn reference_masks(case: &Value) -> Vec<Mask> {
    case["masks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rle| Mask::from_rle(&serde_json::from_value::<CocoRle>(rle.clone()).unwrap()).unwrap())
        .collect()
}

/// (flipped pixels, lowest IoU) of `got` against the reference case; panics on a count or size mismatch.
fn compare(what: &str, got: &[Mask], case: &Value) -> (usize, f64) {
    let want = reference_masks(case);
    assert_eq!(got.len(), want.len(), "{what}: mask count");
    let mut flipped = 0;
    let mut iou = 1.0f64;
    for (g, w) in got.iter().zip(&want) {
        iou = iou.min(g.iou(w).unwrap_or_else(|| panic!("{what}: size {:?} vs {:?}", g.size(), w.size())));
        flipped += g.as_raw().iter().zip(w.as_raw()).filter(|(a, b)| a != b).count();
    }
    (flipped, iou)
}

fn request_of(case: &Value) -> Value {
    let mut body = json!({"multimask_output": case["multimask_output"]});
    if !case["points"].is_null() {
        body["points"] = case["points"].clone();
        body["point_labels"] = case["point_labels"].clone();
    }
    if !case["box"].is_null() {
        body["boxes"] = json!([case["box"]]);
    }
    // A refining click: an earlier answer's low-resolution logits as the mask prompt.
    if let Some(mask) = case.get("mask_input") {
        body["mask_input"] = mask.clone();
    }
    if case.get("low_res_logits").is_some() {
        body["return_low_res_logits"] = true.into();
    }
    body
}

/// Little-endian f32 values from base64 (`low_res_logits`, `mask_input`).
fn f32s_b64(v: &Value) -> Vec<f32> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap();
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// A POST with a binary body (multipart), over a fresh connection.
fn post_bytes(addr: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: {content_type}\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = vec![];
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}")))
}

fn multipart(parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "bulkhead-test-boundary-7f3a";
    let mut body = vec![];
    for (name, value) in parts {
        let filename = if *name == "file" { "; filename=\"image.png\"" } else { "" };
        body.extend(
            format!("--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"{filename}\r\n\r\n").bytes(),
        );
        body.extend_from_slice(value);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn masks_match_transformers_and_later_clicks_reuse_the_embedding() {
    if !ready() {
        return;
    }
    let server = serve(&["--compute-units", "ort:cpu"], &[]);
    let reference = e2e();
    println!("| image | prompt | multimask | masks | flipped pixels | lowest IoU | max IoU-score diff | encode ms |");
    println!("|---|---|---|---|---|---|---|---|");
    for (i, image) in reference["images"].as_array().unwrap().iter().enumerate() {
        let bytes = png(i);
        let mut image_id: Option<String> = None;
        for case in image["cases"].as_array().unwrap() {
            let mut body = request_of(case);
            match &image_id {
                None => body["image"] = format!("data:image/png;base64,{}", b64(&bytes)).into(),
                Some(id) => body["image_id"] = id.clone().into(),
            }
            let r = server.post_json("/v1/segment", &body);
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.header("x-bulkhead-unit"), Some("ort:cpu"));
            let v = r.json();
            assert_eq!(
                (v["width"].as_u64(), v["height"].as_u64()),
                (image["width"].as_u64(), image["height"].as_u64())
            );
            let what = format!("image{i} {} multimask={}", case["name"], case["multimask_output"]);
            let (flipped, iou) = compare(&what, &masks(&v), case);
            let scores: Vec<f64> = v["iou_scores"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            let want: Vec<f64> = case["iou_scores"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            let score_diff = scores.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            let encode = timing(&r, "encode");
            println!(
                "| image{i} | {} | {} | {} | {flipped} | {iou:.6} | {score_diff:.1e} | {encode:.2} |",
                case["name"].as_str().unwrap(),
                case["multimask_output"],
                scores.len()
            );
            assert!(iou >= 0.99, "{what}: IoU {iou} against transformers");
            assert!(score_diff <= 1e-3, "{what}: IoU scores {scores:?} vs {want:?}");
            if let Some(want) = case.get("low_res_logits") {
                // The low-resolution logits a client sends back as `mask_input`.
                let (got, want) = (f32s_b64(&v["low_res_logits"][0]), f32s_b64(want));
                let side = v["low_res_side"].as_u64().unwrap() as usize;
                assert_eq!((got.len(), want.len()), (side * side, side * side), "{what}");
                let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                assert!(diff <= 1e-3, "{what}: low-resolution logits differ by {diff}");
            } else {
                assert!(v.get("low_res_logits").is_none(), "{what}: logits only when asked for");
            }
            match &image_id {
                None => {
                    assert!(encode > 0.0 && timing(&r, "decode") > 0.0, "{what}: the first click encodes");
                    assert_eq!(v["embedding_cached"], false);
                    image_id = Some(v["image_id"].as_str().unwrap().to_string());
                }
                Some(id) => {
                    assert_eq!(v["image_id"].as_str(), Some(id.as_str()));
                    assert_eq!(encode, 0.0, "{what}: a later click reuses the embedding");
                    assert_eq!(v["embedding_cached"], true);
                }
            }
        }
    }

    // A mask prompt of the wrong size is refused, naming the size the model takes.
    let mask = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([0u8; 12])
    };
    let r = server.post_json("/v1/segment", &json!({"image": b64(&png(0)), "points": [[5, 5]], "mask_input": mask}));
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("low-resolution masks are") && r.body.contains("low_res_logits"), "{}", r.body);
    let r = server.post_json("/v1/segment", &json!({"image": b64(&png(0)), "points": [[5, 5]], "mask_input": "%%"}));
    assert_eq!(r.status, 422, "{}", r.body);

    // The image sent again equals the click by image_id: same masks, no decoding, no encoding.
    let case = &reference["images"][0]["cases"][0];
    let mut by_id = request_of(case);
    let first = server.post_json("/v1/segment", &json!({"image": b64(&png(0)), "points": [[5, 5]]})).json();
    by_id["image_id"] = first["image_id"].clone();
    let mut by_image = request_of(case);
    by_image["image"] = b64(&png(0)).into();
    let (a, b) = (server.post_json("/v1/segment", &by_id), server.post_json("/v1/segment", &by_image));
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.json()["masks"], b.json()["masks"]);
    assert_eq!(a.json()["iou_scores"], b.json()["iou_scores"]);
    assert_eq!((timing(&b, "decode"), timing(&b, "encode")), (0.0, 0.0), "{:?}", b.header("server-timing"));

    // PNG masks, and multipart with the file as a part: the same masks.
    let mut png_body = by_id.clone();
    png_body["mask_format"] = "png".into();
    let p = server.post_json("/v1/segment", &png_body);
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.json()["masks"][0]["png"].is_string());
    assert_eq!(compare("png masks", &masks(&p.json()), case).0, compare("rle", &masks(&a.json()), case).0);
    let points = case["points"].to_string();
    let labels = case["point_labels"].to_string();
    let (ct, body) = multipart(&[
        ("file", &png(0)),
        ("points", points.as_bytes()),
        ("point_labels", labels.as_bytes()),
        ("multimask_output", b"true"),
    ]);
    let (status, m) = post_bytes(&server.addr, "/v1/segment", &ct, &body);
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["masks"], a.json()["masks"], "multipart answers as JSON does");

    // The route is in the OpenAPI document; the stages are in /metrics.
    let doc = server.request("GET", "/openapi.json", &[], None).json();
    assert!(doc["paths"]["/v1/segment"]["post"].is_object());
    let metrics = server.request("GET", "/metrics", &[], None).body;
    assert!(metrics.contains("stage=\"decode_masks\"") && metrics.contains("route=\"/v1/segment\""), "{metrics}");
}

#[test]
fn a_worker_that_aborts_on_a_click_costs_the_click_nothing() {
    if !ready() {
        return;
    }
    // ort:cpu's first worker aborts on its second prediction after the start-up probe: the second click, which
    // sends only the image_id. One crash quarantines a unit while another is eligible, so the chain walks on to
    // candle:cpu, which refuses SAM2 with its reason; ort:cpu comes back as the floor, and its fresh worker (no
    // embedding) asks for the image, which the server still holds.
    let faults = r#"[{"unit": "ort:cpu", "kind": "abort", "after": 2, "generations": [0]}]"#;
    let server =
        serve(&["--compute-units", "ort:cpu,candle:cpu", "--quarantine-crashes", "1"], &[("BULKHEAD_FAULTS", faults)]);
    let reference = e2e();
    let case = &reference["images"][0]["cases"][0];
    let mut body = request_of(case);
    body["image"] = b64(&png(0)).into();
    let first = server.post_json("/v1/segment", &body);
    assert_eq!(first.status, 200, "{}", first.body);
    let mut click = request_of(case);
    click["image_id"] = first.json()["image_id"].clone();
    let second = server.post_json("/v1/segment", &click);
    assert_eq!(second.status, 200, "{}\n{}", second.body, server.stderr());
    assert_eq!(second.json()["masks"], first.json()["masks"], "the same answer after the crash");
    assert!(timing(&second, "encode") > 0.0, "the restarted worker encoded the image again");
    let unit = second.header("x-bulkhead-unit").unwrap().to_string();
    let units = server.request("GET", "/units", &[], None).json();
    let view = |name: &str| {
        units["models"]["sam2-tiny-random"]["units"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["unit"] == name)
            .cloned()
            .unwrap()
    };
    let ort = view("ort:cpu");
    assert_eq!(ort["crashes"], 1, "{ort}");
    assert!(ort["last_exit"].as_str().unwrap_or_default().contains("SIGABRT"), "{ort}");
    let candle = view("candle:cpu");
    println!("answered by {unit}; ort:cpu {ort}; candle:cpu {candle}");
    assert_eq!(unit, "ort:cpu", "the only unit of this chain that runs SAM2 answered");
    assert_eq!(candle["state"], "unavailable", "{candle}");
    assert!(candle["reason"].as_str().unwrap_or_default().contains("SAM2"), "{candle}");
    // The server is up and the next click is answered from the cache again.
    let third = server.post_json("/v1/segment", &click);
    assert_eq!(third.status, 200);
    assert_eq!(timing(&third, "encode"), 0.0);
}

#[test]
fn an_onnx_community_pair_folder_serves_the_same_masks() {
    if !ready() {
        return;
    }
    use bulkhead_graph::sam2::{export_sam2, Sam2Graph};
    // The layout of the ONNX community's SAM2 exports: config and processor files, the two graphs under onnx/, no
    // safetensors (so the graphs served are these).
    let dir = tempfile::tempdir().unwrap();
    let pair = dir.path().join("sam2-pair");
    std::fs::create_dir_all(pair.join("onnx")).unwrap();
    for f in ["config.json", "preprocessor_config.json", "processor_config.json"] {
        std::fs::copy(folder().join(f), pair.join(f)).unwrap();
    }
    let model = bulkhead_core::ModelFiles::open(&folder()).unwrap();
    export_sam2(&model, Sam2Graph::VisionEncoder, &pair.join("onnx/vision_encoder.onnx")).unwrap();
    export_sam2(&model, Sam2Graph::PromptEncoderMaskDecoder, &pair.join("onnx/prompt_encoder_mask_decoder.onnx"))
        .unwrap();
    let server = Server::start(&["--model", pair.to_str().unwrap(), "--compute-units", "ort:cpu"], &[]);
    let reference = e2e();
    let case = &reference["images"][1]["cases"][2];
    let mut body = request_of(case);
    body["image"] = b64(&png(1)).into();
    let r = server.post_json("/v1/segment", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let (flipped, iou) = compare("onnx pair", &masks(&r.json()), case);
    println!("onnx pair folder: {flipped} flipped pixels, IoU {iou}");
    assert!(iou >= 0.99, "IoU {iou}");
}

/// A PNG whose header declares `width` x `height` (valid CRC; no pixel data follows).
fn png_header(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(13u32.to_be_bytes());
    out.extend(&ihdr);
    out.extend(crc32(&ihdr).to_be_bytes());
    out.extend([0, 0, 0, 0]);
    out.extend(b"IEND");
    out.extend(crc32(b"IEND").to_be_bytes());
    out
}

#[test]
fn bad_input_is_a_4xx_naming_the_problem() {
    if !ready() {
        return;
    }
    let server = serve(&["--compute-units", "ort:cpu", "--max-image-pixels", "4000000"], &[]);
    let image = b64(&png(0));
    let truncated = b64(&png(0)[..png(0).len() / 2]);
    let one_pixel = {
        let mut out = vec![];
        use image_encode::write_png;
        write_png(&mut out);
        out
    };
    let bomb = b64(&png_header(50_000, 50_000));
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("not an image", json!({"image": b64(b"hello, this is text"), "points": [[1, 1]]}), 422, "not an image"),
        ("zero bytes", json!({"image": "", "points": [[1, 1]]}), 422, "empty"),
        ("truncated", json!({"image": truncated, "points": [[1, 1]]}), 422, "truncated"),
        ("bomb", json!({"image": bomb, "points": [[1, 1]]}), 413, "--max-image-pixels"),
        ("not base64", json!({"image": "***", "points": [[1, 1]]}), 422, "base64"),
        ("outside", json!({"image": image, "points": [[500, 10]]}), 422, "outside the 200x150 image"),
        ("no prompt", json!({"image": image}), 422, "no prompt"),
        ("two boxes", json!({"image": image, "boxes": [[0, 0, 5, 5], [1, 1, 9, 9]]}), 422, "one box per request"),
        ("reversed box", json!({"image": image, "boxes": [[50, 50, 5, 5]]}), 422, "x0 <= x1"),
        ("labels", json!({"image": image, "points": [[1, 1]], "point_labels": [1, 0]}), 422, "point labels"),
        (
            "unknown id",
            json!({"image_id": "0123456789abcdef0123456789abcdef", "points": [[1, 1]]}),
            422,
            "unknown `image_id`",
        ),
        ("no image", json!({"points": [[1, 1]]}), 422, "no image"),
        ("both", json!({"image": image, "image_id": "x", "points": [[1, 1]]}), 422, "not both"),
        ("point shape", json!({"image": image, "points": [[1, 2, 3]]}), 422, "point 0 has 3 numbers"),
        ("box shape", json!({"image": image, "boxes": [[1, 2, 3]]}), 422, "box 0 has 3 numbers"),
        ("unknown field", json!({"image": image, "point": [[1, 1]]}), 422, "unknown field"),
        ("unknown model", json!({"model": "nope", "image": image, "points": [[1, 1]]}), 404, "nope"),
    ];
    for (name, body, status, needle) in cases {
        let r = server.post_json("/v1/segment", &body);
        assert_eq!(r.status, status, "{name}: {}", r.body);
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.contains(needle), "{name}: `{message}` does not say `{needle}`");
        println!("{name}: {status} {message}");
    }
    let malformed = server.request("POST", "/v1/segment", &[("content-type", "application/json")], Some("{\"image\":"));
    assert_eq!(malformed.status, 400);
    let (ct, body) = multipart(&[("file", &png(0)), ("pointz", b"[[1,1]]")]);
    let (status, v) = post_bytes(&server.addr, "/v1/segment", &ct, &body);
    assert_eq!(status, 422, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("pointz"));
    // A 1x1 image is an image: one pixel, one mask of one pixel; a point past it is refused.
    let r = server.post_json("/v1/segment", &json!({"image": b64(&one_pixel), "points": [[0.5, 0.5]]}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["masks"][0]["rle"]["size"], json!([1, 1]));
    let r = server.post_json("/v1/segment", &json!({"image": b64(&one_pixel), "points": [[2, 2]]}));
    assert_eq!(r.status, 422);
    // Still serving.
    let ok = server.post_json("/v1/segment", &json!({"image": image, "points": [[80, 75]]}));
    assert_eq!(ok.status, 200, "{}", ok.body);
}

/// A 1x1 RGB PNG, written with the image crate's encoder through bulkhead-image's mask writer.
mod image_encode {
    pub fn write_png(out: &mut Vec<u8>) {
        let size = bulkhead_image::Size { height: 1, width: 1 };
        out.extend(bulkhead_image::Mask::from_fn(size, |_| true).to_png());
    }
}

#[test]
fn the_command_segments_an_image_and_writes_the_mask() {
    if !ready() {
        return;
    }
    let model = folder();
    let reference = e2e();
    let case = reference["images"][0]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "one_point" && c["multimask_output"] == false)
        .unwrap()
        .clone();
    let p = &case["points"][0];
    let point = format!("{},{},1", p[0], p[1]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mask.png");
    let image = folder().join("image0.png");
    let args = [
        "segment",
        "--model",
        model.to_str().unwrap(),
        "--compute-units",
        "candle:cpu,ort:cpu",
        image.to_str().unwrap(),
        "--point",
        &point,
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    let o = bulkhead(&args, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["unit"], "ort:cpu", "candle:cpu refuses SAM2 and the chain walks on: {v}");
    assert_eq!((v["width"].as_u64(), v["height"].as_u64()), (Some(200), Some(150)));
    let (flipped, iou) = compare("bulkhead segment", &masks(&v), &case);
    println!("bulkhead segment: {flipped} flipped pixels, IoU {iou}");
    assert!(iou >= 0.99, "IoU {iou}");
    let written = bulkhead_image::decode(&std::fs::read(&out).unwrap(), Default::default()).unwrap().image;
    let size = bulkhead_image::Size { height: written.height(), width: written.width() };
    let from_png = Mask::from_fn(size, |i| written.as_raw()[i * 3] == 255);
    assert_eq!(from_png, masks(&v)[0], "--out holds the answered mask");

    // Bad input: exit 2 with one line naming the problem.
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not an image").unwrap();
    let bad = |extra: &[&str], image: &str| {
        let mut a = vec!["segment", "--model", model.to_str().unwrap(), "--compute-units", "ort:cpu", image];
        a.extend_from_slice(extra);
        bulkhead(&a, &[])
    };
    for (o, needle) in [
        (bad(&["--point", "1,1"], text.to_str().unwrap()), "not an image"),
        (bad(&["--point", "900,1"], image.to_str().unwrap()), "outside"),
        (bad(&[], image.to_str().unwrap()), "no prompt"),
    ] {
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains(needle) && e.trim().lines().count() == 1, "{e}");
    }
    let o = bad(&["--point", "1,1,7"], image.to_str().unwrap());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("label 7 is not 1 (foreground) or 0 (background)"), "{}", stderr(&o));
}
