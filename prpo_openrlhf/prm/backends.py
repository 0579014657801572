"""The two ways to run a PRM forward: transformers (``hf``) and vLLM's pooling runner (``vllm``).

Both take a list of token-id sequences that end at a step tag and return, per sequence, the
probability of the positive label at every tag position (one forward pass per sequence).
"""
from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import torch

from prpo_openrlhf.vllm_cpu import in_process_engine_env, on_cpu, sized_for_cpu


@dataclass
class ForwardStats:
    tokens: int = 0          # real tokens that went through the model
    padded_tokens: int = 0   # batch slots, padding included (== tokens for vLLM)
    batches: int = 0
    in_flight: int = 0       # async engine: the most responses in the engine at once during the call


def pack_by_token_budget(lengths: list[int], max_tokens: int,
                         max_batch_size: int) -> list[list[int]]:
    """Group sequence indices into batches whose padded size ``n * max_len`` <= ``max_tokens``.

    Sequences are sorted longest first, so each batch's first member sets its padded length and
    neighbours have similar lengths: padding stays small without packing kernels. A sequence
    longer than the budget gets a batch of its own.
    """
    if max_tokens < 1 or max_batch_size < 1:
        raise ValueError("max_tokens and max_batch_size must be positive")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]
        if current and ((len(current) + 1) * width > max_tokens or len(current) >= max_batch_size):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def fixed_size_batches(n: int, batch_size: int) -> list[list[int]]:
    """Naive batching in input order (the benchmark's baseline)."""
    return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


class HFBackend:
    """Runs :class:`~prpo_openrlhf.prm.model.Qwen2ProcessRewardModel` on right-padded batches."""

    name = "hf"

    def __init__(self, model, *, tag_id: int, pad_id: int, max_tokens_per_batch: int = 16384,
                 max_batch_size: int = 256):
        self.model = model
        self.tag_id = tag_id
        self.pad_id = pad_id
        self.max_tokens_per_batch = max_tokens_per_batch
        self.max_batch_size = max_batch_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _batch_tensors(self, seqs: list[list[int]]):
        # Right padding: with a causal mask no real token ever attends to a pad, and positions
        # start at 0 for every row, so each row computes exactly what it would alone. The
        # padding mask is therefore not passed to the model: plain causal attention lets SDPA
        # pick its flash kernels (a padding mask forces slower ones); pads' outputs are unused.
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[r, : len(s)] = 1
        tags = (ids == self.tag_id) & mask.bool()
        dev = self.device
        return ids.to(dev), mask.to(dev), tags.to(dev)

    def positive_probs(self, seqs: list[list[int]], batches: list[list[int]] | None = None,
                       stats: ForwardStats | None = None) -> list[torch.Tensor]:
        """Per sequence, ``softmax(logits)[:, 1]`` at its tags: a float32 CPU tensor ``(n_tags,)``.

        ``batches`` overrides the token-budget packing (used by the benchmark's baseline).
        """
        stats = stats if stats is not None else ForwardStats()
        if batches is None:
            batches = pack_by_token_budget([len(s) for s in seqs], self.max_tokens_per_batch,
                                           self.max_batch_size)
        out: list[torch.Tensor | None] = [None] * len(seqs)
        for batch in batches:
            group = [seqs[i] for i in batch]
            ids, mask, tags = self._batch_tensors(group)
            probs = self.model.step_probs(ids, None, tags)[:, 1].float().cpu()
            counts = tags.sum(dim=1).tolist()
            for i, part in zip(batch, torch.split(probs, counts)):
                out[i] = part
            stats.tokens += int(mask.sum())
            stats.padded_tokens += ids.numel()
            stats.batches += 1
        return out


def vllm_engine_kwargs(model_name_or_path: str, *, tag_id: int, max_length: int, dtype: str,
                       tokenizer: str | None = None, engine_kwargs: dict | None = None) -> dict:
    """The pooling runner's engine arguments: step pooling on the tag token, and on CPU a small
    explicit KV cache and no compilation unless ``engine_kwargs`` size them."""
    kwargs = dict(model=model_name_or_path, tokenizer=tokenizer or model_name_or_path,
                  runner="pooling", pooler_config={"step_tag_id": tag_id},
                  max_model_len=max_length, dtype=dtype)
    kwargs = sized_for_cpu({**kwargs, **(engine_kwargs or {})})
    # The scorer cuts inputs at max_length; the engine must accept exactly that length.
    kwargs["max_model_len"] = max_length
    return kwargs


