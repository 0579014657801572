#!/usr/bin/env bash
# Baseline REINFORCE++-baseline: OpenRLHF's reinforce_baseline, no PRM.
source "$(dirname "$0")/common.sh"
submit reinforce_pp_baseline_1.5b Qwen/Qwen2.5-Math-1.5B --algo.advantage.estimator reinforce_baseline
