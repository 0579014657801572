"""How a request asks vLLM for token entropies, and where it gets them: shared by the entropy
plugin (vllm_entropy.py) and its hooks, which vLLM loads in its own processes."""
from __future__ import annotations

REQUEST_KEY = "return_entropy"  # SamplingParams.extra_args key
OUTPUT_ATTR = "token_entropies"  # CompletionOutput attribute


def wants_entropy(sampling_params) -> bool:
    """True when a request asks for token entropies."""
    extra = getattr(sampling_params, "extra_args", None)
    return bool(extra) and bool(extra.get(REQUEST_KEY))
