//! The supervisor crate's checkable architecture invariants, as tests (see the crate's `lib.rs`): the policy core
//! (`src/supervisor/policy/`) reads no clock, touches no file, process or pipe, and holds no type that does; it
//! imports nothing from the modules that do (`client/`, `history.rs`, `worker/`, the actor).
//!
//! The check reads the source: each line of every `.rs` file under the policy (comments left out) is matched
//! against the forbidden patterns, and a violation fails with `file:line`. The table tests under `policy/tests/`
//! are the one exception: they need a real `Instant` as the origin of their simulated clock.

use std::path::{Path, PathBuf};

/// What the policy core must never name, and why.
const FORBIDDEN: &[(&str, &str)] = &[
    ("Instant::now", "reads the monotonic clock (the time comes with each event)"),
    ("SystemTime", "reads the wall clock (the Unix time comes with each event)"),
    ("std::fs", "touches the file system"),
    ("std::process", "touches processes"),
    ("std::io", "does I/O"),
    ("std::net", "does I/O"),
    ("std::thread", "sleeps or spawns threads"),
    ("File", "holds a file"),
    ("ChildStdin", "holds a pipe"),
    ("ChildStdout", "holds a pipe"),
    ("Command", "starts processes"),
    ("tokio", "runs async I/O"),
    ("libc", "calls the operating system"),
    ("crate::client", "imports the worker client (processes, pipes, /proc): its types belong in the policy"),
    ("crate::history", "imports the history file's module: crash records belong in the policy"),
    ("crate::worker", "imports the worker body"),
    ("actor::", "imports the actor that runs the I/O"),
];

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

/// The code of a line: what precedes a `//` comment (string literals in the policy hold no `//`).
fn code(line: &str) -> &str {
    line.find("//").map_or(line, |i| &line[..i])
}

/// Whether `code` names `pattern` as a whole word (`File` is not in `ModelFiles`, nor `actor::` in `factor::`).
fn names(code: &str, pattern: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(pattern).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + pattern.len()..].chars().next();
        let glued_before = before.is_some_and(word);
        let glued_after = pattern.ends_with(word) && after.is_some_and(word);
        !glued_before && !glued_after
    })
}

/// Every `file:line: pattern (why)` under `dir` (files under `skip` left out).
fn violations(dir: &Path, forbidden: &[(&str, &str)], skip: Option<&Path>) -> Vec<String> {
    let mut files = vec![];
    rust_files(dir, &mut files);
    assert!(!files.is_empty(), "no source under {}", dir.display());
    let mut found = vec![];
    for file in files.iter().filter(|f| skip.is_none_or(|s| !f.starts_with(s))) {
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for (n, line) in text.lines().enumerate() {
            for (pattern, why) in forbidden {
                if names(code(line), pattern) {
                    found.push(format!("{}:{}: `{pattern}` {why}", file.display(), n + 1));
                }
            }
        }
    }
    found
}

fn policy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/supervisor/policy")
}

#[test]
fn the_policy_core_does_no_io() {
    let dir = policy_dir();
    let found = violations(&dir, FORBIDDEN, Some(&dir.join("tests")));
    assert!(found.is_empty(), "the policy core must do no I/O:\n{}", found.join("\n"));
}

#[test]
fn the_check_finds_a_planted_violation() {
    // The same scan on a copy of the policy with one clock read planted must fail, naming the file and line.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("policy");
    std::fs::create_dir(&copy).unwrap();
    let mut files = vec![];
    rust_files(&policy_dir(), &mut files);
    let first = files.iter().find(|f| f.parent() == Some(&policy_dir())).unwrap();
    let text = std::fs::read_to_string(first).unwrap();
    std::fs::write(copy.join("planted.rs"), format!("{text}\nfn clock() {{ let _ = std::time::Instant::now(); }}\n"))
        .unwrap();
    let found = violations(&copy, FORBIDDEN, None);
    let planted = format!("planted.rs:{}: `Instant::now`", text.lines().count() + 2);
    assert!(found.len() == 1 && found[0].contains(&planted), "{found:?}");
    // A comment naming a pattern is not code, and a word containing one is not the pattern.
    std::fs::write(copy.join("planted.rs"), "// never Instant::now here\nfn f(factor: ModelFiles) {}\n").unwrap();
    assert!(violations(&copy, FORBIDDEN, None).is_empty());
    std::fs::write(copy.join("planted.rs"), "use crate::client::proc::ProcStat;\nfn f(_: std::fs::File) {}\n").unwrap();
    assert_eq!(violations(&copy, FORBIDDEN, None).len(), 3, "crate::client, std::fs and File");
}
