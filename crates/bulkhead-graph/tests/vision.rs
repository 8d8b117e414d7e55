//! The CLIP and SigLIP tower graphs of the fixtures in `tests/fixtures/vision/` (tiny random-weight models made by
//! `scripts/fixtures/make_clip.py`) against what transformers (and, for the sentence-transformers layout,
//! sentence-transformers) computed for the same pixel values and token ids, on ONNX Runtime CPU; batches against one
//! input at a time; the errors. Tests that need the ONNX Runtime library skip with the reason when it is absent.

mod common;

use std::path::{Path, PathBuf};

use bulkhead_graph::{
    build_cached, build_tower_cached, export_tower, tower_model_files, tower_spec, BuildOptions, GraphError, Tower,
};
use common::{compare, ort_env};
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;

const MIN_COS: f32 = 0.9999;
const MAX_DIFF: f32 = 1e-4;

/// Every fixture folder, with its reference beside it.
const FIXTURES: &[&str] = &["clip-tiny-random", "clip-tiny-random-bf16", "clip-tiny-random-st", "siglip-tiny-random"];

fn fixture(name: &str) -> PathBuf {
    bulkhead_testkit::fixture("vision").join(name)
}

struct Reference {
    texts: Vec<String>,
    /// Per text, as the tokenizer gave them (CLIP: unpadded; SigLIP: padded to the maximum length).
    input_ids: Vec<Vec<i64>>,
    attention_mask: Vec<Vec<i64>>,
    text_embeddings: Vec<Vec<f32>>,
    /// `[images, 3, side, side]` row-major.
    pixels: Vec<f32>,
    pixel_shape: Vec<usize>,
    image_embeddings: Vec<Vec<f32>>,
}

fn reference(folder: &Path) -> Reference {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("reference.json")).unwrap()).unwrap();
    let rows = |k: &str| -> Vec<Vec<f64>> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
            .collect()
    };
    let ints = |k: &str| rows(k).into_iter().map(|r| r.into_iter().map(|x| x as i64).collect()).collect();
    let floats = |k: &str| rows(k).into_iter().map(|r| r.into_iter().map(|x| x as f32).collect()).collect();
    let file = folder.join(v["pixel_values"]["file"].as_str().unwrap());
    let bytes = std::fs::read(&file).unwrap();
    let pixels: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let pixel_shape: Vec<usize> =
        v["pixel_values"]["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    assert_eq!(pixels.len(), pixel_shape.iter().product::<usize>(), "{}", file.display());
    Reference {
        texts: v["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect(),
        input_ids: ints("input_ids"),
        attention_mask: ints("attention_mask"),
        text_embeddings: floats("text_embeddings"),
        pixels,
        pixel_shape,
        image_embeddings: floats("image_embeddings"),
    }
}

fn session(path: &Path) -> Session {
    common::session(ort_env().unwrap(), path, 1)
}

fn rows_of(data: &[f32], n: usize) -> Vec<Vec<f32>> {
    let dim = data.len() / n;
    data.chunks_exact(dim).map(<[f32]>::to_vec).collect()
}

/// `image_embeds` of `images` images of `pixels`.
fn embed_images(s: &mut Session, pixels: &[f32], shape: &[usize]) -> Vec<Vec<f32>> {
    let input = TensorRef::from_array_view((shape.to_vec(), pixels)).unwrap();
    let out = s.run(vec![("pixel_values", SessionInputValue::from(input))]).unwrap();
    let (_, data) = out["image_embeds"].try_extract_tensor::<f32>().unwrap();
    rows_of(data, shape[0])
}

/// `text_embeds` of `ids` right-padded with `pad` to the longest (mask 0 on the padding).
fn embed_texts(s: &mut Session, ids: &[Vec<i64>], masks: &[Vec<i64>], pad: i64) -> Vec<Vec<f32>> {
    let seq = ids.iter().map(Vec::len).max().unwrap();
    let b = ids.len();
    let (mut flat_ids, mut flat_mask) = (vec![pad; b * seq], vec![0i64; b * seq]);
    for (i, (r, m)) in ids.iter().zip(masks).enumerate() {
        flat_ids[i * seq..i * seq + r.len()].copy_from_slice(r);
        flat_mask[i * seq..i * seq + m.len()].copy_from_slice(m);
    }
    let ids = TensorRef::from_array_view(([b, seq], flat_ids.as_slice())).unwrap();
    let mask = TensorRef::from_array_view(([b, seq], flat_mask.as_slice())).unwrap();
    let out = s.run(vec![("input_ids", SessionInputValue::from(ids)), ("attention_mask", mask.into())]).unwrap();
    let (_, data) = out["text_embeds"].try_extract_tensor::<f32>().unwrap();
    rows_of(data, b)
}

fn have_ort() -> bool {
    match ort_env() {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipping: ONNX Runtime is unavailable: {e}");
            false
        }
    }
}

