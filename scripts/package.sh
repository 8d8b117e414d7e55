#!/usr/bin/env bash
# Builds the pip-installable wheel dist/bulkhead-VERSION-py3-none-PLATFORM.whl: the `bulkhead` executable, with
# `onnxruntime==1.31.1` as its dependency (the executable loads that package's libonnxruntime from the environment it
# is installed in). PLATFORM is read from the executable: manylinux_2_N_ARCH, 2.N being the newest glibc symbol
# version it needs (scripts/wheel.py). Linux only.
#
#   scripts/package.sh                     release build (cargo build --release), then the wheel
#   scripts/package.sh --binary PATH       package an executable that is already built (the tests package the one
#                                          their own build made, so CI never runs a second, release build)
#   scripts/package.sh --glibc 2.28        release build linked for an older glibc with zig (`cargo zigbuild`; ziglang
#                                          and cargo-zigbuild from PyPI, installed into .venv-zig): the wheel is then
#                                          manylinux_2_28, onnxruntime 1.31.1's own floor (RHEL 8, Ubuntu 20.04)
#   scripts/package.sh --out DIR           write the wheel to DIR instead of dist/
#   scripts/package.sh --keep-debug        keep the line tables (by default debug sections are stripped; symbols
#                                          stay, so a backtrace still names functions)
#
# Prints the wheel's path on stdout. Install it with `pip install dist/bulkhead-*.whl` (Python >= 3.11, the oldest
# that onnxruntime 1.31.1 supports).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"

# The comment block at the top of this file; exit status $1 (2: a usage error).
usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
  exit "${1:-2}"
}

binary="" out="$root/dist" strip=1 glibc=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) [ $# -ge 2 ] || usage; binary="$2"; shift 2 ;;
    --out) [ $# -ge 2 ] || usage; out="$2"; shift 2 ;;
    --keep-debug) strip=0; shift ;;
    --glibc) [ $# -ge 2 ] || usage; glibc="$2"; shift 2 ;;
    -h | --help) usage 0 ;;
    *) echo "package.sh: unknown argument '$1'" >&2; usage ;;
  esac
done

step() { printf '\033[1m[package]\033[0m %s\n' "$*" >&2; }

if [ "$(uname -s)" != "Linux" ]; then
  echo "package.sh: wheels are built on Linux only (this is $(uname -s))" >&2
  exit 1
fi
target_dir="${CARGO_TARGET_DIR:-$root/target}"
if [ -n "$binary" ] && [ -n "$glibc" ]; then
  echo "package.sh: --binary and --glibc exclude each other" >&2
  usage
elif [ -n "$glibc" ]; then
  case "$glibc" in 2.[0-9]*) ;; *) echo "package.sh: --glibc wants a version such as 2.28, not '$glibc'" >&2; usage ;; esac
  zig_venv="$root/.venv-zig"
  if [ ! -x "$zig_venv/bin/cargo-zigbuild" ] || ! "$zig_venv/bin/python" -m ziglang version >/dev/null 2>&1; then
    step "installing ziglang and cargo-zigbuild into $zig_venv"
    "$py" -m venv "$zig_venv"
    "$zig_venv/bin/python" -m pip install -q --disable-pip-version-check ziglang==0.17.1 cargo-zigbuild==0.24.1
  fi
  triple="$(uname -m)-unknown-linux-gnu"
  step "cargo zigbuild --release --target $triple.$glibc (a separate build of every crate: ~13+ minutes on 2 cores)"
  # cargo-zigbuild runs zig through `python3 -m ziglang`: the environment's python3 comes first on PATH.
  (cd "$root" && PATH="$zig_venv/bin:$PATH" cargo-zigbuild zigbuild --release --locked -p bulkhead --target "$triple.$glibc")
  binary="$target_dir/$triple/release/bulkhead"
elif [ -z "$binary" ]; then
  step "cargo build --release -p bulkhead (a cold build takes ~13 minutes on 2 cores)"
  (cd "$root" && cargo build --release --locked -p bulkhead)
  binary="$target_dir/release/bulkhead"
fi
if [ ! -x "$binary" ] || [ "$(head -c 4 "$binary" | od -An -c | tr -d ' ')" != '177ELF' ]; then
  echo "package.sh: $binary is not an executable ELF file (give the bulkhead executable)" >&2
  exit 1
fi

# The version is the executable's own (`bulkhead --version` prints `bulkhead X.Y.Z`).
version="$("$binary" --version 2>/dev/null | sed -n '1s/^bulkhead \([0-9][0-9A-Za-z.+-]*\)$/\1/p' || true)"
if [ -z "$version" ]; then
  echo "package.sh: $binary is not the bulkhead executable (\`--version\` does not print \`bulkhead X.Y.Z\`)" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$binary" "$work/bulkhead"
chmod 755 "$work/bulkhead"
if [ "$strip" = 1 ]; then
  if command -v strip >/dev/null 2>&1; then
    strip --strip-debug "$work/bulkhead"
  else
    step "strip (binutils) not found: the executable keeps its debug sections"
  fi
fi

mkdir -p "$out"
rm -f "$out"/bulkhead-"$version"-*.whl
step "writing the wheel for bulkhead $version ($(du -h "$work/bulkhead" | cut -f1) executable)"
"$py" "$root/scripts/wheel.py" --binary "$work/bulkhead" --version "$version" --out "$out" \
  --license "$root/LICENSE-MIT" --license "$root/LICENSE-APACHE"
