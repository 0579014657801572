# Two entry points for a fresh machine: `make run` (the main job: PRPO through train_prpo_ray on the
# embedded task) and `make test` (CI's suite).
# Both build the pinned CPU environment in .venv first; a second build returns in seconds.
PY := .venv/bin/python
PYTEST_CI := -m "not slow and not gpu" -q -p no:cacheprovider

.PHONY: env run compare demo test test-all test-gpu gpu-check gpu-check-smoke gpu-wheels bench clean-env

env:
	bash scripts/setup_cpu_env.sh

# RUN_PRM=exact: the exact verifier as the PRM (the oracle arm); learned: the shipped learned PRM.
RUN_PRM ?= learned
run: env
	$(PY) -m prpo_openrlhf.local.embedded run --run.prm $(RUN_PRM)

# The paper's Tables 2 and 4 on the embedded task through train_prpo_ray: every method x seed x PRM
# arm is one `make run`-sized training (about 10 min each on 2 cores); finished runs are reused.
# COMPARE_ARGS narrows it, e.g. COMPARE_ARGS="--compare.seeds 42 --compare.prms learned".
COMPARE_ARGS ?=
compare: env
	$(PY) -m prpo_openrlhf.local.embedded_compare $(COMPARE_ARGS)

demo: env
	$(PY) -m prpo_openrlhf.local.demo

test: env
	$(PY) -m pytest $(PYTEST_CI)

test-all: env
	$(PY) -m pytest -m "not gpu" -q

test-gpu:
	python -m pytest -m gpu -q

# GPU readiness check (docs/testing.md): on a lent GPU machine, with the machine's python3 and the
# wheels of `make gpu-wheels` carried in build/gpu-wheels. GPU_CHECK_OUT picks the report folder.
GPU_CHECK_OUT ?= runs/gpu-check
gpu-check:
	bash scripts/gpu_check.sh $(GPU_CHECK_OUT)

# The same check at tiny sizes on CPU, shaped like the GPU image (what CI runs: tests/test_gpu_check.py).
gpu-check-smoke: env gpu-wheels
	bash scripts/gpu_check.sh --cpu-smoke $(GPU_CHECK_OUT)-smoke

# Wheels the GPU image lacks (openrlhf, deepspeed, flash-attn's Python part, math-verify, ...), into
# build/gpu-wheels (ignored by git; about 6 MB).
gpu-wheels: env
	bash scripts/gpu_check/wheels.sh build/gpu-wheels

bench: env
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean-env:
	rm -rf .venv
