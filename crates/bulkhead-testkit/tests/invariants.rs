//! The architecture invariants (each crate's `lib.rs` doc, "Architecture invariants") that can be checked by reading
//! the repository: what each crate's `Cargo.toml` depends on, and what its sources (test modules left out) call.
//! A change that breaks one fails here with the file and line, instead of waiting for a reader to notice.

use std::path::{Path, PathBuf};

use bulkhead_testkit::repo;

/// The only crates `bulkhead-core` may depend on: vocabulary needs serialisation and typed errors, nothing more.
const CORE_DEPENDENCIES: &[&str] = &["serde", "serde_json", "thiserror"];

/// What non-test code of `bulkhead-core` must not contain, and which invariant each breaks.
const CORE_FORBIDDEN: &[(&str, &str)] = &[
    ("std::process", "starts no process"),
    ("Command::new", "starts no process"),
    (".spawn(", "starts no process or thread"),
    ("std::thread", "starts no thread"),
    ("std::net", "opens no socket"),
    ("TcpStream", "opens no socket"),
    ("UdpSocket", "opens no socket"),
    ("async fn", "is not async"),
    ("async move", "is not async"),
    (".await", "is not async"),
    ("tokio", "is not async"),
    ("fs::write", "writes no file"),
    ("File::create", "writes no file"),
    ("OpenOptions", "writes no file"),
    ("create_dir", "writes no file"),
    ("remove_file", "writes no file"),
    ("remove_dir", "writes no file"),
    ("fs::rename", "writes no file"),
    ("fs::copy", "writes no file"),
    ("hard_link", "writes no file"),
    ("symlink", "writes no file"),
    ("set_permissions", "writes no file"),
];

/// One `[table]` of a `Cargo.toml` and the keys written in it.
#[derive(Debug, PartialEq)]
struct Table {
    name: String,
    keys: Vec<String>,
}

/// The tables of a `Cargo.toml`, in order, with their keys (the part of each `key = value` line before any `.`).
fn tables(manifest: &str) -> Vec<Table> {
    let mut tables = vec![Table { name: String::new(), keys: vec![] }];
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            tables.push(Table { name: line.trim_matches(|c| c == '[' || c == ']').to_string(), keys: vec![] });
        } else if !line.is_empty() && !line.starts_with(['#', ']', '"']) {
            let key = line.split(['=', '.', ' ']).next().unwrap_or("").trim().trim_matches('"');
            tables.last_mut().unwrap().keys.push(key.to_string());
        }
    }
    tables
}

/// The dependencies a crate links: those of `[dependencies]`, `[build-dependencies]` and
/// `[target.X.dependencies]`, and the NAME of each `[dependencies.NAME]` table; not its dev-dependencies.
fn linked(manifest: &str) -> Vec<String> {
    let mut deps = vec![];
    for t in tables(manifest) {
        let name = t.name.as_str();
        if name.starts_with("workspace") || name.contains("dev-dependencies") {
            continue;
        }
        if name.ends_with("dependencies") {
            deps.extend(t.keys);
        } else if let Some((_, dep)) = name.rsplit_once("dependencies.") {
            deps.push(dep.to_string());
        }
    }
    deps
}

/// Non-test code of a source file, line by line (number, text), `//` comments removed. The test module must be the
/// file's last item (`#[cfg(test)] mod tests { ... }`, nothing at the top level after it), so that no production
/// code hides behind it.
fn production_lines(path: &Path, text: &str) -> Result<Vec<(usize, String)>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let end = match lines.iter().position(|l| l.trim() == "#[cfg(test)]") {
        None => lines.len(),
        Some(at) => {
            if lines.get(at + 1).map(|l| l.trim()) != Some("mod tests {") {
                return Err(format!("{}:{}: #[cfg(test)] must introduce `mod tests {{`", path.display(), at + 1));
            }
            let rest = &lines[at + 2..];
            let top_level = rest.iter().any(|l| !l.is_empty() && !l.starts_with([' ', '}']));
            if top_level || rest.iter().filter(|l| l.starts_with('}')).count() != 1 {
                return Err(format!(
                    "{}:{}: the test module must be the last item of the file",
                    path.display(),
                    at + 1
                ));
            }
            at
        }
    };
    Ok(lines[..end].iter().enumerate().map(|(i, l)| (i + 1, l.split("//").next().unwrap_or("").to_string())).collect())
}

