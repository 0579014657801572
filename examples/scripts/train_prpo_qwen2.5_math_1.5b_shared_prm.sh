#!/usr/bin/env bash
# PRPO against a shared PRM service started by serve_prm.sh (several trainings may share it).
source "$(dirname "$0")/common.sh"
submit prpo_1.5b_shared Qwen/Qwen2.5-Math-1.5B --algo.advantage.estimator prpo --prm.remote_url "${PRM_URL:-http://127.0.0.1:8600}"
