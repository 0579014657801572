# Two entry points for a fresh machine: `make run` (the main job) and `make test` (CI's suite).
# Both build the pinned CPU environment in .venv first; a second build returns in seconds.
PY := .venv/bin/python
PYTEST_CI := -m "not slow and not gpu" -q -p no:cacheprovider

.PHONY: env run demo test test-all test-gpu bench clean-env

env:
	bash scripts/setup_cpu_env.sh

run: env
	$(PY) -m prpo_openrlhf.local train

demo: env
	$(PY) -m prpo_openrlhf.local.demo

test: env
	$(PY) -m pytest $(PYTEST_CI)

test-all: env
	$(PY) -m pytest -m "not gpu" -q

test-gpu:
	python -m pytest -m gpu -q

bench: env
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean-env:
	rm -rf .venv
