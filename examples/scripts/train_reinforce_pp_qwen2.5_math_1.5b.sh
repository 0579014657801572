#!/usr/bin/env bash
# Baseline REINFORCE++: OpenRLHF's reinforce, no PRM.
source "$(dirname "$0")/common.sh"
submit reinforce_pp_1.5b Qwen/Qwen2.5-Math-1.5B --algo.advantage.estimator reinforce
