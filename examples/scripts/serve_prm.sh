#!/usr/bin/env bash
# Start one shared PRM on vLLM's own server (the paper served one PRM to three trainings at once):
# vLLM batches the requests of every training continuously and exports /health and Prometheus
# /metrics. Trainings reach it with --prm.remote_url (see train_prpo_qwen2.5_math_1.5b_shared_prm.sh).
# Bind to a cluster-internal address on purpose, and set a token: PRPO_PRM_TOKEN must be exported
# here and in each training's environment; it is required on every route but /health.
# Arguments go to vLLM's server unchanged, e.g. `serve_prm.sh --tensor-parallel-size 2`.
# For an hf-backend PRM or a Ray PRM actor group behind one URL, use prpo-serve-prm instead
# (docs/prm.md says when).
set -euo pipefail
: "${PRPO_PRM_TOKEN:?export PRPO_PRM_TOKEN=<a secret shared with the trainings>}"
exec "${PYTHON:-python}" -m prpo_openrlhf.prm.vllm_serve --model "${PRM_MODEL:-Qwen/Qwen2.5-Math-PRM-7B}" \
  --host "${PRM_HOST:-127.0.0.1}" --port "${PRM_PORT:-8600}" -- "$@"
