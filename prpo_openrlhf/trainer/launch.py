"""Start a training: OpenRLHF 0.11.2's own ``train(args)`` with PRPOTrainer as the trainer.

Upstream's ``train()`` creates the vLLM engines and the DeepSpeed actor groups on their
placement groups, then imports ``PPOTrainer`` from ``openrlhf.trainer.ppo_trainer`` and drives
it. We run that function as it is and only let that import find PRPOTrainer (and, with
``--prpo.entropy_source actor``, its ``PolicyModelActor`` name find the policy actor of
policy_actor.py), for the duration of the call, so every placement and initialisation step
stays upstream's.
"""
from __future__ import annotations

import contextlib
import os

import ray


@contextlib.contextmanager
def _swapped(module, name: str, value):
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


def _init_ray(args) -> None:
    if ray.is_initialized():
        return
    env = {
        "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "true"),
        "NCCL_DEBUG": os.environ.get("NCCL_DEBUG", "WARN"),
        "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": os.environ.get("RAY_ENABLE_ZERO_COPY_TORCH_TENSORS", "1"),
        # Read inside the rollout workers: the grader's budget, and the reward endpoints of
        # the entropy executor (OpenRLHF builds custom executors without arguments).
        "PRPO_GRADER_TIMEOUT": str(args.prpo.grader_timeout),
        "PRPO_REMOTE_RM_URL": args.prpo.reward_urls or "",
    }
    ray.init(runtime_env={"env_vars": env})


def train(args) -> None:
    from openrlhf.cli.train_ppo_ray import train as upstream_train

    from prpo_openrlhf.cli.prpo_flags import PRM_ESTIMATORS, check_gpu_budget
    from prpo_openrlhf.rollout.samples_generator import check_entropy_source
    from prpo_openrlhf.trainer.ppo_trainer import PRPOTrainer

    if args.algo.advantage.estimator in PRM_ESTIMATORS and args.prpo.split == "entropy":
        check_entropy_source(args.prpo.entropy_source)  # refuses vllm on an unsupported vLLM
    _init_ray(args)
    check_gpu_budget(args, ray.cluster_resources().get("GPU", 0.0))
    import openrlhf.cli.train_ppo_ray as upstream_cli
    import openrlhf.trainer.ppo_trainer as upstream_trainer

    policy = upstream_cli.PolicyModelActor
    if args.prpo.entropy_source == "actor":  # its log-prob pass also returns entropies
        from prpo_openrlhf.trainer.policy_actor import policy_actor_class

        policy = policy_actor_class()
    with _swapped(upstream_trainer, "PPOTrainer", PRPOTrainer), _swapped(upstream_cli, "PolicyModelActor", policy):
        upstream_train(args)
