#!/usr/bin/env bash
# PRPO on the embedded arithmetic task on one CPU machine (what `make run` launches): the 1.5B
# script, train_prpo_qwen2.5_math_1.5b.sh, with the package's shipped tiny policy and learned PRM,
# the task's training prompts, and laptop sizes. Needs a Ray cluster with 4 logical GPUs at
# RAY_ADDRESS (`make run` starts a private one; scripts/run_tiny_cpu.sh starts one too).
# Any other launch script runs the same way: EMBEDDED_SCRIPT=train_grpo_qwen2.5_math_1.5b.sh.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VENV_PYTHON="$HERE/../../.venv/bin/python"   # `make env`'s, when there is one
[ -x "$VENV_PYTHON" ] || VENV_PYTHON=python
PYTHON=${PYTHON:-$VENV_PYTHON}
# Paths: the shipped models and the prompt file (written on first use), unless set.
if [ -z "${POLICY_MODEL:-}" ] || [ -z "${PRM_MODEL:-}" ] || [ -z "${PROMPT_DATA:-}" ]; then
  while IFS= read -r line; do
    name=${line%%=*}
    [ -n "${!name:-}" ] || export "$line"
  done < <("$PYTHON" -m prpo_openrlhf.local.embedded paths | grep -E '^(POLICY_MODEL|PRM_MODEL|PROMPT_DATA)=')
fi
# Sizes: one logical GPU each for actor, reference, vLLM and the PRM; 16 prompts x 8 samples a
# step, two optimizer steps of 64; one pass over PROMPT_DATA (960 prompts: 60 steps).
export ACTOR_GPUS=${ACTOR_GPUS:-1} REF_GPUS=${REF_GPUS:-1} VLLM_ENGINES=${VLLM_ENGINES:-1} PRM_GPUS=${PRM_GPUS:-1}
export ROLLOUT_BATCH=${ROLLOUT_BATCH:-16} N_SAMPLES=${N_SAMPLES:-8} ROLLOUT_MICRO_BATCH=${ROLLOUT_MICRO_BATCH:-16}
export TRAIN_BATCH=${TRAIN_BATCH:-64} TRAIN_MICRO_BATCH=${TRAIN_MICRO_BATCH:-16} NUM_EPISODES=${NUM_EPISODES:-1}
export MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-64} DATA_MAX_LEN=${DATA_MAX_LEN:-128} SAVE_STEPS=${SAVE_STEPS:--1}
export TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-false}
# A tiny policy needs a larger step than a 1.5B one. PRM_MODEL=exact: the task's exact verifier
# scores on the PRM's actor in place of a model (the oracle arm).
[ "$PRM_MODEL" != exact ] || EXTRA_ARGS="--prm.backend exact ${EXTRA_ARGS:-}"
export EXTRA_ARGS="--actor.adam.lr ${LR:-2e-4} ${EXTRA_ARGS:-}"
exec bash "$HERE/${EMBEDDED_SCRIPT:-train_prpo_qwen2.5_math_1.5b.sh}"
