"""Reference entropies from a HF forward over the same tokens, written out independently."""
from __future__ import annotations

import torch


def reference_entropy(logits: torch.Tensor) -> torch.Tensor:
    """(N, V) -> (N,) in float64: lse(l) - sum softmax(l) * l, with 0 for masked (-inf) tokens."""
    logits = logits.double()
    p = torch.softmax(logits, dim=-1)
    finite = torch.isfinite(logits)
    return torch.logsumexp(logits, dim=-1) - torch.where(finite, p * logits, 0.0).sum(-1)


def hf_response_logits(model, prompt_ids, response_ids) -> torch.Tensor:
    """(len(response), V) logits that predicted each response token."""
    ids = list(prompt_ids) + list(response_ids)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    start = len(prompt_ids) - 1
    return logits[start: start + len(response_ids)]


def hf_entropies(model, prompt_ids, response_ids, temperature=1.0, *, allowed=None,
                 min_tokens=0, stop_ids=(), repetition_penalty=1.0) -> torch.Tensor:
    """Entropy of the distribution vLLM samples response token t from, for every t.

    Mirrors vLLM's order: allowed-token mask, min-tokens mask on stop tokens, repetition
    penalty over prompt + output so far, then temperature (0 means greedy: no scaling).
    """
    logits = hf_response_logits(model, prompt_ids, response_ids).clone()
    if allowed is not None:
        keep = torch.zeros(logits.shape[-1], dtype=torch.bool)
        keep[list(allowed)] = True
        logits[:, ~keep] = float("-inf")
    for t in range(min(min_tokens, len(response_ids))):
        logits[t, list(stop_ids)] = float("-inf")
    if repetition_penalty != 1.0:
        for t in range(len(response_ids)):
            seen = sorted(set(prompt_ids) | set(response_ids[:t]))
            row = logits[t, seen]
            logits[t, seen] = torch.where(row > 0, row / repetition_penalty, row * repetition_penalty)
    if temperature > 0:
        logits = logits / temperature
    return reference_entropy(logits)
