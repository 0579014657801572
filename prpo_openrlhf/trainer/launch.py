"""Start a training: OpenRLHF 0.11.2's own ``train(args)`` with PRPOTrainer as the trainer.

Upstream's ``train()`` creates the vLLM engines and the DeepSpeed actor groups on their
placement groups, then imports ``PPOTrainer`` from ``openrlhf.trainer.ppo_trainer`` and drives
it. We run that function as it is and only let that import find PRPOTrainer (and, with
``--prpo.entropy_source actor``, its ``PolicyModelActor`` name find the policy actor of
policy_actor.py; on a CPU machine, the actor classes of cpu_device.py), for the duration of
the call, so every placement and initialisation step stays upstream's. Two more names are
wrapped to hand what they create to the run's watchdog (watchdog.py): ``create_vllm_engines``
and ``RayActorGroup`` (a subclass that registers its actors once it has started them).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os

import ray
import torch

from prpo_openrlhf.trainer.swap import swapped

logger = logging.getLogger(__name__)


class RunFailed(RuntimeError):
    """The run was stopped by its watchdog, ran out of disk space, or ended without saving its model."""


def _init_ray(args) -> None:
    """Connect to the cluster (under ``ray job submit``, or one started on this machine), or
    start a local one: on a machine without a GPU it declares as many logical GPUs as the run's
    groups ask for, so upstream's ``{"GPU": 1}`` bundles are placed unchanged.
    """
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
    runtime_env = {"env_vars": _without_job_env(env)}
    if os.environ.get("RAY_ADDRESS") or args.prpo.device == "cuda" or torch.cuda.is_available():
        ray.init(runtime_env=runtime_env)
        return
    try:  # a cluster started on this machine (`ray start --head --num-gpus N`)
        ray.init(address="auto", runtime_env=runtime_env)
    except ConnectionError:
        from prpo_openrlhf.cli.prpo_flags import gpu_demand

        gpus = sum(gpu_demand(args).values())
        logger.warning("no Ray cluster and no GPU: starting a local Ray with %d logical GPUs for a CPU run", gpus)
        # One CPU per bundle besides the GPU, plus the trainer and the PRM's own actors.
        ray.init(address="local", num_gpus=gpus, num_cpus=max(os.cpu_count() or 1, gpus + 4), runtime_env=runtime_env)


def _without_job_env(env: dict) -> dict:
    """``env`` minus the variables the job's own runtime env sets (``ray job submit
    --runtime-env-json``): Ray refuses to start a driver whose runtime env repeats one of them."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")  # the job's config, as Ray hands it to the driver
    job_env = ((json.loads(raw).get("runtime_env") or {}).get("env_vars") or {}) if raw else {}
    for key in sorted(set(env) & set(job_env)):
        if str(job_env[key]) != env[key]:
            logger.warning("%s=%s from the job's runtime env wins over %s from the flags", key, job_env[key], env[key])
    return {k: v for k, v in env.items() if k not in job_env}


def _watched(upstream_cli, watchdog) -> list:
    """Swaps that show the run's vLLM engines and model actors to ``watchdog`` as they start."""
    from prpo_openrlhf.trainer.watchdog import WatchedActorGroup

    create_engines = upstream_cli.create_vllm_engines

    def create_vllm_engines(*args, **kwargs):
        engines = create_engines(*args, **kwargs)
        watchdog.watch_engines(engines)
        return engines

    return [(upstream_cli, "create_vllm_engines", create_vllm_engines), (upstream_cli, "RayActorGroup", WatchedActorGroup)]


def _check_saved(args) -> None:
    """Upstream's last act is saving the model; a run that returns without one did not succeed.
    Checked for an absolute path on a one-node cluster only: elsewhere the saving actor's disk,
    or its working directory, may not be the driver's."""
    out = args.ckpt.output_dir
    if not os.path.isabs(out) or sum(node["Alive"] for node in ray.nodes()) != 1:
        return
    if not os.path.isfile(os.path.join(out, "config.json")) and not os.path.isfile(os.path.join(out, "adapter_config.json")):
        raise RunFailed(f"training returned but no model was saved in {out}")


def train(args) -> None:
    from openrlhf.cli.train_ppo_ray import train as upstream_train

    from prpo_openrlhf.cli.prpo_flags import PRM_ESTIMATORS, check_gpu_budget
    from prpo_openrlhf.fileio import first_line, no_space_in
    from prpo_openrlhf.rollout.samples_generator import check_entropy_source
    from prpo_openrlhf.trainer.cpu_device import cpu_swaps, resolve_device
    from prpo_openrlhf.trainer.placement import check_placement, placement_swaps
    from prpo_openrlhf.trainer.ppo_trainer import PRPOTrainer
    from prpo_openrlhf.trainer.prompt_check import check_prompt_dataset
    from prpo_openrlhf.trainer.watchdog import RunWatchdog, WatchedActorGroup

    if args.algo.advantage.estimator in PRM_ESTIMATORS and args.prpo.split == "entropy":
        check_entropy_source(args.prpo.entropy_source)  # refuses vllm on an unsupported vLLM
    check_prompt_dataset(args)  # before any actor starts
    _init_ray(args)
    check_gpu_budget(args, ray.cluster_resources().get("GPU", 0.0))
    check_placement(args, ray.cluster_resources())
    import openrlhf.cli.train_ppo_ray as upstream_cli
    import openrlhf.trainer.ppo_trainer as upstream_trainer

    policy = upstream_cli.PolicyModelActor
    if args.prpo.entropy_source == "actor":  # its log-prob pass also returns entropies
        from prpo_openrlhf.trainer.policy_actor import policy_actor_class

        policy = policy_actor_class()
    on_cpu = resolve_device(args.prpo.device, ray.cluster_resources()) == "cpu"
    watchdog = RunWatchdog()
    swaps = [(upstream_trainer, "PPOTrainer", PRPOTrainer), *_watched(upstream_cli, watchdog),
             *(cpu_swaps(args, policy) if on_cpu else [(upstream_cli, "PolicyModelActor", policy)]),
             *placement_swaps(args, upstream_cli, WatchedActorGroup)]
    watchdog.start()
    try:
        with contextlib.ExitStack() as stack:
            for module, name, value in swaps:
                stack.enter_context(swapped(module, name, value))
            upstream_train(args)
    except BaseException as exc:  # the watchdog's interrupt, or an error its kills caused
        if watchdog.failure:
            raise RunFailed(watchdog.failure) from exc
        full = no_space_in(exc)
        if full is not None:  # upstream's actors write the checkpoints and the final model
            raise RunFailed(f"no space left on device while writing {args.ckpt.path} or {args.ckpt.output_dir} "
                            f"({first_line(full)}); free some space and run again (--ckpt.load_enable resumes from the "
                            "last complete checkpoint)") from exc
        raise
    finally:
        watchdog.stop()
    if watchdog.failure:  # it fired after upstream's last wait
        raise RunFailed(watchdog.failure)
    _check_saved(args)
