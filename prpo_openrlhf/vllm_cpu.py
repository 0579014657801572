"""vLLM on a machine without CUDA: every engine the project starts gets a small, explicit KV cache.

vLLM's CPU build otherwise sizes its KV cache from a share of the machine's RAM
(``gpu_memory_utilization``, 0.92 by default) and refuses to start when other processes hold
part of it. :func:`sized_for_cpu` is applied to the PRM's engine (``PRMScorer`` vllm backend,
PRM actors) and to the server of ``prm/vllm_serve.py``; prpo-eval and the embedded task build their
CPU engines with :func:`cpu_engine_kwargs`; the Ray trainer's engines get theirs from
``--prpo.cpu_kv_cache_mib``. :func:`in_process_engine_env` runs the engine core in this process
(no spawned EngineCore), so that a tiny model loads in seconds.
"""
from __future__ import annotations

import os

CPU_KV_CACHE_MIB = 256  # a PRM or a small policy's engine: short bursts, little cache needed
SIZING_KEYS = ("kv_cache_memory_bytes", "gpu_memory_utilization")


def on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def sized_for_cpu(kwargs: dict, kv_cache_mib: int = CPU_KV_CACHE_MIB, cpu: bool | None = None) -> dict:
    """``kwargs`` for ``vllm.LLM`` with, on CPU, an explicit KV cache and eager mode, unless the
    caller sized the cache itself (``kv_cache_memory_bytes`` or ``gpu_memory_utilization``)."""
    out = dict(kwargs)
    if (on_cpu() if cpu is None else cpu) and not any(k in out for k in SIZING_KEYS):
        out.update(kv_cache_memory_bytes=kv_cache_mib << 20, enforce_eager=True)
    return out


def in_process_engine_env() -> None:
    """Run vLLM's engine core in this process (read by vLLM when an engine starts)."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"


def shut_down(llm) -> None:
    """Stop ``llm``'s engine core now, not at interpreter exit.

    An in-process engine core (:func:`in_process_engine_env`) that is left to the interpreter's
    finalisation still holds Triton objects when their native module is torn down, and nanobind
    then prints a wall of "leaked instance / type / function" lines of libtriton after the
    program's own last line (docs/testing.md). Shutting the core down first releases them; it is
    harmless for an engine core in its own process, which it stops."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None:
        core.shutdown()


def cpu_engine_kwargs(max_model_len: int = 1024, kv_cache_mib: int = 64, seed: int = 0) -> dict:
    """Keyword arguments for ``vllm.LLM`` on CPU with a small, explicit KV cache.

    Chunked prefill is off: vLLM 0.29 on CPU crashes when a seeded request is prefilled in
    chunks ("CPU Generator does not use offset": the discarded token's RNG offset is rewound);
    whole-prompt prefills never take that path.
    """
    return dict(
        enable_chunked_prefill=False,
        max_num_batched_tokens=max(max_model_len, 4096),
        dtype="float32",
        max_model_len=max_model_len,
        seed=seed,
        enforce_eager=True,
        distributed_executor_backend="uni",
        kv_cache_memory_bytes=kv_cache_mib << 20,
    )
