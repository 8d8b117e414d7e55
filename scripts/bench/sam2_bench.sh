#!/usr/bin/env bash
# SAM2 speed, bulkhead's built graphs (ONNX Runtime CPU) against transformers (torch eager), for sam2.1-hiera-tiny
# and sam2.1-hiera-small real configurations with random weights, in one run: each size is measured PASSES times,
# each pass running the built graphs and then transformers (crates/bulkhead-graph/examples/sam2_bench.rs calls
# scripts/fixtures/bench_sam2.py --time), so the two engines alternate. Prints the load average before and after.
#
#   scripts/bench/sam2_bench.sh [SIZES (default "tiny small")] [PASSES (2)] [THREADS (2)]
#
# The random-weight folders (155 / 185 MB, never committed) are written to $SAM2_DIR (default /tmp) on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."
sizes=${1:-tiny small}
passes=${2:-2}
threads=${3:-2}
python=${PYTHON:-/work/fixture-venv/bin/python}
dir=${SAM2_DIR:-/tmp}
# SAM2_BENCH_PREBUILT=1 runs target/release/examples/sam2_bench as it is instead of building it.
bench=target/release/examples/sam2_bench
[ "${SAM2_BENCH_PREBUILT:-0}" = 1 ] || cargo build -q --release -p bulkhead-graph --example sam2_bench
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
for size in $sizes; do
  folder="$dir/sam2.1-hiera-$size-random"
  [ -f "$folder/model.safetensors" ] || "$python" scripts/fixtures/bench_sam2.py --write "$folder" --size "$size"
  for pass in $(seq "$passes"); do
    echo "== sam2.1-hiera-$size, pass $pass"
    "$bench" --model "$folder" --threads "$threads" \
      --runs 3 --clicks 20 --python "$python"
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