/// Every line of non-test code that contains a forbidden pattern, as `file:line: `pattern`: what`.
fn violations(path: &Path, text: &str, forbidden: &[(&str, &str)]) -> Vec<String> {
    let lines = match production_lines(path, text) {
        Ok(l) => l,
        Err(e) => return vec![e],
    };
    let mut found = vec![];
    for (n, line) in lines {
        for (pattern, what) in forbidden {
            if line.contains(pattern) {
                found.push(format!("{}:{n}: `{pattern}`: {what}", path.display()));
            }
        }
    }
    found
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())).flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every workspace member: (crate name, its folder).
fn members() -> Vec<(String, PathBuf)> {
    let root = read(&repo().join("Cargo.toml"));
    let list = root.split("members = [").nth(1).and_then(|r| r.split(']').next()).expect("the members list");
    let members: Vec<(String, PathBuf)> = list
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .map(|m| (m.rsplit('/').next().unwrap().to_string(), repo().join(m)))
        .collect();
    assert!(members.len() >= 10, "{members:?}");
    members
}

#[test]
fn core_depends_on_serialisation_and_errors_only() {
    let dir = repo().join("crates/bulkhead-core");
    let deps = linked(&read(&dir.join("Cargo.toml")));
    assert!(!deps.is_empty(), "no dependency found in bulkhead-core's Cargo.toml");
    let extra: Vec<&String> = deps.iter().filter(|d| !CORE_DEPENDENCIES.contains(&d.as_str())).collect();
    assert!(extra.is_empty(), "bulkhead-core depends on {extra:?}; it may depend only on {CORE_DEPENDENCIES:?}");
    assert!(!dir.join("build.rs").exists(), "bulkhead-core has no build script");
}

#[test]
fn core_starts_no_process_thread_or_socket_writes_nothing_and_is_not_async() {
    let files = rust_files(&repo().join("crates/bulkhead-core/src"));
    assert!(files.len() >= 10, "{files:?}");
    let found: Vec<String> = files.iter().flat_map(|f| violations(f, &read(f), CORE_FORBIDDEN)).collect();
    assert!(found.is_empty(), "bulkhead-core breaks its invariants (see its lib.rs):\n{}", found.join("\n"));
}

#[test]
fn onnx_runtime_is_loaded_at_run_time_and_every_provider_must_register() {
    let root = read(&repo().join("Cargo.toml"));
    let ort = root.lines().find(|l| l.starts_with("ort = ")).expect("the workspace's ort dependency");
    assert!(ort.contains("default-features = false") && ort.contains("\"load-dynamic\""), "{ort}");
    for downloads in ["download-binaries", "copy-dylibs"] {
        assert!(!ort.contains(downloads), "ort must not fetch ONNX Runtime at build time: {ort}");
    }
    let mut registrations = 0;
    for file in rust_files(&repo().join("crates/bulkhead-ort/src")) {
        for (n, line) in production_lines(&file, &read(&file)).unwrap() {
            if line.contains("with_execution_providers(") {
                registrations += 1;
                assert!(
                    line.contains(".error_on_failure()"),
                    "{}:{n}: a provider without error_on_failure()",
                    file.display()
                );
            }
            let python = file.ends_with("python.rs");
            assert!(
                python || !line.contains("Command::new"),
                "{}:{n}: bulkhead-ort starts python3 only",
                file.display()
            );
        }
    }
    assert!(registrations > 0, "no execution provider registration found");
}

#[test]
fn the_graph_builder_and_the_pipeline_link_no_engine() {
    let engines = ["ort", "bulkhead-ort", "candle-core", "candle-nn", "candle-transformers", "bulkhead-candle"];
    for name in ["bulkhead-graph", "bulkhead-embed"] {
        let deps = linked(&read(&repo().join("crates").join(name).join("Cargo.toml")));
        let found: Vec<&String> = deps.iter().filter(|d| engines.contains(&d.as_str())).collect();
        assert!(found.is_empty(), "{name} links the engine crates {found:?}");
    }
}

#[test]
fn candle_builds_with_every_feature_off() {
    // With no default feature, every ordinary build of the workspace is the build with every feature off.
    let manifest = read(&repo().join("crates/bulkhead-candle/Cargo.toml"));
    let features = tables(&manifest).into_iter().find(|t| t.name == "features").map(|t| t.keys).unwrap_or_default();
    assert!(!features.iter().any(|f| f == "default"), "bulkhead-candle has default features: {features:?}");
}

