#!/usr/bin/env bash
# PRPO (GRPO+PRPO in the paper), Qwen2.5-Math-1.5B, Qwen2.5-Math-PRM-7B on its own GPUs.
source "$(dirname "$0")/common.sh"
submit prpo_1.5b Qwen/Qwen2.5-Math-1.5B --algo.advantage.estimator prpo "${PRM_ARGS[@]}"
