//! Strict mode: under `BULKHEAD_TEST_STRICT=1` a test that would skip fails, naming what is missing; without it the
//! test prints `skipping:` and passes; `BULKHEAD_TEST_ALLOW_SKIP` exempts the skips it names. Each case runs this
//! test binary again as a real process with the environment under test.

use std::process::Command;

/// Runs the ignored test `name` of this binary with `env`; (passed, stdout + stderr).
fn run(name: &str, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", name, "--ignored", "--nocapture", "--test-threads", "1"]);
    cmd.env_remove("BULKHEAD_TEST_STRICT").env_remove("BULKHEAD_TEST_ALLOW_SKIP").envs(env.iter().copied());
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A test whose model is absent (run only by the cases below).
#[test]
#[ignore]
fn needs_an_absent_model() {
    let Some(_) = bulkhead_testkit::need(None::<()>, "the unobtainium-model package") else { return };
    unreachable!("the value is absent");
}

/// A test whose host lacks a capability (run only by the cases below).
#[test]
#[ignore]
fn needs_an_absent_capability() {
    bulkhead_testkit::skip("no writable memory cgroup (v1) here");
}

#[test]
fn without_strict_mode_a_missing_model_skips_and_passes() {
    let (passed, out) = run("needs_an_absent_model", &[]);
    assert!(passed, "{out}");
    assert!(out.contains("skipping: the unobtainium-model package is absent (run scripts/setup.sh --test)"), "{out}");
    let (passed, out) = run("needs_an_absent_model", &[("BULKHEAD_TEST_STRICT", "0")]);
    assert!(passed && out.contains("skipping:"), "{out}");
}

#[test]
fn strict_mode_turns_a_skip_into_a_failure_naming_what_is_missing() {
    for name in ["needs_an_absent_model", "needs_an_absent_capability"] {
        let (passed, out) = run(name, &[("BULKHEAD_TEST_STRICT", "1")]);
        assert!(!passed, "{name} passed in strict mode: {out}");
        assert!(out.contains("BULKHEAD_TEST_STRICT is set and this test would skip"), "{out}");
        assert!(out.contains("scripts/setup.sh --test"), "{out}");
        assert!(!out.contains("skipping:"), "{out}");
    }
    let (_, out) = run("needs_an_absent_model", &[("BULKHEAD_TEST_STRICT", "1")]);
    assert!(out.contains("the unobtainium-model package is absent"), "{out}");
}

#[test]
fn strict_mode_allows_only_the_skips_it_is_told_to() {
    let allow = [("BULKHEAD_TEST_STRICT", "1"), ("BULKHEAD_TEST_ALLOW_SKIP", "memory cgroup, userns")];
    let (passed, out) = run("needs_an_absent_capability", &allow);
    assert!(passed && out.contains("skipping: no writable memory cgroup"), "{out}");
    let (passed, out) = run("needs_an_absent_model", &allow);
    assert!(!passed && out.contains("unobtainium-model"), "{out}");
}
