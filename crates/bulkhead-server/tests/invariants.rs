//! The server crate's checkable architecture invariants, as tests (see the crate's `lib.rs`), read from the source:
//!
//! * handlers never touch the supervisor: no `bulkhead_supervisor` under `src/routes/` (in fact nowhere but
//!   `src/backend.rs`, the one adapter);
//! * every route reaches a model through the shared path (`routes/common.rs`): no other file under `src/routes/`
//!   names the batcher or the backend, submits, predicts or maps a queue error;
//! * the modules import each other without a cycle (a `use` of `crate::`, `super::` or `self::` paths is an edge
//!   from file to file).
//!
//! Each check fails with `file:line`; `the_checks_find_planted_violations` shows that each can fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("the source folder").flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a line: what precedes a `//` comment.
fn code(line: &str) -> &str {
    line.find("//").map_or(line, |i| &line[..i])
}

/// `file:line: pattern` for each line of the files under `root` (relative paths) `applies` to that names a pattern.
fn scan(root: &Path, applies: impl Fn(&str) -> bool, patterns: &[&str]) -> Vec<String> {
    let mut files = vec![];
    rust_files(root, &mut files);
    let mut found = vec![];
    for file in files {
        let rel = file.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
        if !applies(&rel) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for p in patterns {
                if code(line).contains(p) {
                    found.push(format!("src/{rel}:{}: `{p}`", n + 1));
                }
            }
        }
    }
    found
}

/// The supervisor appears only in `backend.rs`.
fn supervisor_outside_backend(root: &Path) -> Vec<String> {
    scan(root, |f| f != "backend.rs", &["bulkhead_supervisor"])
}

/// Nothing under `routes/` but `common.rs` reaches a model's compute side.
fn model_calls_outside_common(root: &Path) -> Vec<String> {
    let patterns =
        ["crate::batcher", "crate::backend", "SubmitError", ".submit(", ".predict(", ".infer(", "BackendError"];
    scan(root, |f| f.starts_with("routes/") && f != "routes/common.rs", &patterns)
}

/// The file a module path names, from the file `from` (`crate::a::b::Item` -> `a/b.rs`, `a/b/mod.rs`, `a.rs`
/// or `a/mod.rs`, the longest that exists).
fn resolve(root: &Path, from: &Path, path: &str) -> Option<PathBuf> {
    let mut parts: Vec<&str> = path.split("::").map(str::trim).collect();
    let mut base: Vec<String> = vec![];
    match parts.first().copied() {
        Some("crate") => {
            parts.remove(0);
        }
        Some("super") | Some("self") => {
            // The module of `from`: its folder for `mod.rs`/`lib.rs`, else the folder plus its stem.
            let rel = from.strip_prefix(root).ok()?;
            let mut module: Vec<String> =
                rel.parent().map(|p| p.iter().map(|c| c.to_string_lossy().into_owned()).collect()).unwrap_or_default();
            let stem = rel.file_stem()?.to_string_lossy().into_owned();
            if stem != "mod" && stem != "lib" {
                module.push(stem);
            }
            while let Some(&p) = parts.first() {
                match p {
                    "super" => {
                        module.pop()?;
                    }
                    "self" => {}
                    _ => break,
                }
                parts.remove(0);
            }
            base = module;
        }
        _ => return None,
    }
    let mut best = None;
    let mut segs = base.clone();
    for p in parts {
        let p = p.trim_matches(|c: char| c == '{' || c == '}' || c == ';' || c == ',');
        if p.is_empty() || !p.chars().all(|c| c.is_alphanumeric() || c == '_') {
            break;
        }
        segs.push(p.to_string());
        let joined = segs.join("/");
        for cand in [root.join(format!("{joined}.rs")), root.join(&joined).join("mod.rs")] {
            if cand.is_file() {
                best = Some(cand);
            }
        }
    }
    best.or_else(|| {
        (!base.is_empty()).then(|| {
            let joined = base.join("/");
            let file = root.join(format!("{joined}.rs"));
            if file.is_file() {
                file
            } else {
                root.join(joined).join("mod.rs")
            }
        })
    })
}

