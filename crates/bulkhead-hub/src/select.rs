//! Which files of a repository a model needs, decided from the repository's file list alone. The rule:
//!
//! 1. **Metadata** (fetched first, each when present at the root): `config.json`; the tokenizer files
//!    `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`, `added_tokens.json`; the
//!    sentence-transformers files `modules.json`, `sentence_bert_config.json`, `config_sentence_transformers.json`;
//!    the shard index `model.safetensors.index.json`.
//! 2. **Module folders**: for every module path in `modules.json` (`1_Pooling`, `2_Dense`, ...), and for
//!    `1_Pooling` when there is no `modules.json`: the `.json` files and `model.safetensors` directly inside it.
//! 3. **Weights**, in the formats the caller's engines can run ([`Formats`], chosen by the caller from
//!    [`WeightsContext`]): safetensors = `model.safetensors`, or the shards named by `model.safetensors.index.json`;
//!    ONNX = `model.onnx` at the root, else `onnx/model.onnx`, plus its external data beside it
//!    (`model.onnx_data*`, `model.onnx.data*`).
//!
//! Never fetched: `pytorch_model.bin` and other framework weights (`.h5`, `.msgpack`, `.ot`), other ONNX variants
//! (`onnx/model_qint8_avx512.onnx`, `onnx/model_O4.onnx`, ...), OpenVINO exports, READMEs and anything else.

use serde_json::Value;

use crate::cache::is_safe_repo_path;

/// The root files fetched before anything else.
pub const METADATA_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    SHARD_INDEX,
];

/// The index of sharded safetensors weights.
pub const SHARD_INDEX: &str = "model.safetensors.index.json";

/// A repository's files, as the hub lists them (or as a cached snapshot holds them).
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Files, `/`-separated, relative to the repository root; sizes when the hub gave them.
    pub files: Vec<(String, Option<u64>)>,
}

impl Listing {
    /// A listing of paths without sizes.
    pub fn of_paths<S: AsRef<str>>(paths: &[S]) -> Listing {
        Listing { files: paths.iter().map(|p| (p.as_ref().to_string(), None)).collect() }
    }

    /// Whether the repository has `path`.
    pub fn has(&self, path: &str) -> bool {
        self.files.iter().any(|(p, _)| p == path)
    }

    /// The announced size of `path`.
    pub fn size(&self, path: &str) -> Option<u64> {
        self.files.iter().find(|(p, _)| p == path).and_then(|(_, s)| *s)
    }

    fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|(p, _)| p.as_str())
    }

    /// The ONNX graph the model would run: `model.onnx`, else `onnx/model.onnx`.
    pub fn onnx(&self) -> Option<&'static str> {
        ["model.onnx", "onnx/model.onnx"].into_iter().find(|f| self.has(f))
    }

    /// Whether safetensors weights are present (single file or shard index).
    pub fn has_safetensors(&self) -> bool {
        self.has("model.safetensors") || self.has(SHARD_INDEX)
    }
}

/// The weight formats to fetch when the repository has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Formats {
    /// `model.safetensors` or its shards.
    pub safetensors: bool,
    /// The ONNX graph and its external data.
    pub onnx: bool,
}

/// What the caller sees when it chooses [`Formats`]: the formats present and the model's `config.json`.
#[derive(Debug, Clone, Copy)]
pub struct WeightsContext<'a> {
    /// The repository has safetensors weights.
    pub has_safetensors: bool,
    /// The repository has `model.onnx` or `onnx/model.onnx`.
    pub has_onnx: bool,
    /// The parsed `config.json`, when there is one.
    pub config: Option<&'a Value>,
}

/// Step 1: the metadata files present.
pub fn metadata_files(listing: &Listing) -> Vec<String> {
    METADATA_FILES.iter().filter(|f| listing.has(f)).map(|f| f.to_string()).collect()
}

/// Steps 2 and 3: module folders and weights. `modules` and `index` are the parsed `modules.json` and shard index
/// when present. Errors say what the repository has when nothing of `formats` is there.
pub fn model_files(
    listing: &Listing,
    modules: Option<&Value>,
    index: Option<&Value>,
    formats: Formats,
) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = vec![];
    let mut folders: Vec<String> = match modules.and_then(Value::as_array) {
        Some(list) => list
            .iter()
            .filter_map(|m| m.get("path").and_then(Value::as_str))
            .map(|p| p.trim_matches('/').to_string())
            .filter(|p| !p.is_empty() && is_safe_repo_path(p))
            .collect(),
        None => vec!["1_Pooling".into()],
    };
    folders.dedup();
    for folder in &folders {
        for p in listing.paths() {
            let Some(name) = p.strip_prefix(folder.as_str()).and_then(|r| r.strip_prefix('/')) else { continue };
            if !name.contains('/') && (name.ends_with(".json") || name == "model.safetensors") {
                out.push(p.to_string());
            }
        }
    }

    let mut weights = 0;
    if formats.safetensors {
        if listing.has("model.safetensors") {
            out.push("model.safetensors".into());
            weights += 1;
        } else if listing.has(SHARD_INDEX) {
            let shards = shard_files(index).ok_or_else(|| format!("{SHARD_INDEX} has no `weight_map` of files"))?;
            for s in shards {
                if !listing.has(&s) {
                    return Err(format!("{SHARD_INDEX} names `{s}`, which the repository does not have"));
                }
                out.push(s);
                weights += 1;
            }
        }
    }
    if formats.onnx {
        if let Some(onnx) = listing.onnx() {
            out.push(onnx.into());
            weights += 1;
            let external = [format!("{onnx}_data"), format!("{onnx}.data")];
            out.extend(
                listing.paths().filter(|p| external.iter().any(|e| p.starts_with(e.as_str()))).map(String::from),
            );
        }
    }
    if weights == 0 {
        return Err(no_weights_message(listing, formats));
    }
    out.dedup();
    Ok(out)
}

