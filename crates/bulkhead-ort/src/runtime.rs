//! Finding and initialising the ONNX Runtime shared library (`ort` is built with `load-dynamic`).
//!
//! Search order: `ORT_DYLIB_PATH`; the `onnxruntime` package of the Python environment the executable is installed
//! in (`pip install bulkhead-*.whl` brings it as a dependency); the project's set-up location (`.venv`, made by
//! `scripts/setup.sh`); an `onnxruntime` package importable by `python3`. If none is found, the error says exactly
//! how to install it.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

/// The initialised runtime: one per process.
pub struct Runtime {
    /// The ONNX Runtime environment.
    pub env: Environment,
    /// The library that was loaded.
    pub library: PathBuf,
    /// Its version string, e.g. `1.31.1`.
    pub version: String,
    /// Execution providers compiled into the library.
    pub providers: Vec<String>,
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

const INSTALL_HINT: &str = "install it with `pip install onnxruntime==1.31.1` into the Python environment bulkhead is \
                            installed in (`scripts/setup.sh` in a checkout), or set ORT_DYLIB_PATH to a libonnxruntime \
                            shared library";

fn library_names() -> &'static [&'static str] {
    if cfg!(target_os = "macos") {
        &["libonnxruntime.dylib"]
    } else if cfg!(target_os = "windows") {
        &["onnxruntime.dll"]
    } else {
        &["libonnxruntime.so"]
    }
}

/// The library file inside a wheel's `onnxruntime/capi` folder (`libonnxruntime.so.1.31.1` and the like).
fn library_in(capi: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(capi)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            library_names().iter().any(|base| name.starts_with(base))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Where the library would be loaded from, or why none was found.
pub fn locate() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("ORT_DYLIB_PATH={} is not a file; {INSTALL_HINT}", p.display()))
        };
    }
    // The executable's own environment first (a wheel install), then the checkout's `.venv`.
    for sp in bulkhead_core::install::site_packages() {
        if let Some(lib) = library_in(&sp.join("onnxruntime").join("capi")) {
            return Ok(lib);
        }
    }
    if let Some(lib) = crate::python::package_dir("onnxruntime").and_then(|d| library_in(&d.join("capi"))) {
        return Ok(lib);
    }
    Err(format!("the ONNX Runtime library was not found; {INSTALL_HINT}"))
}

/// The process-wide runtime, initialised on first use.
pub fn runtime() -> Result<&'static Runtime, String> {
    RUNTIME.get_or_init(init).as_ref().map_err(Clone::clone)
}

fn init() -> Result<Runtime, String> {
    let library = locate()?;
    let builder = ort::init_from(&library).map_err(|e| format!("{e}; {INSTALL_HINT}"))?;
    let env = builder.with_name("bulkhead").build().map_err(|e| format!("{}: {e}", library.display()))?;
    let version = version_string(&library);
    let providers = available_providers().map_err(|e| format!("{}: {e}", library.display()))?;
    tracing::debug!(library = %library.display(), version, ?providers, "ONNX Runtime loaded");
    Ok(Runtime { env, library, version, providers })
}

/// The library version: from the file name (`libonnxruntime.so.1.31.1`), else from the build info string.
fn version_string(library: &Path) -> String {
    let name = library.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let digits: Vec<&str> =
        name.split('.').filter(|p| p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty()).collect();
    if digits.len() >= 2 {
        return digits.join(".");
    }
    let info = ort::info();
    info.split(|c: char| c == ',' || c.is_whitespace())
        .find_map(|part| part.strip_prefix("git-branch=rel-"))
        .map(str::to_string)
        .unwrap_or_else(|| "unknown".into())
}

fn available_providers() -> Result<Vec<String>, String> {
    let api = ort::api();
    let mut names: *mut *mut std::ffi::c_char = std::ptr::null_mut();
    let mut n: std::ffi::c_int = 0;
    let status = unsafe { (api.GetAvailableProviders)(&mut names, &mut n) };
    crate::status_to_result(status)?;
    let list = (0..n.max(0) as usize)
        .map(|i| unsafe { CStr::from_ptr(*names.add(i)) }.to_string_lossy().into_owned())
        .collect();
    let status = unsafe { (api.ReleaseAvailableProviders)(names, n) };
    crate::status_to_result(status)?;
    Ok(list)
}
