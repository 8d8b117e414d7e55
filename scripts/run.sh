#!/usr/bin/env bash
# One command from a fresh machine to the main job: installs the runtime and the default model (scripts/setup.sh),
# builds bulkhead in release mode, then runs it on the default model (all-MiniLM-L6-v2).
# Extra arguments are passed to bulkhead (default: an `embed` demo).
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
"$bin" units
exec "$bin" embed --json "bulkhead runs models on unreliable compute units safely." \
  | python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({k: (v if k != "embeddings" else [e[:4] + ["..."] for e in v]) for k, v in d.items() if k in ("model","unit","dimensions","embeddings","timing_ms","precision","skipped")}, indent=2))'
