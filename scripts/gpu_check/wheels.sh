#!/usr/bin/env bash
# Build the folder of wheels that scripts/gpu_check.sh carries to a GPU machine (`make gpu-wheels`).
#
#   bash scripts/gpu_check/wheels.sh [DIR]     # DIR defaults to build/gpu-wheels
#
# The GPU image has torch, transformers, accelerate, peft, safetensors, matplotlib, tensorboard
# and pytest, not OpenRLHF, DeepSpeed or flash-attn, and nothing can be downloaded there. What
# part 2 imports beyond the image (OpenRLHF's PolicyLoss and compute_approx_kl pull in
# openrlhf.models, hence deepspeed and flash_attn; the grader needs math-verify) comes from
# here, at the versions of requirements/constraints-cpu.txt:
#   - openrlhf (its PyPI wheel is tagged cp311 but holds only Python: re-tagged py3-none-any),
#     deepspeed (sdist built into a wheel without its ops), flash-attn (Python part only, as
#     scripts/setup_cpu_env.sh builds it; gpu_check.sh adds the flash_attn_2_cuda stand-in),
#     einops, py-cpuinfo, hjson, msgpack (one wheel per CPython 3.10-3.13), pylatexenc,
#     math-verify, latex2sympy2_extended, antlr4-python3-runtime.
# (The embedded policy is shipped in the package: nothing of it is carried.)
# About 6 MB. Uses this machine's pip sources (the ones scripts/setup_cpu_env.sh used); a second
# run with the same inputs returns at once (stamp).
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=build/gpu-wheels
for a in "$@"; do
  case "$a" in
    -*) echo "unknown option $a" >&2; exit 2 ;;
    *) DIR=$a ;;
  esac
done
PY=${PYTHON:-.venv/bin/python}
C=requirements/constraints-cpu.txt
STAMP=$DIR/.stamp
want=$(cat "$C" scripts/gpu_check/wheels.sh | sha256sum | cut -d' ' -f1)
have_wheels=0
[ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && have_wheels=1
mkdir -p "$DIR"
PIP=(pip_q)
pip_q() { "$PY" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
if [ $have_wheels = 0 ]; then
  rm -f "$DIR"/*.whl
  echo "[gpu-wheels] downloading into $DIR"
  "${PIP[@]}" download --no-deps -c "$C" -d "$DIR" openrlhf==0.11.2 einops py-cpuinfo hjson pylatexenc \
    math-verify latex2sympy2_extended antlr4-python3-runtime
  for v in 3.10 3.11 3.12 3.13; do
    "${PIP[@]}" download --no-deps -c "$C" -d "$DIR" --only-binary :all: --python-version "$v" \
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 msgpack
  done
  echo "[gpu-wheels] deepspeed and flash-attn (Python parts; pip's wheel cache makes this quick after make env)"
  DS_BUILD_OPS=0 FLASH_ATTENTION_FORCE_BUILD=TRUE FLASH_ATTENTION_SKIP_CUDA_BUILD=TRUE \
    "${PIP[@]}" wheel --no-deps --no-build-isolation -c "$C" -w "$DIR" deepspeed==0.19.6 flash-attn==2.8.3
  for w in "$DIR"/openrlhf-*-cp*.whl "$DIR"/pylatexenc-*-cp*.whl; do
    [ -e "$w" ] || continue
    if "$PY" -c "import sys, zipfile; sys.exit(any(n.endswith(('.so', '.pyd')) for n in zipfile.ZipFile(sys.argv[1]).namelist()))" "$w"; then
      "$PY" -m wheel tags --python-tag py3 --abi-tag none --platform-tag any --remove "$w" >/dev/null
    fi
  done
  echo "$want" > "$STAMP"
fi
ls -la "$DIR" | sed 's/^/[gpu-wheels] /'
du -sh "$DIR" | sed 's/^/[gpu-wheels] total /'
