#!/usr/bin/env bash
# The soak (crates/bulkhead/examples/chaos.rs, mode `soak`): `bulkhead serve` under constant load while its worker
# leaks 2 MiB per prediction (recycled past 150 MiB of growth) and segfaults every 1,500 predictions. Prints the
# resident memory of the server and of the workers over time; exits 1 when a request failed or the workers' memory
# passed its bound.
#   scripts/soak.sh                 # one hour, sampled every minute
#   scripts/soak.sh --seconds 600   # another length
#   scripts/soak.sh --short         # the CI run (40 s, debug build)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
seconds=3600 sample=60 profile=release build=(--release) connections=8
while [ $# -gt 0 ]; do
  case "$1" in
    --short) seconds=40 sample=10 profile=debug build=() connections=4 ;;
    --seconds) seconds="$2"; shift ;;
    *) echo "usage: $0 [--short] [--seconds N]" >&2; exit 2 ;;
  esac
  shift
done
scripts/setup.sh >/dev/null
cargo build --locked "${build[@]}" -p bulkhead --bin bulkhead --example chaos >&2
echo "# soak, $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
flock /tmp/bulkhead-bench.lock "target/$profile/examples/chaos" soak --bin "target/$profile/bulkhead" \
  --seconds "$seconds" --sample-s "$sample" --connections "$connections" --check
