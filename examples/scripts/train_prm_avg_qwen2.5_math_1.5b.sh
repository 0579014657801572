#!/usr/bin/env bash
# Baseline PRM-Avg: R + mean of segment scores, group-normalised.
source "$(dirname "$0")/common.sh"
submit prm_avg_1.5b Qwen/Qwen2.5-Math-1.5B --algo.advantage.estimator prm_avg "${PRM_ARGS[@]}"
