"""Sampling from the embedded policy with HF ``generate``, for the recipes of the shipped models.

The policy's warm-up (warmup.py) measures its held-out accuracy with it, and the learned PRM's
recipe (prm_data.py) samples its training and held-out solutions with it and reads the policy's
token entropies at the cut points of the splits. Training samples through train_prpo_ray's vLLM
engine; these recipes stay on HF ``generate`` because their output must rebuild bit for bit
from the recipe alone, on one thread, without an engine.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from prpo_openrlhf.rollout.entropy import logits_entropy


@dataclass
class Sample:
    prompt_ids: list[int]
    response_ids: list[int]   # includes the EOS token when the response ended on its own
    text: str                 # the response decoded without special tokens


def chat_prompt_ids(tokenizer, problems: list[str], system_prompt: str | None = None) -> list[list[int]]:
    """Token ids of each problem in the tokenizer's chat template, generation prompt added (the
    rendering of OpenRLHF's ``--data.apply_chat_template`` for a one-message conversation)."""
    out = []
    for problem in problems:
        msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
        msgs.append({"role": "user", "content": problem})
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


def _cut_at_eos(ids: list[int], eos_id: int, pad_id: int) -> list[int]:
    if eos_id in ids:
        return ids[: ids.index(eos_id) + 1]
    while ids and ids[-1] == pad_id and pad_id != eos_id:
        ids = ids[:-1]
    return ids


class HFSampler:
    """``model.generate`` in chunks of ``batch_size`` sequences; samples grouped by prompt (the
    ``n`` samples of a prompt are contiguous, as in OpenRLHF)."""

    def __init__(self, model, tokenizer, batch_size: int = 256):
        self.model, self.tok, self.batch_size = model, tokenizer, batch_size
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], n: int, temperature: float, max_new_tokens: int,
                 seed: int, greedy: bool = False) -> list[Sample]:
        flat = [p for p in prompts for _ in range(n)]
        was_training = self.model.training
        self.model.eval()
        torch.manual_seed(seed)  # HF samples from the global generator: seed it per call
        out: list[Sample] = []
        try:
            for i in range(0, len(flat), self.batch_size):
                out += self._chunk(flat[i: i + self.batch_size], temperature, max_new_tokens, greedy)
        finally:
            self.model.train(was_training)
        return out

    def _chunk(self, prompts, temperature, max_new_tokens, greedy) -> list[Sample]:
        device = next(self.model.parameters()).device
        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):  # left padding: every prompt ends where generation starts
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        # top_k=0 / top_p=1: sample from the whole vocabulary, as the entropy and log-probs assume.
        sampling = dict(do_sample=False) if greedy else \
            dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
        gen = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                  max_new_tokens=max_new_tokens, eos_token_id=self.eos_id,
                                  pad_token_id=self.pad_id, **sampling)
        samples = []
        for p, row in zip(prompts, gen[:, width:].tolist()):
            resp = _cut_at_eos(row, self.eos_id, self.pad_id)
            samples.append(Sample(list(p), resp, self.tok.decode(resp, skip_special_tokens=True)))
        return samples


def decode_segments(tokenizer, samples: list[Sample], segment_ids: torch.Tensor) -> list[list[str]]:
    """Per sample, the text of each segment of a (B, T) segment-id tensor (``segment_batch``),
    special tokens dropped, as the trainer sends segments to the PRM."""
    from prpo_openrlhf.algorithms.segmentation import segment_ranges

    return [[tokenizer.decode(s.response_ids[a:b], skip_special_tokens=True) for a, b in ranges]
            for s, ranges in zip(samples, segment_ranges(segment_ids))]


def pad_responses(samples: list[Sample], pad_id: int):
    """Right-padded prompt + response rows: (input_ids (B, L), attention_mask (B, L), logit_index
    (B, T), response tokens (B, T), action_mask (B, T) float), T the longest response. The logits
    at position logit_index[b, t] (= prompt length - 1 + t) predict response token t."""
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
    return ids, attn, index, tokens, mask


def response_logits(model, ids, attn, index) -> torch.Tensor:
    """(B, T, V) fp32 logits at the response positions only: (B, L, V) is the memory peak."""
    logits = model(input_ids=ids, attention_mask=attn).logits
    return logits.gather(1, index.unsqueeze(-1).expand(-1, -1, logits.shape[-1])).float()


@torch.no_grad()
def response_entropies(model, samples: list[Sample], pad_id: int, micro: int = 64):
    """((B, T) entropy of softmax(logits) at each response token, (B, T) float action mask), from
    forward passes of ``micro`` rows."""
    ids, attn, index, _, mask = pad_responses(samples, pad_id)
    ents = [logits_entropy(response_logits(model, ids[i: i + micro], attn[i: i + micro], index[i: i + micro]))
            for i in range(0, len(samples), micro)]
    return torch.cat(ents), mask
