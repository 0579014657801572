#!/usr/bin/env bash
# PRPO, Qwen2.5-Math-7B (ZeRO-3 for the 7B policy), Qwen2.5-Math-PRM-7B on its own GPUs.
source "$(dirname "$0")/common.sh"
submit prpo_7b Qwen/Qwen2.5-Math-7B --algo.advantage.estimator prpo "${PRM_ARGS[@]}" --ds.zero_stage 3
