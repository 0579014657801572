"""Per-token entropy of the sampling distribution (PRPO_SPEC.md section 1).

    H_t = logsumexp(l_t) - sum_v softmax(l_t)_v * l_t,v

with ``l_t`` the logits that produced token ``t`` divided by the sampling temperature, over the
whole vocabulary, before top-k / top-p truncation, in fp32. This is OpenRLHF's
``compute_entropy`` on temperature-scaled logits (``openrlhf/models/utils.py``).

Pure torch. The vLLM plugin calls :func:`token_entropy` where the token is sampled;
:func:`logits_entropy` gives the same quantity from a training forward's logits (the
``--prpo.entropy_source actor`` fallback itself uses OpenRLHF's Actor, see samples_generator.py).
"""
from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger("vllm.prpo_entropy")

# PRPO_ENTROPY_COMPILE=1|0 forces torch.compile on or off. Unset: on for CPU logits of at least
# COMPILE_MIN_NUMEL elements, where the fused kernel is several times faster than eager ops
# (vLLM's CPU sampler is compiled the same way); below that, a compiled call costs more than
# the eager ops it replaces.
COMPILE_ENV = "PRPO_ENTROPY_COMPILE"
COMPILE_MIN_NUMEL = 1 << 15


def _entropy_shifted(logits: torch.Tensor, inv_temperature: torch.Tensor | None = None) -> torch.Tensor:
    """(N, V) fp32 logits, (N,) 1/T or None -> (N,) entropy; ``-inf`` logits (masked) contribute 0."""
    # Shift by the row max: H = log Z - sum_v e_v * s_v / Z with s = l - max, e = exp(s),
    # Z = sum e. Equal to lse(l) - sum softmax(l) * l, without 0 * -inf = nan on masked tokens.
    # Scaling after the shift is the same for T > 0 ((l - max l) / T = l/T - max(l/T)) and lets
    # torch.compile recompute s in each pass instead of storing l / T: twice as fast at 152k.
    # Two passes over the row once fused; ~3e-5 from float64 at 152k tokens.
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    if inv_temperature is not None:
        shifted = shifted * inv_temperature.unsqueeze(-1)
    e = shifted.exp()
    z = e.sum(dim=-1)
    dot = torch.where(e > 0, e * shifted, 0.0).sum(dim=-1)
    return z.log() - dot / z


def _scaled(logits: torch.Tensor, temperature: torch.Tensor | None) -> torch.Tensor:
    logits = logits.float()
    if temperature is not None:
        logits = logits / temperature.float().unsqueeze(-1)
    return logits


def _entropy_fused(logits: torch.Tensor, temperature: torch.Tensor | None) -> torch.Tensor:
    return _entropy_shifted(logits.float(), None if temperature is None else 1.0 / temperature.float())


def _entropy_eager(logits: torch.Tensor, temperature: torch.Tensor | None) -> torch.Tensor:
    # Eager: the fewest ops (softmax, -p log p with entr(0) = 0, sum); ~4e-5 from float64 at
    # 152k tokens, ~2e-7 at 260.
    return torch.special.entr(torch.softmax(_scaled(logits, temperature), dim=-1)).sum(dim=-1)


_compiled = None  # torch.compile'd _entropy_fused, built on first use
_compile_failed = False


def _use_compile(logits: torch.Tensor) -> bool:
    flag = os.environ.get(COMPILE_ENV, "").strip().lower()
    if flag in ("0", "false", "no", "off"):
        return False
    if flag in ("1", "true", "yes", "on"):
        return True
    return logits.device.type == "cpu" and logits.numel() >= COMPILE_MIN_NUMEL


def token_entropy(logits: torch.Tensor, temperature: torch.Tensor | None = None) -> torch.Tensor:
    """Entropy of ``softmax(logits / temperature)`` per row.

    logits: (N, V), any float dtype (computed in fp32). temperature: (N,) or None (= 1).
    Returns (N,) fp32 on ``logits.device``. Rows may hold ``-inf`` (masked tokens).
    """
    global _compiled, _compile_failed
    if logits.shape[0] == 0:
        return torch.empty(0, dtype=torch.float32, device=logits.device)
    if not _compile_failed and _use_compile(logits):
        try:
            if _compiled is None:
                from vllm.platforms import current_platform

                _compiled = torch.compile(_entropy_fused, dynamic=True,
                                          backend=current_platform.simple_compile_backend)
            return _compiled(logits, temperature)
        except Exception as exc:  # a missing compiler must not stop sampling
            _compile_failed = True
            logger.warning("prpo entropy: torch.compile unavailable (%s); using eager ops", exc)
    return _entropy_eager(logits, temperature)


def logits_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(..., V) logits of a training forward -> (...,) entropy of softmax(logits / T), fp32."""
    flat = logits.reshape(-1, logits.shape[-1]).float()
    if temperature != 1.0:
        flat = flat / temperature
    return _entropy_shifted(flat).reshape(logits.shape[:-1])
