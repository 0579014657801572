#!/usr/bin/env bash
# PRM-Avg+PRPO: z_t + (R' - mean_g R').
source "$(dirname "$0")/common.sh"
submit prm_avg_prpo_1.5b Qwen/Qwen2.5-Math-1.5B --algo.advantage.estimator prm_avg_prpo "${PRM_ARGS[@]}"
