"""vLLM general plugin that returns per-token entropy (issue 5; reserved entry point).

setup.py registers ``register`` under ``vllm.general_plugins`` so vLLM calls it in every
process. Until the plugin lands it changes nothing in vLLM.
"""


def register() -> None:
    """Entry point called by vLLM's plugin loader; patches nothing yet."""
    return None
