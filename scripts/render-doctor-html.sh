#!/usr/bin/env bash
# Renders a `bulkhead doctor --html FILE` page to PNG with headless Chromium (Debian package `chromium`), to look
# at the charts the way a user's browser shows them:
#   scripts/render-doctor-html.sh report.html report.png [WIDTHxHEIGHT]
# The page is self-contained (inline CSS and SVG, no script, no external URL), so nothing is fetched; the flags keep
# Chromium from reaching out on its own (this machine's network is closed). Exit 3 when no Chromium is installed
# (`apt-get install chromium`).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 REPORT.html OUT.png [WIDTHxHEIGHT]" >&2
  exit 2
fi
html="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
out="$2"
size="${3:-1200x3000}"
browser="${CHROMIUM:-}"
if [ -z "$browser" ]; then
  for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then browser="$(command -v "$b")"; break; fi
  done
fi
if [ -z "$browser" ]; then
  echo "no chromium found: install it with \`apt-get install chromium\` (or set CHROMIUM=/path/to/chromium)" >&2
  exit 3
fi
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
out_abs="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
rm -f "$out_abs"
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$profile" \
  --window-size="${size/x/,}" --screenshot="$out_abs" "file://$html" >/dev/null 2>&1 || true
if [ ! -s "$out_abs" ]; then
  echo "chromium ($browser) wrote no screenshot to $out_abs" >&2
  exit 1
fi
echo "$out_abs"
