//! Where the cache is, which hub to ask, with which token, and whether to ask at all: the environment variables of
//! `huggingface_hub`, read the way it reads them, so that both share one cache and one login.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `HF_HUB_CACHE` (legacy `HUGGINGFACE_HUB_CACHE`) | the cache | `$HF_HOME/hub` |
//! | `HF_HOME` | the Hugging Face folder | `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface` |
//! | `HF_ENDPOINT` | the hub | `https://huggingface.co` |
//! | `HF_TOKEN` (legacy `HUGGING_FACE_HUB_TOKEN`) | the access token | the file `$HF_TOKEN_PATH`, else `$HF_HOME/token` |
//! | `HF_HUB_OFFLINE` (also `TRANSFORMERS_OFFLINE`, `BULKHEAD_OFFLINE`) | never touch the network | off |

use std::path::{Path, PathBuf};

/// The public hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// How the hub client reaches the hub and where it keeps models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// The cache folder holding `models--ORG--NAME` folders.
    pub cache_dir: PathBuf,
    /// The hub's base URL, without a trailing `/`.
    pub endpoint: String,
    /// The token sent as `Authorization: Bearer`, if any.
    pub token: Option<String>,
    /// When set, the variable that turned offline mode on: nothing is fetched.
    pub offline: Option<&'static str>,
}

impl HubConfig {
    /// Reads the process environment (and the token file).
    pub fn from_env() -> HubConfig {
        HubConfig::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the variables through `var` (for tests); the token file is read from disk.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> HubConfig {
        let set = |k: &str| var(k).filter(|v| !v.is_empty());
        let home_dir = || set("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"));
        let expand = |p: String| expand_home(&p, &home_dir());
        let hf_home = set("HF_HOME").map(expand).unwrap_or_else(|| {
            set("XDG_CACHE_HOME").map(expand).unwrap_or_else(|| home_dir().join(".cache")).join("huggingface")
        });
        let cache_dir = set("HF_HUB_CACHE")
            .or_else(|| set("HUGGINGFACE_HUB_CACHE"))
            .map(expand)
            .unwrap_or_else(|| hf_home.join("hub"));
        let endpoint = set("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.into()).trim_end_matches('/').to_string();
        let token = set("HF_TOKEN").or_else(|| set("HUGGING_FACE_HUB_TOKEN")).or_else(|| {
            let path = set("HF_TOKEN_PATH").map(expand).unwrap_or_else(|| hf_home.join("token"));
            std::fs::read_to_string(path).ok()
        });
        let token = token.map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
        let offline = ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "BULKHEAD_OFFLINE"]
            .into_iter()
            .find(|k| set(k).is_some_and(|v| is_true(&v)));
        HubConfig { cache_dir, endpoint, token, offline }
    }
}

/// `huggingface_hub`'s truth values: `1`, `ON`, `YES`, `TRUE`, in any case.
pub fn is_true(value: &str) -> bool {
    matches!(value.trim().to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE")
}

fn expand_home(p: &str, home: &Path) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if p == "~" => home.to_path_buf(),
        None => PathBuf::from(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> HubConfig {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        HubConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn cache_folder_follows_huggingface_hub() {
        let h = "/home/u";
        assert_eq!(config(&[("HOME", h)]).cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert_eq!(config(&[("HOME", h), ("XDG_CACHE_HOME", "/x")]).cache_dir, PathBuf::from("/x/huggingface/hub"));
        assert_eq!(config(&[("HOME", h), ("HF_HOME", "~/hf")]).cache_dir, PathBuf::from("/home/u/hf/hub"));
        assert_eq!(config(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/c")]).cache_dir, PathBuf::from("/c"));
        assert_eq!(config(&[("HUGGINGFACE_HUB_CACHE", "/old")]).cache_dir, PathBuf::from("/old"));
    }

    #[test]
    fn endpoint_token_and_offline() {
        let c = config(&[("HF_ENDPOINT", "http://127.0.0.1:9/"), ("HF_TOKEN", " hf_x \n"), ("HF_HOME", "/none")]);
        assert_eq!(c.endpoint, "http://127.0.0.1:9");
        assert_eq!(c.token.as_deref(), Some("hf_x"));
        assert_eq!(c.offline, None);
        assert_eq!(config(&[("HF_HOME", "/none")]).endpoint, DEFAULT_ENDPOINT);
        assert_eq!(config(&[("HF_HUB_OFFLINE", "yes")]).offline, Some("HF_HUB_OFFLINE"));
        assert_eq!(config(&[("BULKHEAD_OFFLINE", "1")]).offline, Some("BULKHEAD_OFFLINE"));
        assert_eq!(config(&[("HF_HUB_OFFLINE", "0")]).offline, None);
    }

    #[test]
    fn token_file_under_hf_home() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "hf_from_file\n").unwrap();
        let home = dir.path().to_str().unwrap();
        assert_eq!(config(&[("HF_HOME", home)]).token.as_deref(), Some("hf_from_file"));
        assert_eq!(config(&[("HF_HOME", home), ("HF_TOKEN", "hf_env")]).token.as_deref(), Some("hf_env"));
    }
}
