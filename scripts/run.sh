#!/usr/bin/env bash
# One command from a fresh machine to the main job: installs the runtime and the default model (scripts/setup.sh),
# builds bulkhead in release mode, then serves the default model (all-MiniLM-L6-v2) on http://127.0.0.1:8080.
# Extra arguments are passed to bulkhead instead (e.g. `scripts/run.sh serve --port 9000`, `scripts/run.sh units`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh
printf '\033[1m[build]\033[0m cargo build --release (a cold build takes a few minutes on 2 cores)\n' >&2
cargo build --release --locked -p bulkhead
bin="$root/target/release/bulkhead"
if [ $# -gt 0 ]; then
  exec "$bin" "$@"
fi
exec "$bin" serve
