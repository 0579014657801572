"""Generation backends (vLLM, HF transformers) that hand back each sample as it finishes.

Both consume the same prompt token ids and one ``SampleRequest`` per sample, and call
``on_finished(records)`` as soon as samples are done, so the caller can append them to the
store before anything else can go wrong. Every sample carries its own seed
(``store.sample_seed``): vLLM seeds each request with it; HF ``generate`` has one generator per
call, so it is seeded per batch from the first sample's seed (reproducible for the same batch
composition; vLLM is the reference backend).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

OnFinished = Callable[[list[dict]], None]


@dataclass(frozen=True)
class SampleRequest:
    benchmark: str
    problem: int
    sample: int
    prompt_ids: tuple[int, ...]
    problem_sha: str
    greedy: bool
    temperature: float
    top_p: float
    seed: int
    max_new_tokens: int

    def record(self, text: str, num_tokens: int, finish_reason: str) -> dict:
        """The line stored for this sample once generated."""
        return {"benchmark": self.benchmark, "problem": self.problem, "sample": self.sample,
                "problem_sha": self.problem_sha, "seed": None if self.greedy else self.seed,
                "text": text, "num_tokens": num_tokens, "finish_reason": finish_reason}


@dataclass
class BackendOptions:
    model: str
    dtype: str = "auto"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    enforce_eager: bool = False
    cpu_kv_cache_mib: int = 256
    hf_batch_size: int = 16
    trust_remote_code: bool = False


def _model_max_len(model: str, trust_remote_code: bool) -> int | None:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    return getattr(cfg, "max_position_embeddings", None)


class VLLMBackend:
    """vLLM ``LLM`` driven step by step so each finished request is stored at once."""

    name = "vllm"

    def __init__(self, opts: BackendOptions, needed_len: int):
        from vllm.platforms import current_platform

        self.on_cpu = current_platform.is_cpu()
        self.llm = self._make_llm(opts, needed_len)

    def _make_llm(self, opts: BackendOptions, needed_len: int):
        if self.on_cpu:
            kwargs = self._cpu_kwargs(opts, needed_len)
        else:
            kwargs = dict(dtype=opts.dtype, tensor_parallel_size=opts.tensor_parallel_size,
                          gpu_memory_utilization=opts.gpu_memory_utilization,
                          enforce_eager=opts.enforce_eager)
            if opts.max_model_len:
                kwargs["max_model_len"] = opts.max_model_len
        from vllm import LLM

        return LLM(model=opts.model, trust_remote_code=opts.trust_remote_code, **kwargs)

    def close(self) -> None:
        from prpo_openrlhf.vllm_cpu import shut_down

        shut_down(self.llm)

    @staticmethod
    def _cpu_kwargs(opts: BackendOptions, needed_len: int) -> dict:
        """The CPU build needs an explicit KV cache and a model length that fits it; running
        the engine core in-process makes start-up seconds instead of ~30 s."""
        from prpo_openrlhf.vllm_cpu import cpu_engine_kwargs, in_process_engine_env

        in_process_engine_env()
        if opts.tensor_parallel_size != 1:
            print("[prpo-eval] vLLM CPU build: ignoring --tensor_parallel_size "
                  f"{opts.tensor_parallel_size}", file=sys.stderr)
        model_max = _model_max_len(opts.model, opts.trust_remote_code)
        max_len = opts.max_model_len or min(needed_len, model_max or needed_len)
        kwargs = cpu_engine_kwargs(max_model_len=max_len, kv_cache_mib=opts.cpu_kv_cache_mib)
        if opts.dtype != "auto":
            kwargs["dtype"] = opts.dtype
        return kwargs

    @staticmethod
    def _params(req: SampleRequest):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        common = dict(max_tokens=req.max_new_tokens, n=1, skip_special_tokens=True,
                      output_kind=RequestOutputKind.FINAL_ONLY)
        if req.greedy:
            return SamplingParams(temperature=0.0, **common)
        return SamplingParams(temperature=req.temperature, top_p=req.top_p, seed=req.seed,
                              **common)

    def generate(self, requests: Sequence[SampleRequest], on_finished: OnFinished,
                 pbar=None) -> None:
        """Queue every request, then step the engine, storing each request as it finishes.

        Requests are added to ``llm.llm_engine`` under our own ids (the sample's key), so an
        output maps back to its sample whatever order it finishes in.
        """
        engine = self.llm.llm_engine
        # vLLM 0.29 deprecates raw prompts at add_request in favour of rendered ones; render
        # the way LLM.generate does where that helper exists, else pass the raw token prompt.
        render = getattr(self.llm, "_preprocess_cmpl_one", lambda prompt: prompt)
        pending = {}
        try:
            for req in requests:
                rid = json.dumps([req.benchmark, req.problem, req.sample])
                engine.add_request(rid, render({"prompt_token_ids": list(req.prompt_ids)}),
                                   self._params(req))
                pending[rid] = req
            while pending and engine.has_unfinished_requests():
                done = []
                for out in engine.step():
                    if out.finished and out.request_id in pending:
                        comp = out.outputs[0]
                        req = pending.pop(out.request_id)
                        done.append(req.record(comp.text, len(comp.token_ids),
                                               str(comp.finish_reason)))
                if done:
                    on_finished(done)
                    if pbar is not None:
                        pbar.update(len(done))
        finally:
            if pending:  # an exception mid-way: leave the (reusable) engine idle
                engine.abort_request(list(pending))


class HFBackend:
    """transformers ``generate`` in left-padded batches of samples that share settings."""

    name = "hf"

    def __init__(self, opts: BackendOptions):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = opts.dtype if opts.dtype != "auto" else (
            "bfloat16" if self.device == "cuda" else "float32")
        self.tokenizer = AutoTokenizer.from_pretrained(opts.model,
                                                       trust_remote_code=opts.trust_remote_code)
        self.model = AutoModelForCausalLM.from_pretrained(
            opts.model, dtype=getattr(torch, dtype), trust_remote_code=opts.trust_remote_code
        ).to(self.device).eval()
        self.batch_size = opts.hf_batch_size
        self.eos_ids = self._eos_ids()
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.eos_ids[0]

    def _eos_ids(self) -> list[int]:
        # vLLM stops at the tokenizer's EOS and the generation config's; do the same here.
        ids = self.model.generation_config.eos_token_id
        ids = [] if ids is None else ([ids] if isinstance(ids, int) else list(ids))
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    def _batches(self, requests: Sequence[SampleRequest]):
        batch: list[SampleRequest] = []
        for req in requests:
            same = not batch or (batch[0].greedy, batch[0].temperature, batch[0].top_p,
                                 batch[0].max_new_tokens) == (
                req.greedy, req.temperature, req.top_p, req.max_new_tokens)
            if len(batch) == self.batch_size or not same:
                yield batch
                batch = []
            batch.append(req)
        if batch:
            yield batch

    def _run_batch(self, batch: list[SampleRequest]) -> list[dict]:
        import torch

        width = max(len(r.prompt_ids) for r in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(batch):
            ids[i, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            mask[i, width - len(r.prompt_ids):] = 1
        first = batch[0]
        gen = dict(max_new_tokens=first.max_new_tokens, num_beams=1, repetition_penalty=1.0,
                   eos_token_id=self.eos_ids, pad_token_id=self.pad_id)
        if first.greedy:
            gen.update(do_sample=False)
        else:  # top_k=0 turns off HF's default top-k of 50, which vLLM does not apply
            gen.update(do_sample=True, temperature=first.temperature, top_p=first.top_p, top_k=0)
            torch.manual_seed(first.seed)
        with torch.no_grad():
            out = self.model.generate(input_ids=ids.to(self.device),
                                      attention_mask=mask.to(self.device), **gen)
        return [self._record(r, row[width:].tolist()) for r, row in zip(batch, out.cpu())]

    def _record(self, req: SampleRequest, new_ids: list[int]) -> dict:
        stop = next((i for i, t in enumerate(new_ids) if t in self.eos_ids), None)
        kept = new_ids if stop is None else new_ids[: stop + 1]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        return req.record(text, len(kept), "length" if stop is None else "stop")

    def generate(self, requests: Sequence[SampleRequest], on_finished: OnFinished,
                 pbar=None) -> None:
        for batch in self._batches(requests):
            records = self._run_batch(batch)
            on_finished(records)
            if pbar is not None:
                pbar.update(len(records))


def make_backend(name: str, opts: BackendOptions, needed_len: int):
    """The backend called ``name`` ("vllm" or "hf"), with its model loaded."""
    if name == "vllm":
        return VLLMBackend(opts, needed_len)
    if name == "hf":
        return HFBackend(opts)
    raise ValueError(f"unknown --backend {name!r}; choose vllm or hf")
