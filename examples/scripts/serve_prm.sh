#!/usr/bin/env bash
# Start one shared PRM service (the paper served one PRM to three trainings at once).
# Bind to a cluster-internal address on purpose, and set a token: PRPO_PRM_TOKEN must be
# exported here and in each training's environment.
set -euo pipefail
: "${PRPO_PRM_TOKEN:?export PRPO_PRM_TOKEN=<a secret shared with the trainings>}"
prpo-serve-prm --model "${PRM_MODEL:-Qwen/Qwen2.5-Math-PRM-7B}" --backend vllm \
  --host "${PRM_HOST:-127.0.0.1}" --port "${PRM_PORT:-8600}" --token-env PRPO_PRM_TOKEN