class VLLMBackend:
    """vLLM's pooling runner with step pooling on the tag token (``token_classify`` task)."""

    name = "vllm"

    def __init__(self, model_name_or_path: str, *, tag_id: int, max_length: int, dtype: str,
                 tokenizer: str | None = None, engine_kwargs: dict | None = None):
        from vllm import LLM

        if on_cpu():
            # The engine core in this process, on the process's own threads. In processes of their
            # own (vLLM's CPU default) the core and its worker busy-poll their message queues for
            # 1 s after every call: with a call per prompt group they took 0.74 of a core in
            # make run; in-process the actor takes 0.36, nearly all of it the forward.
            in_process_engine_env()
        self.tag_id = tag_id
        self.llm = LLM(**vllm_engine_kwargs(model_name_or_path, tag_id=tag_id, max_length=max_length,
                                            dtype=dtype, tokenizer=tokenizer, engine_kwargs=engine_kwargs))

    def step_probs(self, seq: list[int], data: torch.Tensor) -> torch.Tensor:
        """The positive label's probability at each of ``seq``'s tags, from the pooler's
        ``(n_tags, 2)`` output; a shape that does not match the tags raises."""
        expected = sum(1 for t in seq if t == self.tag_id)
        if data.ndim != 2 or data.shape[0] != expected:
            raise RuntimeError(f"vLLM step pooling returned shape {tuple(data.shape)} for a "
                               f"sequence with {expected} step tags; expected ({expected}, 2)")
        return data[:, 1].float().cpu()

    def positive_probs(self, seqs: list[list[int]], batches=None,
                       stats: ForwardStats | None = None) -> list[torch.Tensor]:
        stats = stats if stats is not None else ForwardStats()
        prompts = [{"prompt_token_ids": s} for s in seqs]
        outs = self.llm.encode(prompts, pooling_task="token_classify", use_tqdm=False)
        result = [self.step_probs(s, o.outputs.data) for s, o in zip(seqs, outs)]
        stats.tokens += sum(len(s) for s in seqs)
        stats.padded_tokens += sum(len(s) for s in seqs)
        stats.batches += 1
        return result

    def close(self) -> None:
        from prpo_openrlhf.vllm_cpu import shut_down

        llm, self.llm = self.llm, None
        if llm is not None:
            shut_down(llm)
        del llm


class AsyncVLLMBackend(VLLMBackend):
    """vLLM's async engine (``AsyncLLM``): every sequence is a request of its own, so the
    sequences of all the calls in flight (an async PRM actor takes many at once) are batched
    together by vLLM's scheduler as they arrive, continuous batching as in vLLM's server. Its
    engine core runs in a process of its own. Only :meth:`positive_probs_async` scores."""

    def __init__(self, model_name_or_path: str, *, tag_id: int, max_length: int, dtype: str,
                 tokenizer: str | None = None, engine_kwargs: dict | None = None):
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.tag_id = tag_id
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**vllm_engine_kwargs(
            model_name_or_path, tag_id=tag_id, max_length=max_length, dtype=dtype, tokenizer=tokenizer,
            engine_kwargs=engine_kwargs)))
        self._calls: dict[object, int] = {}  # each call in flight -> its peak of responses in the engine
        self._in_flight = 0

    def positive_probs(self, seqs, batches=None, stats=None):
        raise TypeError("the async vLLM engine scores only through positive_probs_async "
                        "(PRMScorer.score_prepared_async, used by the async PRM actor)")

    async def positive_probs_async(self, seqs: list[list[int]],
                                   stats: ForwardStats | None = None) -> list[torch.Tensor]:
        """As :meth:`VLLMBackend.positive_probs`; ``stats.in_flight`` is the most responses the
        engine held at once during this call, its own and other calls' (what vLLM batched from)."""
        from vllm import PoolingParams

        stats = stats if stats is not None else ForwardStats()
        params = PoolingParams(task="token_classify")

        async def one(seq):
            last = None
            async for out in self.engine.encode({"prompt_token_ids": seq}, params, request_id=uuid.uuid4().hex):
                last = out
            return self.step_probs(seq, last.outputs.data)

        mine = object()
        self._calls[mine] = 0
        self._in_flight += len(seqs)
        for call in self._calls:  # every call in flight now shares the engine with this one
            self._calls[call] = max(self._calls[call], self._in_flight)
        try:
            result = await asyncio.gather(*(one(s) for s in seqs))
        finally:
            self._in_flight -= len(seqs)
            peak = self._calls.pop(mine)
        stats.tokens += sum(len(s) for s in seqs)
        stats.padded_tokens += sum(len(s) for s in seqs)
        stats.batches += 1
        stats.in_flight = max(stats.in_flight, peak)
        return list(result)

    def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.shutdown()
