# Shared settings of the paper's runs (PRPO_SPEC §5), sourced by every train_*.sh here, so the
# baselines differ from PRPO only in the estimator and its PRM flags.
#
# Cluster: one 8-GPU training node (actor 4, reference 2, vLLM 2 engines — separate placement
# groups, not colocated) plus the PRM on its own GPUs (a second node: --prm.num_gpus_per_node 8).
# Override anything with environment variables, e.g. PROMPT_DATA=/data/math_train.jsonl; sizes
# too (scripts/run_tiny_cpu.sh runs every script this way on a CPU machine with tiny models).
# EXTRA_ARGS (one string, split on spaces) is appended to every run's arguments.
set -euo pipefail

RAY_ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:8265}
PROMPT_DATA=${PROMPT_DATA:-/data/math/train.jsonl}      # MATH train split, 12,000 problems: {"problem", "answer"}
PRM_MODEL=${PRM_MODEL:-Qwen/Qwen2.5-Math-PRM-7B}
PRM_GPUS=${PRM_GPUS:-8}
SAVE_ROOT=${SAVE_ROOT:-./checkpoints}
LOG_ROOT=${LOG_ROOT:-./logs}
POLICY_MODEL=${POLICY_MODEL:-}                         # replaces each script's model when set
ACTOR_GPUS=${ACTOR_GPUS:-4}
REF_GPUS=${REF_GPUS:-2}
VLLM_ENGINES=${VLLM_ENGINES:-2}
ROLLOUT_BATCH=${ROLLOUT_BATCH:-128}
N_SAMPLES=${N_SAMPLES:-8}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-2048}
DATA_MAX_LEN=${DATA_MAX_LEN:-3072}
ROLLOUT_MICRO_BATCH=${ROLLOUT_MICRO_BATCH:-8}
TRAIN_BATCH=${TRAIN_BATCH:-1024}
TRAIN_MICRO_BATCH=${TRAIN_MICRO_BATCH:-4}
NUM_EPISODES=${NUM_EPISODES:-10}
SAVE_STEPS=${SAVE_STEPS:-20}
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"

# OpenRLHF 0.11.2 flags, identical for every method.
COMMON_ARGS=(
  --actor.num_nodes 1 --actor.num_gpus_per_node "$ACTOR_GPUS"
  --ref.num_nodes 1 --ref.num_gpus_per_node "$REF_GPUS"
  --vllm.num_engines "$VLLM_ENGINES" --vllm.tensor_parallel_size 1 --vllm.gpu_memory_utilization 0.85
  --data.prompt_dataset "$PROMPT_DATA" --data.input_key problem --data.label_key answer
  --data.apply_chat_template --data.max_len "$DATA_MAX_LEN"
  --rollout.batch_size "$ROLLOUT_BATCH" --rollout.n_samples_per_prompt "$N_SAMPLES"
  --rollout.max_new_tokens "$MAX_NEW_TOKENS"
  --rollout.temperature 1.0 --rollout.top_p 1.0 --rollout.micro_batch_size "$ROLLOUT_MICRO_BATCH"
  --train.batch_size "$TRAIN_BATCH" --train.micro_batch_size "$TRAIN_MICRO_BATCH" --train.max_epochs 1
  --train.num_episodes "$NUM_EPISODES" --train.seed 42
  --actor.adam.lr 1e-6 --actor.eps_clip 0.2
  --algo.kl.use_loss --algo.kl.init_coef 0.001 --algo.kl.estimator k3
  --ds.zero_stage 2 --ds.param_dtype bf16 --actor.gradient_checkpointing_enable
  --ckpt.save_steps "$SAVE_STEPS" --logger.logging_steps 1 --ckpt.load_enable
  --prpo.k 5 --prpo.min_gap 10
)

PRM_ARGS=(--prm.model_name_or_path "$PRM_MODEL" --prm.num_nodes 1 --prm.num_gpus_per_node "$PRM_GPUS")

JOB_WAIT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/prpo_openrlhf/cli/job_wait.py

# submit NAME MODEL ARGS...: run train_prpo_ray as a Ray job with the shared settings; returns 0
# only when `ray job status` says SUCCEEDED. `ray job submit` without --no-wait exits when the
# job's log stream closes, which can happen while the job runs (Ray issue #60665), so the job is
# submitted under an id of ours and job_wait.py follows its logs and polls its status until it
# ends; Ctrl-C or SIGTERM stop the job (`ray job stop`) before the script exits.
# PRPO_PRINT_ARGS=1 prints the training arguments (NUL-separated) instead of submitting: the
# test suite parses every script's arguments with build_parser().
submit() {
  local name=$1 model=${POLICY_MODEL:-$2}; shift 2
  local args=(--actor.model_name_or_path "$model" "${COMMON_ARGS[@]}"
              --ckpt.output_dir "$SAVE_ROOT/$name" --ckpt.path "$SAVE_ROOT/$name/ckpt"
              --logger.tensorboard_dir "$LOG_ROOT/$name" "$@" ${EXTRA[@]+"${EXTRA[@]}"})
  if [ -n "${PRPO_PRINT_ARGS:-}" ]; then printf '%s\0' "${args[@]}"; return 0; fi
  local id="prpo-${name//[^A-Za-z0-9_.-]/_}-$(date +%Y%m%d-%H%M%S)-$$-$RANDOM"
  # A head under load can drop the submission (the job agent not ready yet: "Remote end closed
  # connection"). Try again; if the dropped call did create the job, its id is taken: go on to wait.
  local try
  for try in 1 2 3 4 5; do
    ray job submit --address="$RAY_ADDRESS" --submission-id "$id" --no-wait \
      -- python -m prpo_openrlhf.cli.train_prpo_ray "${args[@]}" && break
    ray job status --address="$RAY_ADDRESS" "$id" >/dev/null 2>&1 && break
    [ "$try" -lt 5 ] || { echo "[submit] ray job submit failed 5 times; giving up" >&2; return 1; }
    echo "[submit] ray job submit failed (try $try of 5); again in $((try * 10)) s" >&2
    sleep $((try * 10))
  done
  # In the background so that a trapped signal reaches it (bash starts it with SIGINT ignored,
  # and job_wait installs its own handlers); waited for again until it has stopped the job.
  python "$JOB_WAIT" --address "$RAY_ADDRESS" "$id" &
  local waiter=$! status=0
  trap 'kill -TERM "$waiter" 2>/dev/null || true' INT TERM
  wait "$waiter" || status=$?
  while kill -0 "$waiter" 2>/dev/null; do status=0; wait "$waiter" || status=$?; done
  trap - INT TERM
  return "$status"
}