/// The end-of-text id CLIP's tokenizer pads with (the last id of each CLIP reference row), or SigLIP's pad.
fn pad_id(r: &Reference) -> i64 {
    *r.input_ids[0].last().unwrap()
}

#[test]
fn every_tower_matches_transformers_and_batches_equal_single_inputs() {
    if !have_ort() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let opts = BuildOptions::default();
    let mut table = vec![];
    for name in FIXTURES {
        let folder = fixture(name);
        let r = reference(&folder);
        let model = tower_model_files(&folder).unwrap();

        let vision = build_tower_cached(&model, Tower::Vision, &opts, cache.path()).unwrap();
        let mut s = session(&vision.path);
        let got = embed_images(&mut s, &r.pixels, &r.pixel_shape);
        let (cos, diff) = compare(&got, &r.image_embeddings);
        table.push(format!("{name:<22} vision  min cosine {cos:.7}  max abs diff {diff:.1e}"));
        assert!(cos >= MIN_COS && diff <= MAX_DIFF, "{name} vision: cosine {cos}, diff {diff}");
        let per_image: usize = r.pixel_shape[1..].iter().product();
        for (i, want) in got.iter().enumerate() {
            let mut shape = r.pixel_shape.clone();
            shape[0] = 1;
            let one = embed_images(&mut s, &r.pixels[i * per_image..(i + 1) * per_image], &shape);
            assert_eq!(&one[0], want, "{name}: image {i} alone differs from the batch");
        }

        let text = build_tower_cached(&model, Tower::Text, &opts, cache.path()).unwrap();
        let mut s = session(&text.path);
        let got = embed_texts(&mut s, &r.input_ids, &r.attention_mask, pad_id(&r));
        let (cos, diff) = compare(&got, &r.text_embeddings);
        table.push(format!("{name:<22} text    min cosine {cos:.7}  max abs diff {diff:.1e}"));
        assert!(cos >= MIN_COS && diff <= MAX_DIFF, "{name} text: cosine {cos}, diff {diff}");
        for (i, want) in got.iter().enumerate() {
            let one = embed_texts(&mut s, &r.input_ids[i..=i], &r.attention_mask[i..=i], pad_id(&r));
            let d = one[0].iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(d <= 1e-6, "{name}: text {i} alone differs from the padded batch by {d}");
        }
        assert!(build_tower_cached(&model, Tower::Text, &opts, cache.path()).unwrap().cache_hit);
    }
    eprintln!("{}", table.join("\n"));
}

#[test]
fn the_tokenizer_json_gives_the_reference_ids() {
    // The Rust tokenizers crate reads the fixtures' tokenizer.json as transformers does (CLIP's byte-level BPE with
    // `</w>`, SigLIP's stand-in padded to its maximum length).
    for (name, max, pad_to_max) in [("clip-tiny-random", 77, false), ("siglip-tiny-random", 16, true)] {
        let folder = fixture(name);
        let r = reference(&folder);
        let spec = tower_spec(&tower_model_files(&folder).unwrap()).unwrap();
        assert_eq!((spec.max_text_tokens, spec.pad_text_to_max), (max, pad_to_max), "{name}");
        let mut tok = tokenizers::Tokenizer::from_file(folder.join("tokenizer.json")).unwrap();
        tok.with_truncation(Some(tokenizers::TruncationParams { max_length: max, ..Default::default() })).unwrap();
        for (text, want) in r.texts.iter().zip(&r.input_ids) {
            let e = tok.encode(text.as_str(), true).unwrap();
            let mut ids: Vec<i64> = e.get_ids().iter().map(|&x| i64::from(x)).collect();
            if pad_to_max {
                ids.resize(max, pad_id(&r));
            }
            assert_eq!(&ids, want, "{name}: {text:?}");
        }
    }
}

