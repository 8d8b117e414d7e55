//! The last resort for finding a Python package: asking the machine's `python3` where it is. That costs a process,
//! which `bulkhead-core` never starts, so it lives here, beside its main user: ONNX Runtime's library comes from the
//! `onnxruntime` wheel ([`crate::runtime::locate`]). The folders that need no process come first, from
//! [`bulkhead_core::install`].

use std::path::PathBuf;
use std::process::Command;

/// The folder of the Python package `package` (its import name) as the machine's `python3` imports it; `None` when
/// there is no `python3`, no such package, or the name is not a dotted Python identifier. Costs one short process.
pub fn package_dir(package: &str) -> Option<PathBuf> {
    let identifier = |part: &str| {
        part.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if !package.split('.').all(identifier) {
        return None;
    }
    let code = format!("import os, {package} as m; print(os.path.dirname(m.__file__))");
    let out = Command::new("python3").args(["-c", &code]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    dir.is_dir().then_some(dir)
}

/// Finds `relative` inside the Python package `package`: in the executable's own environment and the project's
/// `.venv` ([`bulkhead_core::install::find_in_site_packages`]), then where the machine's `python3` has it.
pub fn find_in_package(package: &str, relative: &str) -> Option<PathBuf> {
    bulkhead_core::install::find_in_site_packages(package, relative)
        .or_else(|| package_dir(package).map(|d| d.join(relative)).filter(|p| p.exists()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_python_identifiers_reach_the_interpreter() {
        for bad in ["", "os; import shutil", "a b", "1abc", "pkg.", "x'); print('y"] {
            assert_eq!(package_dir(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_standard_library_package_is_found_when_python3_is_there() {
        // `json` is a package of every Python 3; without python3 on the machine there is nothing to find.
        if Command::new("python3").arg("-V").output().is_err() {
            eprintln!("skipping: python3 is absent");
            return;
        }
        let dir = package_dir("json").expect("python3 imports json");
        assert!(dir.join("__init__.py").is_file(), "{}", dir.display());
        assert_eq!(find_in_package("json", "__init__.py"), Some(dir.join("__init__.py")));
        assert_eq!(package_dir("no_such_package_bulkhead"), None);
    }
}
