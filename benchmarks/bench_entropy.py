"""vLLM CPU generation throughput: entropy plugin opted in vs not vs top-20 logprobs.

Configurations, measured side by side in one process on one in-process vLLM CPU engine
(V1 runner), all four in every round in a rotating order; reported: median throughput per
configuration, and the median over rounds of each within-round ratio (robust to load that
other processes put on a shared machine, which moves whole rounds up or down):

  vanilla  plugin uninstalled (vLLM's own methods)
  off      plugin installed, requests do not opt in
  on       plugin installed, every request opts in (extra_args={"return_entropy": True})
  top20    plugin installed, no opt-in, logprobs=20 (what one could do without a patch)

Models (random weights, fp32, written to a temporary directory):
  tiny        the tests' tiny LM: 2 layers, hidden 128, vocabulary 260
  qwen-vocab  2 layers, hidden 256, Qwen2.5's vocabulary of 151,936: the per-token sampler
              and entropy work of a real vocabulary on a model small enough for a CPU (a
              worst case: almost nothing but the output layer and the sampler)
  qwen15-head 2 layers, hidden 1536 and the tied 151,936-token output layer of
              Qwen2.5-Math-1.5B: the paper's output layer, without its 28 layers

Every request generates exactly --tokens tokens (ignore_eos) at temperature 1, top-p 1
(OpenRLHF's rollout defaults). Two throughputs per run: generated tokens per wall-clock second,
and per CPU-second of this process (all its threads; the engine runs in-process), which is far
less sensitive to other work on a shared machine. The time inside the plugin's entropy kernel
is measured separately in the 'on' runs.

Run:  .venv/bin/python benchmarks/bench_entropy.py
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

CONFIGS = ("vanilla", "off", "on", "top20")
# name: (vocabulary, hidden size, default new tokens, tied output layer)
SHAPES = {"tiny": (260, 128, 128, False), "qwen-vocab": (151936, 256, 32, False),
          "qwen15-head": (151936, 1536, 16, True)}


def write_model(path: str, vocab_size: int, hidden_size: int, tie: bool = False) -> str:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from prpo_openrlhf.testing.tiny_models import write_tiny_lm

    if vocab_size <= 260:
        return str(write_tiny_lm(path, hidden_size=hidden_size))
    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                      num_hidden_layers=2, num_attention_heads=hidden_size // 64,
                      num_key_value_heads=hidden_size // 64, max_position_embeddings=1024,
                      tie_word_embeddings=tie, bos_token_id=0, eos_token_id=1,
                      architectures=["Qwen2ForCausalLM"], torch_dtype="float32")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():  # peaked, varied next-token distributions, like a trained model's
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(path)
    return path


def make_params(config: str, tokens: int, seed: int):
    from vllm import SamplingParams

    extra = {"return_entropy": True} if config == "on" else None
    return SamplingParams(max_tokens=tokens, temperature=1.0, top_p=1.0, ignore_eos=True,
                          detokenize=False, seed=None, extra_args=extra,
                          logprobs=20 if config == "top20" else None)


class EntropyClock:
    """Time spent in the plugin's entropy kernel (the engine runs in this process)."""

    def __init__(self):
        from prpo_openrlhf.rollout import _vllm_worker_hooks

        self.module, self.real, self.durations = _vllm_worker_hooks, None, []

    def __enter__(self):
        self.real = self.module.token_entropy

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return self.real(*args, **kwargs)
            finally:
                self.durations.append(time.perf_counter() - start)

        self.module.token_entropy = timed
        return self

    def __exit__(self, *exc):
        self.module.token_entropy = self.real


