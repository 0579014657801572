"""Rollout engines for the single-machine trainer: HF ``generate`` and an in-process vLLM engine.

Both take token-id prompts and return :class:`Sample` s grouped by prompt (the ``n`` samples of
a prompt are contiguous, as in OpenRLHF). The HF engine samples from the training module
itself, so it always has the newest weights; the vLLM engine gets them pushed by :meth:`sync`
before every step (``load_weights`` on the model inside the in-process engine, then the prefix
cache is dropped: its KV blocks were computed with the old weights).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

PAPER_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass
class Sample:
    prompt_ids: list[int]
    response_ids: list[int]   # includes the EOS token when the response ended on its own
    text: str                 # the response decoded without special tokens
    entropies: list[float] | None = None   # per response token, when the engine returns them


def chat_prompt_ids(tokenizer, problems: list[str], system_prompt: str | None) -> list[list[int]]:
    """Token ids of each problem in the tokenizer's chat template, generation prompt added."""
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


class HFRollout:
    """``model.generate`` on the training module, in chunks of ``batch_size`` sequences."""

    name = "hf"

    def __init__(self, model, tokenizer, batch_size: int = 256):
        self.model, self.tok, self.batch_size = model, tokenizer, batch_size
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id

    def sync(self, model) -> None:
        self.model = model  # same module: nothing to copy

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


class VLLMRollout:
    """An in-process vLLM engine (CPU build or one GPU) whose weights follow the policy."""

    name = "vllm"

    def __init__(self, model_path: str, tokenizer, *, max_model_len: int, seed: int,
                 want_entropy: bool, device: str = "cpu", gpu_memory_utilization: float = 0.3,
                 kv_cache_mib: int = 256):
        from prpo_openrlhf.vllm_cpu import cpu_engine_kwargs, in_process_engine_env

        in_process_engine_env()  # engine core in this process: weights can be loaded directly
        from vllm import LLM

        if device == "cpu":
            kwargs = cpu_engine_kwargs(max_model_len=max_model_len, kv_cache_mib=kv_cache_mib, seed=seed)
        else:
            kwargs = dict(max_model_len=max_model_len, seed=seed, enforce_eager=True,
                          distributed_executor_backend="uni", gpu_memory_utilization=gpu_memory_utilization)
        t0 = time.monotonic()
        self.llm = LLM(model=model_path, tokenizer=model_path, **kwargs)
        self.start_seconds = time.monotonic() - t0
        self.tok = tokenizer
        self.want_entropy = want_entropy
        self.eos_id = tokenizer.eos_token_id
        self.dtype = None

    def sync(self, model) -> None:
        """Copy the policy's weights into the engine and drop KV blocks of the old weights."""
        # reload_weights (not model.load_weights): the CPU backend repacks linear weights after
        # loading, and only the reload path restores the checkpoint layout before loading again.
        weights = [(k, v.detach().to(torch.float32 if self.dtype is None else self.dtype).cpu())
                   for k, v in model.state_dict().items()]
        # The rotary cos/sin cache is not in any checkpoint: every reload warns that it "failed
        # to load" and then puts the cached tensor back, which is right; keep that quiet.
        logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").setLevel(logging.ERROR)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights)})
        self.llm.reset_prefix_cache()

    def generate(self, prompts: list[list[int]], n: int, temperature: float, max_new_tokens: int,
                 seed: int, greedy: bool = False) -> list[Sample]:
        from vllm import SamplingParams

        extra = {"return_entropy": True} if self.want_entropy else None
        # One seed per prompt: with a single request seed every prompt would draw the same random
        # numbers, and errors at the same positions would be correlated across the whole batch.
        params = [SamplingParams(n=n, max_tokens=max_new_tokens, seed=seed * 100_003 + i, extra_args=extra,
                                 temperature=0.0 if greedy else temperature, top_p=1.0, top_k=0)
                  for i in range(len(prompts))]
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        samples = []
        for o in outs:
            for c in o.outputs:
                ent = getattr(c, "token_entropies", None)
                samples.append(Sample(list(o.prompt_token_ids), list(c.token_ids), c.text,
                                      list(ent) if ent is not None else None))
        return samples