#[test]
fn the_sentence_transformers_layout_resolves_to_its_module_and_exports() {
    let st = fixture("clip-tiny-random-st");
    let model = tower_model_files(&st).unwrap();
    assert_eq!(model.config.as_deref(), Some(st.join("0_CLIPModel/config.json").as_path()));
    let spec = tower_spec(&model).unwrap();
    assert_eq!((spec.family, spec.image_size, spec.image_dim, spec.text_dim), ("clip", 32, 16, 16));
    if !have_ort() {
        return;
    }
    // A self-contained export computes what the cached graph computes.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("vision.onnx");
    export_tower(&model, Tower::Vision, &BuildOptions::default(), &out).unwrap();
    let r = reference(&st);
    let got = embed_images(&mut session(&out), &r.pixels, &r.pixel_shape);
    let (cos, diff) = compare(&got, &r.image_embeddings);
    assert!(cos >= MIN_COS && diff <= MAX_DIFF, "export: cosine {cos}, diff {diff}");
}

/// A copy of the CLIP fixture with config.json edited by `edit`.
fn edited_clip(edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("clip-tiny-random");
    for f in ["model.safetensors", "tokenizer.json", "tokenizer_config.json", "config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let path = dir.path().join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
    dir
}

fn tower_error(folder: &Path, tower: Tower) -> (GraphError, String) {
    let cache = tempfile::tempdir().unwrap();
    let model = tower_model_files(folder).unwrap();
    let e = build_tower_cached(&model, tower, &BuildOptions::default(), cache.path()).unwrap_err();
    assert!(std::fs::read_dir(cache.path()).unwrap().next().is_none(), "a failed build left files in the cache");
    let s = e.to_string();
    (e, s)
}

#[test]
fn errors_name_the_file_and_the_field() {
    // A tensor of another shape than config.json implies: the file and the tensor.
    let dir = edited_clip(|v| v["projection_dim"] = 24.into());
    let (e, s) = tower_error(dir.path(), Tower::Vision);
    assert!(matches!(e, GraphError::Weights { .. }), "{e:?}");
    assert!(s.contains("model.safetensors") && s.contains("`visual_projection.weight` has shape [16, 32]"), "{s}");

    // A tokenizer with more ids than the token embedding table: the tokenizer file and both sizes.
    let dir = edited_clip(|v| v["text_config"]["vocab_size"] = 100.into());
    let (_, s) = tower_error(dir.path(), Tower::Text);
    assert!(s.contains("tokenizer.json") && s.contains("422 token ids") && s.contains("100 rows"), "{s}");

    // An unsupported activation: the file and the dotted field.
    let dir = edited_clip(|v| v["text_config"]["hidden_act"] = "swish".into());
    let (_, s) = tower_error(dir.path(), Tower::Text);
    assert!(s.contains("config.json") && s.contains("`text_config.hidden_act` `swish` is not supported"), "{s}");

    // SigLIP 2 NaFlex is named as what is unsupported.
    let dir = edited_clip(|v| {
        v["architectures"] = serde_json::json!(["Siglip2Model"]);
        v["model_type"] = "siglip2".into();
    });
    let (e, s) = tower_error(dir.path(), Tower::Vision);
    assert!(matches!(e, GraphError::Unsupported { .. }), "{e:?}");
    assert!(s.contains("Siglip2Model") && s.contains("NaFlex"), "{s}");

    // A text encoder is not a tower model; a tower model is not a text encoder.
    let (_, s) = tower_error(&bulkhead_testkit::fixture("arch").join("gte"), Tower::Text);
    assert!(s.contains("NewModel") && s.contains("CLIPModel, SiglipModel"), "{s}");
    let model = tower_model_files(&fixture("clip-tiny-random")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let s = build_cached(&model, &BuildOptions::default(), cache.path()).unwrap_err().to_string();
    assert!(s.contains("CLIPModel") && s.contains("build_tower_cached"), "{s}");

    // A sentence-transformers folder without a CLIP module: modules.json is named.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("modules.json"), r#"[{"idx":0,"name":"0","path":"","type":"x.Pooling"}]"#).unwrap();
    let s = tower_model_files(dir.path()).unwrap_err().to_string();
    assert!(s.contains("modules.json") && s.contains("CLIPModel"), "{s}");
}

#[test]
fn onnx_runtime_fuses_the_activations_and_the_scaled_scores() {
    // Per tower (2 layers each; SigLIP's vision pooling head adds one attention and one MLP): the activation of
    // every MLP becomes one fused operator and every scaled `Q·Kᵀ` a `FusedMatMul`; nothing of the unfused
    // activations (`Sigmoid`, `Erf`, `Tanh`) is left.
    if !have_ort() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let cases = [
        ("clip-tiny-random", Tower::Vision, "com.microsoft:QuickGelu", 2),
        ("clip-tiny-random", Tower::Text, "com.microsoft:QuickGelu", 2),
        ("clip-tiny-random-bf16", Tower::Vision, "com.microsoft:BiasGelu", 2),
        ("clip-tiny-random-bf16", Tower::Text, "com.microsoft:BiasGelu", 2),
        ("siglip-tiny-random", Tower::Vision, "com.microsoft:FastGelu", 3),
        ("siglip-tiny-random", Tower::Text, "com.microsoft:FastGelu", 2),
    ];
    for (name, tower, activation, n) in cases {
        let model = tower_model_files(&fixture(name)).unwrap();
        let built = build_tower_cached(&model, tower, &BuildOptions::default(), cache.path()).unwrap();
        let ops = common::optimized_op_types(ort_env().unwrap(), &built.path, &cache.path().join("opt.onnx"), "");
        let count = |op: &str| ops.get(op).copied().unwrap_or(0);
        assert_eq!(count(activation), n, "{name} {tower:?}: {ops:?}");
        assert_eq!(count("com.microsoft:FusedMatMul"), n, "{name} {tower:?}: {ops:?}");
        for op in ["Sigmoid", "Erf", "Tanh", "Pow"] {
            assert_eq!(count(op), 0, "{name} {tower:?}: {ops:?}");
        }
    }
}

#[test]
fn static_shapes_give_the_same_vectors() {
    // Fixed `[5, 77]` text inputs (every CLIP text padded to the full context, the padding masked) and a fixed batch
    // of 4 images: the same vectors as transformers.
    if !have_ort() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let folder = fixture("clip-tiny-random");
    let r = reference(&folder);
    let model = tower_model_files(&folder).unwrap();
    let opts =
        |batch, seq| BuildOptions { shape: bulkhead_graph::ShapeMode::Static { batch, seq }, ..Default::default() };

    let built = build_tower_cached(&model, Tower::Text, &opts(r.texts.len(), 77), cache.path()).unwrap();
    let mut ids = r.input_ids.clone();
    let mut masks = r.attention_mask.clone();
    ids[0].resize(77, pad_id(&r));
    masks[0].resize(77, 0);
    let got = embed_texts(&mut session(&built.path), &ids, &masks, pad_id(&r));
    let (cos, diff) = compare(&got, &r.text_embeddings);
    assert!(cos >= MIN_COS && diff <= MAX_DIFF, "static text: cosine {cos}, diff {diff}");

    let built = build_tower_cached(&model, Tower::Vision, &opts(r.pixel_shape[0], 1), cache.path()).unwrap();
    let got = embed_images(&mut session(&built.path), &r.pixels, &r.pixel_shape);
    let (cos, diff) = compare(&got, &r.image_embeddings);
    assert!(cos >= MIN_COS && diff <= MAX_DIFF, "static vision: cosine {cos}, diff {diff}");

    let e = build_tower_cached(&model, Tower::Text, &opts(1, 78), cache.path()).unwrap_err().to_string();
    assert!(e.contains("78 exceeds the 77 positions of the text tower"), "{e}");
}