def run_once(llm, config: str, prompts, tokens: int, clock: EntropyClock | None = None):
    """(tokens per wall second, tokens per CPU second of this process) for one batch."""
    from prpo_openrlhf.rollout import vllm_entropy

    if config == "vanilla":
        vllm_entropy.uninstall()
    else:
        vllm_entropy.install()
    try:
        params = make_params(config, tokens, 0)
        wall, cpu = time.perf_counter(), time.process_time()
        if clock is not None and config == "on":
            with clock:
                outputs = llm.generate(prompts, params, use_tqdm=False)
        else:
            outputs = llm.generate(prompts, params, use_tqdm=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        vllm_entropy.install()
    generated = sum(len(o.outputs[0].token_ids) for o in outputs)
    assert generated == tokens * len(prompts)
    has = [hasattr(o.outputs[0], "token_entropies") for o in outputs]
    assert all(has) if config == "on" else not any(has), config
    return generated / wall, generated / cpu


def bench_model(name: str, vocab: int, hidden: int, tokens: int, args, tie: bool = False) -> dict:
    from vllm import LLM
    from vllm.inputs import TokensPrompt

    from prpo_openrlhf.vllm_cpu import cpu_engine_kwargs, in_process_engine_env

    with tempfile.TemporaryDirectory() as tmp:
        path = write_model(os.path.join(tmp, name), vocab, hidden, tie)
        in_process_engine_env()
        llm = LLM(model=path, skip_tokenizer_init=True, max_logprobs=20,
                  **cpu_engine_kwargs(max_model_len=args.prompt_len + tokens + 8, kv_cache_mib=256))
        prompts = [TokensPrompt(prompt_token_ids=[(7 * i + j) % 250 + 2 for j in range(args.prompt_len)])
                   for i in range(args.batch)]
        for config in CONFIGS:  # warm-up: compiles the sampler and the entropy kernel
            run_once(llm, config, prompts, min(tokens, 8))
        wall, cpu = {c: [] for c in CONFIGS}, {c: [] for c in CONFIGS}
        clock = EntropyClock()
        for r in range(args.rounds):
            order = CONFIGS[r % len(CONFIGS):] + CONFIGS[: r % len(CONFIGS)]
            for config in order:
                w, c = run_once(llm, config, prompts, tokens, clock)
                wall[config].append(w)
                cpu[config].append(c)
        del llm
    return {"wall": wall, "cpu": cpu, "tokens": tokens, "entropy_calls": clock.durations}


def _ratios(values: dict, a: str, b: str) -> list[float]:
    """Per-round a/b: both measured back to back in the same round."""
    return [x / y for x, y in zip(values[a], values[b])]


def report(name: str, vocab: int, hidden: int, res: dict, args) -> None:
    print(f"\nmodel {name}: vocab {vocab}, hidden {hidden}, 2 layers; batch {args.batch} x "
          f"{res['tokens']} new tokens, prompt {args.prompt_len} tokens; {args.rounds} rounds")
    for kind, label in (("wall", "tokens per wall-clock second"),
                        ("cpu", "tokens per CPU-second of the process")):
        values = res[kind]
        print(f"  {label}")
        print(f"  {'config':<8} {'median':>9}   per round")
        for c in CONFIGS:
            print(f"  {c:<8} {statistics.median(values[c]):>9.1f}   "
                  + " ".join(f"{v:.1f}" for v in values[c]))
        for a, b, note in (("on", "off", " (target >= 0.97)"), ("top20", "off", ""),
                           ("off", "vanilla", "")):
            per_round = _ratios(values, a, b)
            print(f"  {a}/{b}: median of per-round ratios {statistics.median(per_round):.3f}{note}; "
                  f"ratio of medians {statistics.median(values[a]) / statistics.median(values[b]):.3f}; "
                  f"per round " + " ".join(f"{r:.2f}" for r in per_round))
    calls = res["entropy_calls"]  # one call per decoding step of the batch
    print(f"  entropy kernel in 'on' runs: median {1e3 * statistics.median(calls):.3f} ms, mean "
          f"{1e3 * statistics.mean(calls):.3f} ms per decoding step ({len(calls)} steps)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--tokens", type=int, default=None,
                   help="new tokens per request (default: 128 tiny, 32 qwen-vocab, 16 qwen15-head)")
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--threads", type=int, default=1,
                   help="torch/OpenMP threads; with VLLM_CPU_OMP_THREADS_BIND=nobind (the default "
                        "here) the OS may move them to whichever core is free on a shared machine")
    args = p.parse_args(argv)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    print("command: " + " ".join([os.path.relpath(sys.executable)] + sys.argv))
    print(f"threads: {torch.get_num_threads()}, VLLM_CPU_OMP_THREADS_BIND="
          f"{os.environ['VLLM_CPU_OMP_THREADS_BIND']}, cpus: {os.cpu_count()}")
    for name in args.models:
        vocab, hidden, tokens, tie = SHAPES[name]
        res = bench_model(name, vocab, hidden, args.tokens or tokens, args, tie)
        report(name, vocab, hidden, res, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
