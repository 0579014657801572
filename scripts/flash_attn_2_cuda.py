"""CPU stand-in for flash-attn's CUDA extension ``flash_attn_2_cuda``.

Installed only into the CPU development environment (scripts/setup_cpu_env.sh copies it into
the venv's site-packages). OpenRLHF 0.11.2 imports flash-attn at module level, and flash-attn
imports this compiled extension, which cannot exist without CUDA. Importing works so that
flash-attn's pure-torch helpers (bert_padding) stay usable; touching any kernel raises.
"""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise RuntimeError(
        f"flash_attn_2_cuda.{name}: this is the CPU stand-in for flash-attn's CUDA extension "
        "(prpo-openrlhf CPU environment). FlashAttention kernels need a CUDA GPU; on CPU use "
        "attn_implementation='sdpa' or 'eager'."
    )
