#!/usr/bin/env bash
# One command from a fresh machine to a full test run: set-up (runtime, models, test packages), format and lint
# checks, then every test of the workspace against real models, real ONNX Runtime and real processes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# Under CI (the variable every CI service sets) a test that would skip is a failure; a developer's partial set-up
# may skip (export BULKHEAD_TEST_STRICT=1 to check a machine as CI does).
if [ -n "${CI:-}" ] && [ "${CI}" != "false" ] && [ "${CI}" != "0" ]; then
  export BULKHEAD_TEST_STRICT="${BULKHEAD_TEST_STRICT:-1}"
fi
scripts/setup.sh --test
step() { printf '\033[1m[test]\033[0m %s\n' "$*" >&2; }
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings
step "cargo test (dependencies are optimised even in test builds; see Cargo.toml)"
cargo test --locked --workspace -- --test-threads 2
step "chaos and soak, short runs (the real server under signals from outside, a crash chain, leak and segv faults)"
scripts/chaos.sh --short
scripts/soak.sh --short