fn shard_files(index: Option<&Value>) -> Option<Vec<String>> {
    let map = index?.get("weight_map")?.as_object()?;
    let mut files: Vec<String> = map.values().filter_map(Value::as_str).map(String::from).collect();
    files.sort();
    files.dedup();
    (!files.is_empty() && files.iter().all(|f| is_safe_repo_path(f))).then_some(files)
}

fn no_weights_message(listing: &Listing, formats: Formats) -> String {
    let wanted = match (formats.safetensors, formats.onnx) {
        (true, true) => "safetensors (model.safetensors) or ONNX (model.onnx, onnx/model.onnx)",
        (true, false) => "safetensors (model.safetensors or sharded with model.safetensors.index.json)",
        (false, true) => "ONNX (model.onnx or onnx/model.onnx)",
        (false, false) => "no weight format",
    };
    let mut present: Vec<&str> = listing
        .paths()
        .filter(|p| [".safetensors", ".onnx", ".bin", ".h5", ".msgpack", ".gguf"].iter().any(|e| p.ends_with(e)))
        .collect();
    present.truncate(6);
    let present = if present.is_empty() { "no weight files".to_string() } else { present.join(", ") };
    format!("the compute units asked for run {wanted}, and this repository has {present}; pick other --compute-units or another model")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The file list of `sentence-transformers/all-MiniLM-L6-v2` on the hub.
    const MINILM: &[&str] = &[
        ".gitattributes",
        "1_Pooling/config.json",
        "README.md",
        "config.json",
        "config_sentence_transformers.json",
        "data_config.json",
        "model.safetensors",
        "modules.json",
        "onnx/model.onnx",
        "onnx/model_O1.onnx",
        "onnx/model_qint8_avx512.onnx",
        "onnx/model_quint8_avx2.onnx",
        "openvino/openvino_model.xml",
        "pytorch_model.bin",
        "rust_model.ot",
        "sentence_bert_config.json",
        "special_tokens_map.json",
        "tf_model.h5",
        "tokenizer.json",
        "tokenizer_config.json",
        "train_script.py",
        "vocab.txt",
    ];

    fn modules() -> Value {
        json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        ])
    }

    #[test]
    fn minilm_takes_metadata_then_one_weight_format() {
        let l = Listing::of_paths(MINILM);
        assert_eq!(
            metadata_files(&l),
            [
                "config.json",
                "tokenizer.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
                "modules.json",
                "sentence_bert_config.json",
                "config_sentence_transformers.json"
            ]
        );
        let st = Formats { safetensors: true, onnx: false };
        assert_eq!(
            model_files(&l, Some(&modules()), None, st).unwrap(),
            ["1_Pooling/config.json", "model.safetensors"]
        );
        let onnx = Formats { safetensors: false, onnx: true };
        assert_eq!(
            model_files(&l, Some(&modules()), None, onnx).unwrap(),
            ["1_Pooling/config.json", "onnx/model.onnx"]
        );
    }

    #[test]
    fn shards_dense_and_external_data() {
        let l = Listing::of_paths(&[
            "config.json",
            "modules.json",
            "model.safetensors.index.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "pytorch_model-00001-of-00002.bin",
            "2_Dense/config.json",
            "2_Dense/model.safetensors",
            "2_Dense/pytorch_model.bin",
            "1_Pooling/config.json",
            "model.onnx",
            "model.onnx_data",
            "onnx/model.onnx",
        ]);
        let modules = json!([{"path": ""}, {"path": "1_Pooling"}, {"path": "2_Dense"}]);
        let index = json!({"weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
            "c": "model-00001-of-00002.safetensors"
        }});
        let both = Formats { safetensors: true, onnx: true };
        assert_eq!(
            model_files(&l, Some(&modules), Some(&index), both).unwrap(),
            [
                "1_Pooling/config.json",
                "2_Dense/config.json",
                "2_Dense/model.safetensors",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
                "model.onnx",
                "model.onnx_data"
            ]
        );
        let bad_index = json!({"weight_map": {"a": "model-00003-of-00002.safetensors"}});
        let e = model_files(&l, Some(&modules), Some(&bad_index), both).unwrap_err();
        assert!(e.contains("model-00003-of-00002.safetensors"), "{e}");
    }

    #[test]
    fn no_runnable_weights_is_explained() {
        let l = Listing::of_paths(&["config.json", "pytorch_model.bin", "tokenizer.json"]);
        let e = model_files(&l, None, None, Formats { safetensors: true, onnx: true }).unwrap_err();
        assert!(e.contains("pytorch_model.bin") && e.contains("safetensors"), "{e}");
        let onnx_only = Listing::of_paths(&["onnx/model.onnx", "onnx/model_quantized.onnx", "tokenizer.json"]);
        let e = model_files(&onnx_only, None, None, Formats { safetensors: true, onnx: false }).unwrap_err();
        assert!(e.contains("onnx/model.onnx"), "{e}");
        let ok = model_files(&onnx_only, None, None, Formats { safetensors: true, onnx: true }).unwrap();
        assert_eq!(ok, ["onnx/model.onnx"]);
    }

    #[test]
    fn module_paths_cannot_escape() {
        let l = Listing::of_paths(&["model.safetensors", "x/config.json"]);
        let modules = json!([{"path": "../x"}, {"path": "/"}]);
        let files = model_files(&l, Some(&modules), None, Formats { safetensors: true, onnx: false }).unwrap();
        assert_eq!(files, ["model.safetensors"]);
    }
}
