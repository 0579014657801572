#!/usr/bin/env bash
# GPU readiness check (issue #17): every GPU path of the project that runs without vLLM, Ray or
# DeepSpeed, in one command sized to finish in under 8 minutes on one H200 (docs/testing.md).
#
#   bash scripts/gpu_check.sh [options] OUT_DIR
#
#   --cpu-smoke          tiny sizes, CUDA replaced by CPU (CI runs this: tests/test_gpu_check.py)
#   --wheels DIR         carried wheels to install offline (default: build/gpu-wheels if present;
#                        `make gpu-wheels` builds it)
#   --no-wheels          install nothing
#   --block-missing      hide every package the GPU image lacks (scripts/gpu_check/image.py) from
#                        Python, so imports fail here exactly as there; default with --cpu-smoke
#   --no-block-missing   do not (the default on a GPU machine, whose image really lacks them)
#   --python PATH        interpreter (default: python3; with --cpu-smoke .venv/bin/python if present)
#   --parts LIST         run only these parts, e.g. 2,3 (default 1,2,3,4,5)
#
# Parts (each its own process and time cap; one failing does not stop the others):
#   1 pytest -m gpu on the gpu-marked test modules (the vLLM V2 tests skip without vLLM)
#   2 the shipped policy: held-out greedy CUDA vs CPU, one PRPO experience, its loss on both, 20 updates
#   3 PRMScorer hf bf16 on CUDA vs fp32 on CPU; bench_prm's 7B-shaped bf16 tokens/s and TFLOP/s
#   4 segment_batch + prpo_advantages on 1024 x 2048 on CUDA: ms per batch, equal to CPU
#   5 logits_entropy in bf16 vs fp32 on a 151,936-token output layer on CUDA
# Writes OUT_DIR/report.json and OUT_DIR/summary.txt; exits 0 only if every part passed.
# Installs nothing from the network. Relative paths are taken from the repository root.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=gpu BLOCK= WHEELS= NO_WHEELS=0 PY= PARTS=1,2,3,4,5 OUT=
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-smoke) MODE=smoke ;;
    --wheels) WHEELS=$2; shift ;;
    --no-wheels) NO_WHEELS=1 ;;
    --block-missing) BLOCK=1 ;;
    --no-block-missing) BLOCK=0 ;;
    --python) PY=$2; shift ;;
    --parts) PARTS=$2; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
    *) OUT=$1 ;;
  esac
  shift
done
[ -n "$OUT" ] || { echo "usage: bash scripts/gpu_check.sh [--cpu-smoke] [--wheels DIR] OUT_DIR" >&2; exit 2; }
if [ -z "$PY" ]; then
  PY=python3
  [ "$MODE" = smoke ] && [ -x "$ROOT/.venv/bin/python" ] && PY=$ROOT/.venv/bin/python
fi
[ -z "$BLOCK" ] && { [ "$MODE" = smoke ] && BLOCK=1 || BLOCK=0; }
if [ -z "$WHEELS" ] && [ $NO_WHEELS = 0 ] && [ -d "$ROOT/build/gpu-wheels" ]; then WHEELS=$ROOT/build/gpu-wheels; fi
[ $NO_WHEELS = 1 ] && WHEELS=
if [ -n "$WHEELS" ]; then
  [ -d "$WHEELS" ] || { echo "gpu_check.sh: no wheels folder $WHEELS (make gpu-wheels)" >&2; exit 2; }
  WHEELS=$(cd "$WHEELS" && pwd)
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
t0=$(date +%s)
log() { echo "[gpu-check $(( $(date +%s) - t0 ))s] $*"; }

CARRIED=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_carried.XXXXXX")
trap 'rm -rf "$CARRIED"' EXIT
unset GPU_CHECK_BLOCK GPU_CHECK_BLOCK_DISTS GPU_CHECK_ALLOW_DIRS GPU_CHECK_WARMUP_CACHE GPU_CHECK_WHEELS GPU_CHECK_BLOCKED
# PYTHONPATH: the repository first (its top-level `tests` must win over the stray one that
# flash-attn's wheel ships), then the carried wheels, then the blocker's sitecustomize.
PP_TAIL=
if [ "$BLOCK" = 1 ]; then
  # The lists come from this interpreter's full environment, before anything is hidden.
  lists=$(PYTHONPATH= "$PY" "$ROOT/scripts/gpu_check/image.py") || { echo "gpu_check.sh: image.py failed" >&2; exit 2; }
  export GPU_CHECK_BLOCK=$(echo "$lists" | sed -n 's/^GPU_CHECK_BLOCK=//p')
  export GPU_CHECK_BLOCK_DISTS=$(echo "$lists" | sed -n 's/^GPU_CHECK_BLOCK_DISTS=//p')
  export GPU_CHECK_ALLOW_DIRS=$CARRIED
  export GPU_CHECK_BLOCKED="$(echo "$GPU_CHECK_BLOCK_DISTS" | tr ',' '\n' | grep -c .) distributions outside the GPU image hidden"
  PP_TAIL=$ROOT/scripts/gpu_check/blocker
  log "import blocker on: $GPU_CHECK_BLOCKED (vllm, ray, deepspeed, openrlhf, flash_attn among them)"
fi
if [ -n "$WHEELS" ]; then
  log "installing the carried wheels of $WHEELS (offline)"
  PYTHONPATH= "$PY" "$ROOT/scripts/gpu_check/install_wheels.py" "$WHEELS" "$CARRIED" || log "carried wheels not installed: the parts that need them will fail"
  PP_TAIL=$CARRIED${PP_TAIL:+:$PP_TAIL}
  export GPU_CHECK_WHEELS=$WHEELS
else
  log "no carried wheels: part 2 needs openrlhf (PolicyLoss) and the grader math-verify (make gpu-wheels)"
fi
export PYTHONPATH=$ROOT${PP_TAIL:+:$PP_TAIL}${PYTHONPATH:+:$PYTHONPATH}
export PYTHONDONTWRITEBYTECODE=1
log "mode $MODE, python $PY, output $OUT"
"$PY" "$ROOT/scripts/gpu_check/driver.py" --mode "$MODE" --out "$OUT" --parts "$PARTS"
rc=$?
log "done: exit $rc (report $OUT/report.json, summary $OUT/summary.txt)"
exit $rc
