//! Image embeddings end to end: the tiny CLIP and SigLIP fixtures of `tests/fixtures/vision/` (transformers folders
//! and sentence-transformers' CLIP layout) served by the real binary on `ort:cpu` with real workers. Image files go
//! in as data URLs (and over HTTP with `--allow-image-urls`), texts as texts; the vectors are compared with what
//! transformers / sentence-transformers computed for the same files (`images.json`, from
//! `scripts/fixtures/make_clip_images.py`) and texts (`reference.json`, from `scripts/fixtures/make_clip.py`).
//! Bad images and images sent to a text model are 4xx with the JSON error body; the CLI embeds images and texts.

mod common;

use std::path::PathBuf;

use base64::Engine as _;
use common::{bulkhead, need, stderr, venv_python, HttpResponse, Server};
use serde_json::{json, Value};

const MIN_COS: f32 = 0.9999;
/// The served models: name, fixture folder.
const MODELS: &[(&str, &str)] =
    &[("clip", "clip-tiny-random"), ("clip-st", "clip-tiny-random-st"), ("siglip", "siglip-tiny-random")];

fn vision(name: &str) -> PathBuf {
    common::fixture("vision").join(name)
}

fn read_json(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn rows(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect()
}

/// The image files of a fixture's `images.json` and their reference vectors.
fn image_reference(folder: &str) -> (Vec<String>, Vec<Vec<f32>>) {
    let v = read_json(vision(folder).join("images.json"));
    let names = v["images"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect();
    (names, rows(&v["image_embeddings"]))
}

/// The texts of a fixture's `reference.json` and their reference vectors.
fn text_reference(folder: &str) -> (Vec<String>, Vec<Vec<f32>>) {
    let v = read_json(vision(folder).join("reference.json"));
    let texts = v["texts"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect();
    (texts, rows(&v["text_embeddings"]))
}

fn image_path(name: &str) -> PathBuf {
    vision("images").join(name)
}

fn data_url(bytes: &[u8]) -> String {
    format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn file_url(name: &str) -> String {
    data_url(&std::fs::read(image_path(name)).unwrap())
}

fn image_part(url: &str) -> Value {
    json!({"type": "image_url", "image_url": {"url": url}})
}

fn embeddings(r: &HttpResponse) -> Vec<Vec<f32>> {
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let data = v["data"].as_array().unwrap();
    assert!(data.iter().enumerate().all(|(i, d)| d["index"] == i), "{}", r.body);
    data.iter()
        .map(|d| d["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect()
}

/// The lowest cosine of `got` against `want`, asserted at least [`MIN_COS`].
fn close(got: &[Vec<f32>], want: &[Vec<f32>], what: &str) -> f32 {
    let (cos, diff) = common::compare(got, want);
    assert!(cos >= MIN_COS, "{what}: min cosine {cos}, max abs diff {diff}");
    cos
}

fn have_runtime() -> bool {
    need(venv_python(), "the project's .venv (ONNX Runtime)").is_some()
}

fn serve(extra: &[&str]) -> Server {
    let mut args: Vec<String> = vec!["--compute-units".into(), "ort:cpu".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    for (name, folder) in MODELS {
        args.extend(["--model".into(), format!("{name}={}", vision(folder).display())]);
    }
    if let Some(minilm) = common::minilm_folder() {
        args.extend(["--model".into(), format!("minilm={}", minilm.display())]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&args, &[])
}

#[test]
fn images_and_texts_match_transformers_on_every_route_and_batch_like_single_inputs() {
    if !have_runtime() {
        return;
    }
    let server = serve(&[]);
    let mut table = vec![];
    for (name, folder) in MODELS {
        let (files, want) = image_reference(folder);
        let urls: Vec<String> = files.iter().map(|f| file_url(f)).collect();

        // Every image in one /v1/embeddings request.
        let parts: Vec<Value> = urls.iter().map(|u| image_part(u)).collect();
        let r = server.post_json("/v1/embeddings", &json!({"model": name, "input": parts}));
        let batch = embeddings(&r);
        let cos = close(&batch, &want, &format!("{name} /v1/embeddings images"));
        table.push(format!("{name:<8} images  /v1/embeddings  min cosine {cos:.7}"));
        assert_eq!(r.header("x-bulkhead-unit"), Some("ort:cpu"));
        let timing = r.header("server-timing").unwrap_or_default();
        for stage in ["decode;dur=", "preprocess;dur=", "queue;dur=", "infer;dur=", "post;dur="] {
            assert!(timing.contains(stage), "{name}: Server-Timing `{timing}` lacks {stage}");
        }

        // infinity's /embeddings_image, one image at a time: the same vectors as the batch.
        for (i, url) in urls.iter().enumerate() {
            let r = server.post_json("/embeddings_image", &json!({"model": name, "input": [url]}));
            let one = embeddings(&r);
            let d = one[0].iter().zip(&batch[i]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(d <= 1e-5, "{name}: image {} alone differs from the batch by {d}", files[i]);
        }

        // Texts through the text tower, as transformers computed them.
        let (texts, want_texts) = text_reference(folder);
        let r = server.post_json("/v1/embeddings", &json!({"model": name, "input": texts}));
        let got = embeddings(&r);
        let cos = close(&got, &want_texts, &format!("{name} texts"));
        table.push(format!("{name:<8} texts   /v1/embeddings  min cosine {cos:.7}"));

        // Texts and images mixed in one request: each to its tower, in input order.
        let input = json!([{"type": "text", "text": texts[0]}, image_part(&urls[0]), {"type": "text", "text": texts[1]}, image_part(&urls[4])]);
        let r = server.post_json("/v1/embeddings", &json!({"model": name, "input": input}));
        let mixed = embeddings(&r);
        close(&mixed, &[want_texts[0].clone(), want[0].clone(), want_texts[1].clone(), want[4].clone()], "mixed");
        assert!(r.header("server-timing").unwrap_or_default().contains("tokenize;dur="));
        // text-embeddings-inference's /embed with `{"image": URL}` items (normalised by default, as TEI does).
        let r = server.post_json("/embed", &json!({"model": name, "inputs": [{"text": texts[2]}, {"image": urls[1]}]}));
        assert_eq!(r.status, 200, "{}", r.body);
        let tei = rows(&r.json());
        close(&tei, &[want_texts[2].clone(), want[1].clone()], "/embed items");
        assert!(tei.iter().all(|v| (v.iter().map(|x| x * x).sum::<f32>().sqrt() - 1.0).abs() < 1e-4));
        let r = server.post_json("/embed", &json!({"model": name, "inputs": {"image": urls[2]}, "normalize": false}));
        assert_eq!(r.status, 200, "{}", r.body);
        close(&rows(&r.json()), &want[2..3], "/embed image");
        // base64 answers the same floats.
        let r = server
            .post_json("/embeddings_image", &json!({"model": name, "input": urls[0], "encoding_format": "base64"}));
        assert_eq!(r.status, 200, "{}", r.body);
        let b64 = r.json()["data"][0]["embedding"].as_str().unwrap().to_string();
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        let floats: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(floats, batch[0]);
    }

    // Concurrent single-image requests batch together and each gets its own image's vector.
    let (files, want) = image_reference("clip-tiny-random");
    let addr = server.addr.clone();
    let handles: Vec<_> = (0..16)
        .map(|k| {
            let (addr, file, want) = (addr.clone(), files[k % files.len()].clone(), want[k % files.len()].clone());
            std::thread::spawn(move || {
                let body = json!({"model": "clip", "input": [image_part(&file_url(&file))]}).to_string();
                let r =
                    common::http(&addr, "POST", "/v1/embeddings", &[("content-type", "application/json")], Some(&body));
                close(&embeddings(&r), &[want], &format!("concurrent {file}"));
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());

    // /v1/models says what each model takes; /metrics has the image stages.
    let models = server.request("GET", "/v1/models", &[], None).json();
    for m in models["data"].as_array().unwrap() {
        let want = if m["id"] == "minilm" { json!(["text"]) } else { json!(["text", "image"]) };
        assert_eq!(m["inputs"], want, "{m}");
    }
    let metrics = server.request("GET", "/metrics", &[], None).body;
    assert!(metrics.contains("stage=\"decode\"") && metrics.contains("stage=\"preprocess\""), "{metrics}");
    eprintln!("{}", table.join("\n"));
}

/// A PNG whose header declares `width` x `height` pixels (a valid IHDR, no pixel data: a decompression bomb's
/// header).
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let crc = crc32(&ihdr);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc.to_be_bytes());
    png
}

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

/// Serves `body` once per connection on a local port (a stand-in image host).
fn image_host(body: Vec<u8>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    addr
}

#[test]
fn bad_images_and_wrong_models_are_4xx_naming_the_problem() {
    if !have_runtime() {
        return;
    }
    let server = serve(&["--max-image-pixels", "200000", "--allow-image-urls"]);
    let photo = std::fs::read(image_path("photo.jpg")).unwrap();
    let tiff = b"II*\x00\x08\x00\x00\x00rest of a tiff".to_vec();
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("not an image", json!([image_part(&data_url(b"hello, world: no image here"))]), 422, "not an image"),
        ("unsupported format", json!([image_part(&data_url(&tiff))]), 422, "TIFF images are not supported"),
        ("truncated", json!([image_part(&data_url(&photo[..photo.len() / 3]))]), 422, "truncated"),
        ("bomb", json!([image_part(&data_url(&png_header(100_000, 100_000)))]), 422, "--max-image-pixels"),
        ("past the limit", json!([image_part(&file_url("large.jpg"))]), 422, "over the limit of 200000"),
        ("no base64", json!([image_part("data:image/png,rawbytes")]), 422, "not base64"),
        ("bad base64", json!([image_part("data:image/png;base64,@@@@")]), 422, "not valid base64"),
        (
            "not an image type",
            json!([image_part("data:text/plain;base64,aGVsbG8=")]),
            422,
            "`text/plain`, not an image",
        ),
        ("not a URL", json!([image_part("a photo of a cat")]), 422, "is not an image URL"),
        ("unknown part", json!([{"type": "input_audio", "input_audio": {}}]), 422, "input"),
        (
            "second input named",
            json!([image_part(&file_url("tiny.png")), image_part(&data_url(b"zz"))]),
            422,
            "input 1",
        ),
    ];
    for (what, input, status, needle) in cases {
        let r = server.post_json("/v1/embeddings", &json!({"model": "clip", "input": input}));
        check_error(&r, status, needle, what);
    }
    // infinity's route: a text where a URL belongs, and a model that takes no images.
    let r = server.post_json("/embeddings_image", &json!({"model": "clip", "input": ["a photo of a cat"]}));
    check_error(&r, 422, "is not an image URL", "text to /embeddings_image");
    let r = server.post_json("/embeddings_image", &json!({"model": "clip", "input": []}));
    check_error(&r, 422, "send at least one image", "no image");
    if common::minilm_folder().is_some() {
        let r = server
            .post_json("/v1/embeddings", &json!({"model": "minilm", "input": [image_part(&file_url("tiny.png"))]}));
        check_error(&r, 400, "image-text model", "image to a text model");
        let r = server.post_json("/embeddings_image", &json!({"model": "minilm", "input": file_url("tiny.png")}));
        check_error(&r, 400, "takes texts only", "image route on a text model");
        let r = server.post_json("/embed", &json!({"model": "minilm", "inputs": [{"image": file_url("tiny.png")}]}));
        check_error(&r, 400, "image-text model", "/embed image on a text model");
    } else {
        bulkhead_testkit::skip("all-MiniLM-L6-v2 is absent: the image-to-text-model refusal is unchecked");
    }

    // With --allow-image-urls, an http URL is fetched; a dead host is a 4xx naming the URL.
    let host = image_host(std::fs::read(image_path("small.bmp")).unwrap());
    let (files, want) = image_reference("clip-tiny-random");
    let i = files.iter().position(|f| f == "small.bmp").unwrap();
    let r =
        server.post_json("/embeddings_image", &json!({"model": "clip", "input": format!("http://{host}/small.bmp")}));
    close(&embeddings(&r), &want[i..=i], "fetched small.bmp");
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let r = server.post_json("/embeddings_image", &json!({"model": "clip", "input": format!("http://{dead}/x.png")}));
    check_error(&r, 422, &format!("fetching http://{dead}/x.png"), "dead host");

    // Without --allow-image-urls an http URL is refused, naming the flag.
    drop(server);
    let server = Server::start(
        &["--compute-units", "ort:cpu", "--model", &format!("clip={}", vision("clip-tiny-random").display())],
        &[],
    );
    let r = server.post_json("/v1/embeddings", &json!({"input": [image_part(&format!("http://{host}/small.bmp"))]}));
    check_error(&r, 422, "--allow-image-urls", "http URL without the flag");
}

fn check_error(r: &HttpResponse, status: u16, needle: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
    let v = r.json();
    let message = v["error"]["message"].as_str().unwrap_or_else(|| panic!("{what}: no error.message: {}", r.body));
    assert!(v["error"]["type"].is_string(), "{what}: no error.type: {}", r.body);
    assert!(message.contains(needle), "{what}: `{message}` does not say `{needle}`");
}

#[test]
fn the_cli_embeds_images_and_texts_and_refuses_bad_ones() {
    if !have_runtime() {
        return;
    }
    for folder in ["clip-tiny-random", "clip-tiny-random-st", "siglip-tiny-random"] {
        let model = vision(folder);
        let (files, want) = image_reference(folder);
        let paths: Vec<String> = files.iter().map(|f| image_path(f).display().to_string()).collect();
        let mut args =
            vec!["embed", "--json", "--compute-units", "ort:cpu", "--model", model.to_str().unwrap(), "--image"];
        args.extend(paths.iter().map(String::as_str));
        let out = bulkhead(&args, &[]);
        assert!(out.status.success(), "{folder}: {}", stderr(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!((v["unit"].as_str(), v["inputs"].as_str()), (Some("ort:cpu"), Some("image")), "{v}");
        close(&common::vectors(&v), &want, &format!("{folder} CLI images"));

        // Texts on an image-text model: the text tower.
        let (texts, want) = text_reference(folder);
        let mut args = vec!["embed", "--json", "--compute-units", "ort:cpu", "--model", model.to_str().unwrap(), "--"];
        args.extend(texts.iter().map(String::as_str));
        let out = bulkhead(&args, &[]);
        assert!(out.status.success(), "{folder}: {}", stderr(&out));
        close(&common::vectors(&serde_json::from_slice(&out.stdout).unwrap()), &want, &format!("{folder} CLI texts"));
    }
    let clip = vision("clip-tiny-random");
    let clip = clip.to_str().unwrap();
    let truncated = tempfile::NamedTempFile::new().unwrap();
    let photo = std::fs::read(image_path("photo.jpg")).unwrap();
    std::fs::write(truncated.path(), &photo[..photo.len() / 3]).unwrap();
    let (large, tiny) = (image_path("large.jpg"), image_path("tiny.png"));
    let bad = [
        (vec!["--image", truncated.path().to_str().unwrap()], "truncated"),
        (vec!["--image", large.to_str().unwrap(), "--max-image-pixels", "1000"], "--max-image-pixels"),
        (vec!["--image", tiny.to_str().unwrap(), "--", "a text"], "not both"),
    ];
    for (extra, needle) in bad {
        let mut args = vec!["embed", "--compute-units", "ort:cpu", "--model", clip];
        args.extend(extra);
        let out = bulkhead(&args, &[]);
        assert_eq!(out.status.code(), Some(2), "{needle}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{needle}: {}", stderr(&out));
    }
    if let Some(minilm) = common::minilm_folder() {
        let out = bulkhead(
            &["embed", "--model", minilm.to_str().unwrap(), "--image", image_path("tiny.png").to_str().unwrap()],
            &[],
        );
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("image-text model"), "{}", stderr(&out));
    }
}

#[test]
fn the_official_openai_client_embeds_images() {
    let Some(python) = need(venv_python(), "the project's .venv") else { return };
    let has_openai = std::process::Command::new(&python).args(["-c", "import openai"]).output();
    if !has_openai.is_ok_and(|o| o.status.success()) {
        bulkhead_testkit::skip("the openai package is absent (run scripts/setup.sh --test)");
        return;
    }
    let server = Server::start(
        &["--compute-units", "ort:cpu", "--model", &format!("clip={}", vision("clip-tiny-random").display())],
        &[],
    );
    let out = std::process::Command::new(python)
        .arg(common::repo().join("tests/python/openai_images.py"))
        .args([&format!("{}/v1", server.url()), "clip"])
        .arg(vision("clip-tiny-random"))
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    eprintln!("{text}");
}
