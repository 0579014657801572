"""One step's experience: padded batch, log-probs and entropies, segments, scores, advantages.

Shapes follow OpenRLHF: ``B`` rollouts (groups of ``n`` contiguous rows), ``T`` the longest
response; ``action_mask`` (B, T) is 1 on response tokens (EOS included when generated).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from prpo_openrlhf.rollout.entropy import logits_entropy

# OpenRLHF's outcome-only estimators, restated (a few lines each) because upstream computes
# them inside its experience maker rather than as functions.
OUTCOME_ESTIMATORS = ("group_norm", "dr_grpo")
GROUP_NORM_EPS = 1e-9


@dataclass
class Batch:
    input_ids: torch.Tensor       # (B, L) prompt + response, right-padded
    attention_mask: torch.Tensor  # (B, L)
    logit_index: torch.Tensor     # (B, T) position in L of the logits that predict response token t
    tokens: torch.Tensor          # (B, T) response tokens
    action_mask: torch.Tensor     # (B, T) float

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.logit_index,
                                               self.tokens, self.action_mask)))

    def rows(self, idx) -> "Batch":
        return Batch(self.input_ids[idx], self.attention_mask[idx], self.logit_index[idx],
                     self.tokens[idx], self.action_mask[idx])


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    return float((x * mask).sum() / mask.sum().clamp(min=1))


def make_batch(samples, pad_id: int) -> Batch:
    """Pad samples (prompt_ids, response_ids) into a :class:`Batch` on CPU."""
    B = len(samples)
    L = max(len(s.prompt_ids) + len(s.response_ids) for s in samples)
    T = max(1, max(len(s.response_ids) for s in samples))
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    attn = torch.zeros((B, L), dtype=torch.long)
    index = torch.zeros((B, T), dtype=torch.long)
    tokens = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros((B, T))
    for i, s in enumerate(samples):
        p, r = len(s.prompt_ids), len(s.response_ids)
        ids[i, : p + r] = torch.tensor(s.prompt_ids + s.response_ids)
        attn[i, : p + r] = 1
        index[i] = torch.arange(p - 1, p - 1 + T).clamp(max=L - 1)
        tokens[i, :r] = torch.tensor(s.response_ids, dtype=torch.long)
        mask[i, :r] = 1
    return Batch(ids, attn, index, tokens, mask)


def token_logprobs(model, batch: Batch, temperature: float, with_entropy: bool = False):
    """(B, T) log pi(token_t) of softmax(logits / T), and (B, T) entropies if asked.

    Only the logits at response positions are kept before the softmax: with a large vocabulary
    the (B, L, V) tensor is the memory peak of the step.
    """
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    V = logits.shape[-1]
    sel = logits.gather(1, batch.logit_index.unsqueeze(-1).expand(-1, -1, V)).float() / temperature
    logp = sel.log_softmax(-1).gather(-1, batch.tokens.unsqueeze(-1)).squeeze(-1)
    ent = logits_entropy(sel.detach()) if with_entropy else None  # already divided by T
    return logp * batch.action_mask, ent


@torch.no_grad()
def batched_logprobs(model, batch: Batch, temperature: float, micro: int, with_entropy: bool):
    """No-grad :func:`token_logprobs` over micro-batches of ``micro`` rows."""
    lps, ents = [], []
    for i in range(0, batch.tokens.shape[0], micro):
        lp, ent = token_logprobs(model, batch.rows(slice(i, i + micro)), temperature, with_entropy)
        lps.append(lp)
        ents.append(ent)
    return torch.cat(lps), (torch.cat(ents) if with_entropy else None)


def entropies_from_samples(samples, T: int) -> torch.Tensor | None:
    """(B, T) engine-reported entropies, or None if any sample lacks them."""
    if any(s.entropies is None for s in samples):
        return None
    out = torch.zeros(len(samples), T)
    for i, s in enumerate(samples):
        out[i, : len(s.entropies)] = torch.tensor(s.entropies[:T])
    return out


def newline_mask(tokenizer, samples, T: int) -> torch.Tensor:
    """(B, T) bool: the token completing a blank line ("\\n\\n"), for the PRM-native split."""
    out = torch.zeros(len(samples), T, dtype=torch.bool)
    for i, s in enumerate(samples):
        text = ""
        for t, tok in enumerate(s.response_ids[:T]):
            before = len(text)
            text += tokenizer.decode([tok])
            if "\n\n" in text[max(0, before - 1):]:
                out[i, t] = True
    return out


def segment_texts(tokenizer, samples, ranges) -> list[list[str]]:
    """Decoded text of each segment; special tokens (EOS) dropped."""
    return [[tokenizer.decode(s.response_ids[a:b], skip_special_tokens=True) for a, b in segs]
            for s, segs in zip(samples, ranges)]


def outcome_advantages(name: str, rewards: torch.Tensor, mask: torch.Tensor, n: int) -> torch.Tensor:
    """(B, T) OpenRLHF group_norm ((R - mean_g) / (std_g + eps), GRPO) or dr_grpo (R - mean_g)."""
    g = rewards.view(-1, n)
    centred = g - g.mean(-1, keepdim=True)
    if name == "group_norm":
        centred = centred / (g.std(-1, keepdim=True) + GROUP_NORM_EPS)  # unbiased std, as upstream
    elif name != "dr_grpo":
        raise ValueError(f"unknown outcome estimator {name!r}")
    return centred.view(-1, 1) * mask


def advantages(name: str, process_scores, rewards, mask, n: int, segment_ids, *, prior_mean: float,
               prior_std: float, normalization: str, pure_temperature: float) -> torch.Tensor:
    """(B, T) advantages of estimator ``name`` (outcome-only ones ignore the process scores)."""
    from prpo_openrlhf.algorithms.advantages import ESTIMATORS

    if name in OUTCOME_ESTIMATORS:
        return outcome_advantages(name, rewards, mask, n)
    if name == "pure":  # PURE's outcome reward is 0/1 (paper §4); its estimator maps +-1 to it
        return ESTIMATORS[name](process_scores, rewards, mask, n, segment_ids=segment_ids,
                                temperature=pure_temperature)
    return ESTIMATORS[name](process_scores, rewards, mask, n, segment_ids=segment_ids,
                            prior_mean=prior_mean, prior_std=prior_std, normalization=normalization)