/// Every import edge between files: (from, to, line).
fn edges(root: &Path) -> Vec<(PathBuf, PathBuf, usize)> {
    let mut files = vec![];
    rust_files(root, &mut files);
    let mut out = vec![];
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let mut in_tests = false;
        for (n, line) in text.lines().enumerate() {
            let c = code(line);
            if c.trim_start().starts_with("#[cfg(test)]") {
                in_tests = true;
            }
            if in_tests {
                continue;
            }
            for start in ["crate::", "super::", "self::"] {
                for (i, _) in c.match_indices(start) {
                    if i > 0 && c[..i].ends_with(|ch: char| ch.is_alphanumeric() || ch == '_' || ch == ':') {
                        continue;
                    }
                    let rest: String = c[i..]
                        .chars()
                        .take_while(|ch| ch.is_alphanumeric() || *ch == '_' || *ch == ':' || *ch == '{')
                        .collect();
                    if let Some(to) = resolve(root, file, &rest) {
                        if &to != file && to.is_file() {
                            out.push((file.clone(), to, n + 1));
                        }
                    }
                }
            }
        }
    }
    out
}

/// A cycle of file imports, as `a.rs:3 -> b.rs:7 -> a.rs`, if there is one.
fn cycle(root: &Path) -> Option<String> {
    let mut graph: BTreeMap<PathBuf, Vec<(PathBuf, usize)>> = BTreeMap::new();
    for (from, to, line) in edges(root) {
        graph.entry(from).or_default().push((to, line));
    }
    fn visit(
        node: &PathBuf,
        graph: &BTreeMap<PathBuf, Vec<(PathBuf, usize)>>,
        state: &mut BTreeMap<PathBuf, u8>,
        stack: &mut Vec<(PathBuf, usize)>,
    ) -> Option<Vec<(PathBuf, usize)>> {
        state.insert(node.clone(), 1);
        for (next, line) in graph.get(node).into_iter().flatten() {
            stack.push((node.clone(), *line));
            match state.get(next).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|(f, _)| f == next).unwrap_or(0);
                    let mut found = stack[start..].to_vec();
                    found.push((next.clone(), 0));
                    return Some(found);
                }
                0 => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
            stack.pop();
        }
        state.insert(node.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(node, &graph, &mut state, &mut vec![]) {
                let show = |(f, l): &(PathBuf, usize)| {
                    let rel = f.strip_prefix(root).unwrap_or(f).display().to_string();
                    if *l > 0 {
                        format!("src/{rel}:{l}")
                    } else {
                        format!("src/{rel}")
                    }
                };
                return Some(c.iter().map(show).collect::<Vec<_>>().join(" -> "));
            }
        }
    }
    None
}

#[test]
fn handlers_never_touch_the_supervisor() {
    let found = supervisor_outside_backend(&src());
    assert!(found.is_empty(), "only src/backend.rs may name the supervisor crate:\n{}", found.join("\n"));
}

#[test]
fn every_route_reaches_a_model_through_the_shared_path() {
    let found = model_calls_outside_common(&src());
    assert!(found.is_empty(), "routes reach a model only through routes/common.rs:\n{}", found.join("\n"));
}

#[test]
fn the_modules_import_each_other_without_a_cycle() {
    assert!(edges(&src()).len() > 20, "the import scan found too few edges to be reading the source");
    if let Some(c) = cycle(&src()) {
        panic!("an import cycle: {c}");
    }
}

#[test]
fn the_checks_find_planted_violations() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("routes")).unwrap();
    std::fs::write(root.join("lib.rs"), "mod routes;\nmod state;\nmod backend;\n").unwrap();
    std::fs::write(root.join("backend.rs"), "use bulkhead_supervisor::Job;\n").unwrap();
    std::fs::write(root.join("routes/mod.rs"), "mod common;\nmod rerank;\n").unwrap();
    std::fs::write(root.join("routes/common.rs"), "use crate::batcher::SubmitError;\n").unwrap();
    std::fs::write(
        root.join("routes/rerank.rs"),
        "use bulkhead_supervisor::TypedRow;\nuse crate::state::AppState;\nfn f() { model.batcher.submit(rows); }\n",
    )
    .unwrap();
    std::fs::write(root.join("state.rs"), "use crate::routes::rerank::f;\n").unwrap();
    assert_eq!(supervisor_outside_backend(root), ["src/routes/rerank.rs:1: `bulkhead_supervisor`"]);
    assert_eq!(model_calls_outside_common(root), ["src/routes/rerank.rs:3: `.submit(`"]);
    let c = cycle(root).expect("state.rs and routes/rerank.rs import each other");
    assert!(c.contains("src/state.rs:1") && c.contains("src/routes/rerank.rs:2"), "{c}");
    // Without the back edge there is no cycle.
    std::fs::write(root.join("state.rs"), "// use crate::routes::rerank::f;\n").unwrap();
    assert_eq!(cycle(root), None);
}
