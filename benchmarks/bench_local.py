"""Rollout throughput of prpo-local's two engines, side by side: HF generate vs in-process vLLM.

Same policy (the embedded warmed-up tiny policy unless --model), same prompts (one training
step's batch of the synthetic task), same sampling settings. Each engine is timed over
--repeats calls after one untimed call; vLLM is also timed with its weight sync (done every
training step) and its start-up is reported separately. Prints a table and one JSON line.

    .venv/bin/python benchmarks/bench_local.py [--model PATH] [--prompts 16] [--n 8]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def _time(fn, repeats: int) -> tuple[float, object]:
    fn()  # untimed: first-call allocations and lazy initialisation
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv=None) -> int:
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="HF path; default: the embedded warmed-up policy")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max_new_tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for HF (prpo-local's default for the embedded policy is 1)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prpo_openrlhf.local.rollout import HFRollout, VLLMRollout, chat_prompt_ids
    from prpo_openrlhf.local.task import ArithmeticTask
    from prpo_openrlhf.local.warmup import warmed_up_policy

    path = args.model or warmed_up_policy(progress=False)[0]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    prompts = chat_prompt_ids(tok, [p.text for p in ArithmeticTask().train_batch(args.prompts, "bench")], None)
    gen = dict(n=args.n, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)

    hf = HFRollout(model, tok)
    t_hf, s_hf = _time(lambda: hf.generate(prompts, **gen), args.repeats)
    t0 = time.perf_counter()
    vl = VLLMRollout(path, tok, max_model_len=min(model.config.max_position_embeddings, 4096), seed=0,
                     want_entropy=True)
    start = time.perf_counter() - t0
    t_vl, s_vl = _time(lambda: vl.generate(prompts, **gen), args.repeats)
    t_sync, _ = _time(lambda: vl.sync(model), args.repeats)
    # vLLM's CPU worker re-binds this process's OpenMP threads when it starts: time HF again
    # after it, since in a training run HF generate would share the process with no engine.
    t_hf_after, _ = _time(lambda: hf.generate(prompts, **gen), args.repeats)

    rows = []
    for name, t, samples, extra in (("hf generate", t_hf, s_hf, 0.0), ("vllm (+ weight sync)", t_vl, s_vl, t_sync)):
        tokens = sum(len(s.response_ids) for s in samples)
        rows.append({"engine": name, "seconds_per_step": round(t + extra, 3), "generate_s": round(t, 3),
                     "sync_s": round(extra, 3), "tokens": tokens, "tokens_per_s": round(tokens / (t + extra), 1)})
    print(f"{len(prompts)} prompts x {args.n} samples, <= {args.max_new_tokens} new tokens, "
          f"torch threads {torch.get_num_threads()}; vLLM start-up {start:.1f} s (once per run)")
    print(f"{'engine':<22}{'s/step':>8}{'generate':>10}{'sync':>7}{'tokens':>8}{'tok/s':>9}")
    for r in rows:
        print(f"{r['engine']:<22}{r['seconds_per_step']:>8.3f}{r['generate_s']:>10.3f}{r['sync_s']:>7.3f}"
              f"{r['tokens']:>8}{r['tokens_per_s']:>9.1f}")
    print(f"(hf generate timed again with the vLLM engine alive in the process: {t_hf_after:.3f} s)")
    print(json.dumps({"bench": "local_rollout", "vllm_start_s": round(start, 2), "rows": rows,
                      "hf_after_vllm_s": round(t_hf_after, 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
