"""Process reward model scoring: HF and vLLM backends, Ray actor group, HTTP service.

``from prpo_openrlhf.prm import PRMScorer`` scores in process; ``connect(url)`` reaches a PRM
served elsewhere, by vLLM's server or by ``prpo-serve-prm`` (see docs/prm.md). Ray and the
HTTP pieces are imported lazily so that the scorer does not pull them in.
"""
from .inputs import DEFAULT_STEP_TAG, DEFAULT_SYSTEM_PROMPT
from .scorer import PRMScoreError, PRMScorer, PRMStats

_LAZY = {
    "PRMActorGroup": ".ray_group",
    "PRMActorGroupError": ".ray_group",
    "PRMClient": ".client",
    "PRMClientError": ".client",
    "PRMServer": ".server",
    "VLLMPoolingClient": ".pooling_client",
    "connect": ".pooling_client",
}

__all__ = ["PRMScorer", "PRMStats", "PRMScoreError", "DEFAULT_STEP_TAG",
           "DEFAULT_SYSTEM_PROMPT", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
