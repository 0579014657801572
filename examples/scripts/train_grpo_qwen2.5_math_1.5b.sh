#!/usr/bin/env bash
# Baseline GRPO: OpenRLHF's group_norm, no PRM.
source "$(dirname "$0")/common.sh"
submit grpo_1.5b Qwen/Qwen2.5-Math-1.5B --algo.advantage.estimator group_norm