#[test]
fn anyhow_only_in_the_binary_and_test_crates_only_as_dev_dependencies() {
    let test_only = ["bulkhead-testkit", "bulkhead-hub-stand-in"];
    for (name, dir) in members() {
        let manifest = read(&dir.join("Cargo.toml"));
        let deps = linked(&manifest);
        if name != "bulkhead" {
            assert!(!deps.iter().any(|d| d == "anyhow"), "{name} links anyhow: typed errors (thiserror) in libraries");
        }
        // A test crate may link another (the testkit its engines), never a crate that ships.
        if !test_only.contains(&name.as_str()) {
            for t in test_only {
                assert!(!deps.iter().any(|d| d == t), "{name} links {t}, which is for tests only");
            }
        } else {
            assert!(manifest.contains("publish = false"), "{name} is for tests only: publish = false");
        }
    }
}

#[test]
fn every_crate_states_its_invariants_in_its_crate_doc() {
    for (_, dir) in members() {
        let lib = dir.join("src/lib.rs");
        let root = if lib.is_file() { lib } else { dir.join("src/main.rs") };
        let doc: String = read(&root).lines().take_while(|l| l.starts_with("//!")).collect::<Vec<_>>().join("\n");
        assert!(
            doc.contains("//! # Architecture invariants"),
            "{}: no `# Architecture invariants` section",
            root.display()
        );
    }
}

#[test]
fn shared_measures_have_one_definition() {
    // (the definition, the one file allowed to hold it)
    let single = [
        ("fn cosine", "crates/bulkhead-core/src/stats.rs"),
        ("fn median", "crates/bulkhead-core/src/stats.rs"),
        ("const MANIFEST_FILE", "crates/bulkhead-core/src/quantized.rs"),
        ("struct Manifest", "crates/bulkhead-core/src/quantized.rs"),
        ("enum Precision", "crates/bulkhead-core/src/precision.rs"),
    ];
    let mut found: Vec<String> = vec![];
    let this_file = Path::new(file!()).file_name().unwrap();
    for file in
        rust_files(&repo().join("crates")).into_iter().filter(|f| !f.ends_with(Path::new("tests").join(this_file)))
    {
        let text = read(&file);
        for (definition, home) in single {
            // The name itself, not a longer one that starts with it (`enum PrecisionArg`).
            let defines = text.match_indices(definition).any(|(at, _)| {
                text[at + definition.len()..].chars().next().is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
            });
            if defines && !file.ends_with(home) {
                found.push(format!("{}: `{definition}` (the one definition is in {home})", file.display()));
            }
        }
    }
    assert!(found.is_empty(), "duplicated definitions:\n{}", found.join("\n"));
}

#[test]
fn the_checks_catch_what_they_look_for() {
    let manifest = "[package]\nname = \"x\"\npublish = false\n\n[dependencies]\nserde.workspace = true\n\
                    tokio = { version = \"1\" }\n\n[dependencies.axum]\nversion = \"0.8\"\n\n[dev-dependencies]\n\
                    tempfile = \"3\"\n\n[target.'cfg(unix)'.dependencies]\nlibc = \"0.2\"\n\n[features]\n\
                    default = [\n    \"a\",\n]\n";
    assert_eq!(linked(manifest), ["serde", "tokio", "axum", "libc"]);
    let features = tables(manifest).into_iter().find(|t| t.name == "features").unwrap().keys;
    assert_eq!(features, ["default"]);

    let file = Path::new("src/example.rs");
    let spawns = "//! Doc.\nuse std::process::Command;\n\npub fn f() {\n    Command::new(\"python3\");\n}\n";
    let v = violations(file, spawns, CORE_FORBIDDEN);
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v[0].starts_with("src/example.rs:2: `std::process`"), "{v:?}");

    // Comments may name what the code does not do, and tests may do it.
    let fine = "//! Starts no process: no std::process here.\npub fn f() {} // not async fn\n\n#[cfg(test)]\nmod tests {\n    \
                #[test]\n    fn t() {\n        std::fs::write(\"x\", \"y\").unwrap();\n    }\n}\n";
    assert_eq!(violations(file, fine, CORE_FORBIDDEN), Vec::<String>::new());

    // Production code after the test module is found rather than skipped.
    let hidden = "pub fn f() {}\n\n#[cfg(test)]\nmod tests {\n}\n\npub async fn g() {}\n";
    let v = violations(file, hidden, CORE_FORBIDDEN);
    assert!(v.len() == 1 && v[0].contains("must be the last item"), "{v:?}");
}
