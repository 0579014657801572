#!/usr/bin/env bash
# Baseline PURE: min-form credit assignment (temperature 0.1).
source "$(dirname "$0")/common.sh"
submit pure_1.5b Qwen/Qwen2.5-Math-1.5B --algo.advantage.estimator pure "${PRM_ARGS[@]}" --prpo.pure_temperature 0.1
