#!/usr/bin/env bash
# The chaos harness (crates/bulkhead/examples/chaos.rs): a real `bulkhead serve` under a real keep-alive load while
# real signals hit the serving worker from outside, then the every-4th-prediction crash chain, then a restart on the
# same crash history. Prints one table per run and exits 1 when a request failed, /health was not 200 afterwards or
# the restart did not serve.
#   scripts/chaos.sh                 # the measurement: 10 x SIGSEGV/SIGKILL/SIGABRT/SIGSTOP in 60 s at 32 connections
#   scripts/chaos.sh --short         # the CI run (about a minute, debug build): fewer seconds and connections
#   scripts/chaos.sh --replicas      # 1 worker x 2 threads vs 2 workers x 1 thread, quiet and under the storm
#   scripts/chaos.sh [...] -- ARGS   # extra `bulkhead serve` arguments (e.g. -- --workers 2)
# Runs under `flock /tmp/bulkhead-bench.lock` so that two measurements never share the machine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mode=full
serve_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --short) mode=short ;;
    --replicas) mode=replicas ;;
    --) shift; serve_args=("$@"); break ;;
    *) echo "usage: $0 [--short|--replicas] [-- SERVE ARGS...]" >&2; exit 2 ;;
  esac
  shift
done
scripts/setup.sh >/dev/null
if [ "$mode" = short ]; then
  profile=debug; build=()
else
  profile=release; build=(--release)
fi
cargo build --locked "${build[@]}" -p bulkhead --bin bulkhead --example chaos >&2
chaos=(flock /tmp/bulkhead-bench.lock "target/$profile/examples/chaos")
bin=(--bin "target/$profile/bulkhead")
echo "# chaos ($mode), $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
case "$mode" in
  short)
    "${chaos[@]}" storm "${bin[@]}" --seconds 16 --count 4 --connections 8 --check -- "${serve_args[@]}"
    "${chaos[@]}" chain "${bin[@]}" --seconds 8 --connections 4 --check -- "${serve_args[@]}"
    ;;
  full)
    "${chaos[@]}" storm "${bin[@]}" --seconds 60 --count 10 --connections 32 --check -- "${serve_args[@]}"
    "${chaos[@]}" storm "${bin[@]}" --seconds 60 --count 10 --connections 32 --signals STOP --check -- "${serve_args[@]}"
    "${chaos[@]}" chain "${bin[@]}" --seconds 60 --connections 32 --check -- "${serve_args[@]}"
    ;;
  replicas)
    "${chaos[@]}" replicas "${bin[@]}" --seconds 20 --count 3 --connections 32 --rounds 2 -- "${serve_args[@]}"
    ;;
esac
