"""Engine arguments that make vLLM's CPU build start quickly for tiny models.

Used by tests and CPU runs. The engine core runs in-process (no spawned EngineCore, a
single-process executor): a tiny model then loads in seconds instead of half a minute.
"""
from __future__ import annotations

import os


def in_process_engine_env() -> None:
    """Run vLLM's engine core in this process (read by vLLM when an engine starts)."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"


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
