//! The Qwen3-ASR graphs on the tiny fixture (`tests/fixtures/speech/qwen3-asr-tiny-random`): cached per graph,
//! exported with the documented inputs and outputs, refused by the embedding builder with a pointer to them, and
//! config or weights errors naming the file and the field or tensor. Their numbers against the `qwen-asr` package
//! are checked by crates/bulkhead-speech/tests/qwen3_asr.rs.

mod common;

use std::path::{Path, PathBuf};

use bulkhead_core::ModelFiles;
use bulkhead_graph::qwen3_asr::{build_qwen3_asr_cached, export_qwen3_asr, is_qwen3_asr};
use bulkhead_graph::{BuildOptions, ShapeMode};
use common::ort_env;
use serde_json::Value;

fn folder() -> PathBuf {
    bulkhead_testkit::fixture("speech").join("qwen3-asr-tiny-random")
}

fn names(path: &Path) -> (Vec<String>, Vec<String>) {
    let s = common::session(ort_env().unwrap(), path, 1);
    (
        s.inputs().iter().map(|i| i.name().to_string()).collect(),
        s.outputs().iter().map(|o| o.name().to_string()).collect(),
    )
}

#[test]
fn qwen3_asr_graphs_are_cached_and_exported() {
    let model = ModelFiles::open(&folder()).unwrap();
    assert!(is_qwen3_asr(&model));
    let cache = tempfile::tempdir().unwrap();
    let first = build_qwen3_asr_cached(&model, &BuildOptions::default(), cache.path()).unwrap();
    let again = build_qwen3_asr_cached(&model, &BuildOptions::default(), cache.path()).unwrap();
    assert!(!first.audio_encoder.cache_hit && !first.decoder.cache_hit);
    assert!(again.audio_encoder.cache_hit && again.decoder.cache_hit);
    assert_ne!(first.audio_encoder.key, first.decoder.key, "the graphs share a cache entry");
    let static_shape = BuildOptions { shape: ShapeMode::Static { batch: 1, seq: 8 }, ..Default::default() };
    let e = build_qwen3_asr_cached(&model, &static_shape, cache.path()).unwrap_err().to_string();
    assert!(e.contains("static shapes"), "{e}");

    let out = tempfile::tempdir().unwrap();
    let paths = export_qwen3_asr(&model, &BuildOptions::default(), out.path()).unwrap();
    let files: Vec<String> = paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(files, ["audio-encoder.onnx", "decoder.onnx"]);
    if let Err(e) = ort_env() {
        eprintln!("skipping: ONNX Runtime is unavailable: {e}");
        return;
    }
    let caches = |prefix: &str| -> Vec<String> {
        (0..2).flat_map(|l| [format!("{prefix}_key.{l}"), format!("{prefix}_value.{l}")]).collect()
    };
    assert_eq!(names(&paths[0]), (vec!["input_features".into(), "window_mask".into()], vec!["audio_embeds".into()]));
    let (inputs, outputs) = names(&paths[1]);
    assert_eq!(inputs, [vec!["input_ids".to_string(), "audio_embeds".into()], caches("past")].concat());
    assert_eq!(outputs, [vec!["logits".to_string()], caches("present")].concat());
}

#[test]
fn the_embedding_builder_points_to_the_speech_graphs() {
    let model = ModelFiles::open(&folder()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let e = bulkhead_graph::build_cached(&model, &BuildOptions::default(), cache.path()).unwrap_err().to_string();
    assert!(e.contains("Qwen3ASRForConditionalGeneration") && e.contains("bulkhead_graph::qwen3_asr"), "{e}");
}

#[test]
fn qwen3_asr_config_and_weights_errors_name_the_file_and_the_field() {
    let src = folder();
    let copy = |config: &Value| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        std::fs::copy(src.join("model.safetensors"), dir.path().join("model.safetensors")).unwrap();
        dir
    };
    let original: Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    type Edit = fn(&mut Value);
    let cases: [(Edit, &str); 3] = [
        (|v| v["thinker_config"]["audio_config"]["n_window"] = 100.into(), "n_window"),
        (|v| v["thinker_config"]["text_config"]["hidden_act"] = "gelu".into(), "hidden_act"),
        (|v| v["thinker_config"]["text_config"]["hidden_size"] = 64.into(), "output_dim"),
    ];
    for (edit, field) in cases {
        let mut config = original.clone();
        edit(&mut config);
        let dir = copy(&config);
        let model = ModelFiles::open(dir.path()).unwrap();
        let e = export_qwen3_asr(&model, &BuildOptions::default(), &dir.path().join("out")).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains(field), "{field}: {e}");
    }
    // A tensor of another shape than config.json implies names the weights file and the tensor.
    let mut config = original.clone();
    config["thinker_config"]["audio_config"]["encoder_ffn_dim"] = 80.into();
    let dir = copy(&config);
    let model = ModelFiles::open(dir.path()).unwrap();
    let e = export_qwen3_asr(&model, &BuildOptions::default(), &dir.path().join("out")).unwrap_err().to_string();
    assert!(e.contains("model.safetensors") && e.contains("thinker.audio_tower.layers.0.fc1.weight"), "{e}");
}

/// The decoder's logits for `ids` with the audio rows `rows` (`[rows.len() / 48, 48]`) and empty caches.
fn decoder_logits(session: &mut ort::session::Session, ids: &[i64], rows: &[f32]) -> Vec<f32> {
    use ort::session::SessionInputValue;
    use ort::value::TensorRef;
    let (h, kv, d) = (48, 2, 16);
    let empty: Vec<f32> = vec![];
    let mut feed: Vec<(String, SessionInputValue<'_>)> = vec![
        ("input_ids".into(), TensorRef::from_array_view(([1, ids.len()], ids)).unwrap().into()),
        ("audio_embeds".into(), TensorRef::from_array_view(([rows.len() / h, h], rows)).unwrap().into()),
    ];
    for l in 0..2 {
        for kind in ["key", "value"] {
            let v = TensorRef::from_array_view(([1, kv, 0, d], empty.as_slice())).unwrap();
            feed.push((format!("past_{kind}.{l}"), v.into()));
        }
    }
    let out = session.run(feed).unwrap();
    out["logits"].try_extract_tensor::<f32>().unwrap().1.to_vec()
}

#[test]
fn an_audio_token_without_a_row_keeps_its_token_embedding() {
    if let Err(e) = ort_env() {
        eprintln!("skipping: ONNX Runtime is unavailable: {e}");
        return;
    }
    let model = ModelFiles::open(&folder()).unwrap();
    let config: Value = serde_json::from_str(&std::fs::read_to_string(folder().join("config.json")).unwrap()).unwrap();
    let audio = config["thinker_config"]["audio_token_id"].as_i64().unwrap();
    let out = tempfile::tempdir().unwrap();
    let paths = export_qwen3_asr(&model, &BuildOptions::default(), out.path()).unwrap();
    let mut session = common::session(ort_env().unwrap(), &paths[1], 1);
    // The token's own embedding row, read from the checkpoint.
    let bytes = std::fs::read(folder().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let table = st.tensor("thinker.model.embed_tokens.weight").unwrap();
    let own: Vec<f32> = table.data()[audio as usize * 48 * 4..(audio as usize + 1) * 48 * 4]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let ids = [1, audio, 2];
    let without = decoder_logits(&mut session, &ids, &[]);
    let with_own = decoder_logits(&mut session, &ids, &own);
    let with_other = decoder_logits(&mut session, &ids, &[0.5; 48]);
    let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(diff(&without, &with_own) < 1e-5, "{}", diff(&without, &with_own));
    assert!(diff(&without, &with_other) > 1e-2, "the audio row was not used");
}
