"""One PRPO experience step on a CPU, end to end, with tiny real models (``make run``).

policy rollouts (vLLM CPU, n per prompt, with per-token entropy from the entropy plugin)
-> entropy-spike segments (Algorithm 1) -> PRM scores (vLLM pooling runner, one
pass per response) -> outcome rewards (math-verify grader) -> PRPO advantages (Eq. AF_t).

The models are random tiny checkpoints written on first use, so the rewards say nothing about
math; what the run shows is that every stage runs for real and how the pieces connect. ``make run``
(train_prpo_ray on the embedded task, with the shipped policy and PRM) is the main job.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

PROBLEMS = [("Compute (7+5)*3-4.", "32"), ("Compute 9*(8-6)+1.", "19")]
SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def _cache_dir() -> Path:
    root = os.environ.get("PRPO_CACHE_DIR", Path.home() / ".cache" / "prpo_openrlhf")
    return Path(root) / "demo"


def _tiny_models(root: Path) -> tuple[str, str]:
    from prpo_openrlhf.testing.tiny_models import write_tiny_lm, write_tiny_prm

    lm, prm = root / "tiny_lm", root / "tiny_prm"
    if not (lm / "config.json").exists():
        write_tiny_lm(lm)
    if not (prm / "config.json").exists():
        write_tiny_prm(prm)
    return str(lm), str(prm)


def _rollouts(lm_path, prompts, n, max_tokens, temperature):
    from vllm import LLM, SamplingParams

    from prpo_openrlhf.vllm_cpu import cpu_engine_kwargs, shut_down

    llm = LLM(model=lm_path, **cpu_engine_kwargs(max_model_len=512))
    # The entropy plugin returns H_t of every sampled token with the token (no extra pass).
    params = SamplingParams(n=n, max_tokens=max_tokens, temperature=temperature, seed=0,
                            extra_args={"return_entropy": True})
    outs = llm.generate(prompts, params, use_tqdm=True)
    shut_down(llm)
    return [(list(c.token_ids), c.text, torch.tensor(c.token_entropies)) for o in outs for c in o.outputs]


def _prm_scores(prm_path, problems, segment_texts) -> list[list[float]]:
    """One PRM pass per response through vLLM's pooling runner (PRMScorer builds the inputs)."""
    from prpo_openrlhf.prm import PRMScorer
    from prpo_openrlhf.vllm_cpu import cpu_engine_kwargs

    scorer = PRMScorer(prm_path, backend="vllm", system_prompt=SYSTEM,
                       engine_kwargs=cpu_engine_kwargs(max_model_len=1024))
    try:
        return scorer.score(problems, segment_texts)
    finally:
        scorer.close()


def main(argv=None) -> int:
    from prpo_openrlhf.algorithms.advantages import prpo_advantages
    from prpo_openrlhf.algorithms.rewards import grade_batch
    from prpo_openrlhf.algorithms.segmentation import entropy_segments
    from prpo_openrlhf.vllm_cpu import in_process_engine_env

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n_samples_per_prompt", type=int, default=4)
    ap.add_argument("--max_tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=1.0)
    args = ap.parse_args(argv)
    t0 = time.time()
    in_process_engine_env()
    lm_path, prm_path = _tiny_models(_cache_dir())
    n = args.n_samples_per_prompt
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(lm_path)
    prompts = [tok.apply_chat_template([{"role": "system", "content": SYSTEM}, {"role": "user", "content": p}],
                                       tokenize=False, add_generation_prompt=True) for p, _ in PROBLEMS]
    samples = _rollouts(lm_path, prompts, n, args.max_tokens, args.temperature)
    segments = [entropy_segments(h.tolist(), 0, len(h), k=5, min_gap=10) for _, _, h in samples]
    seg_texts = [[tok.decode(resp[a:b]) for a, b in segs] for (resp, _, _), segs in zip(samples, segments)]
    problems = [p for p, _ in PROBLEMS for _ in range(n)]
    scores = _prm_scores(prm_path, problems, seg_texts)

    refs = [a for _, a in PROBLEMS for _ in range(n)]
    correct = grade_batch([text for _, text, _ in samples], refs, timeout_s=5.0)
    T = max(len(r) for r, _, _ in samples)
    mask = torch.zeros(len(samples), T)
    process = torch.zeros(len(samples), T)
    for i, ((resp, _, _), segs, sc) in enumerate(zip(samples, segments, scores)):
        mask[i, : len(resp)] = 1
        for (a, b), s in zip(segs, sc):
            process[i, a:b] = s
    rewards = torch.tensor([1.0 if c else -1.0 for c in correct])
    adv = prpo_advantages(process, rewards, mask, n_samples_per_prompt=n)

    print(f"\n{'#':>2} {'len':>4} {'segments':>8} {'R':>3}  {'mean A':>7}  PRM scores")
    for i, (segs, sc) in enumerate(zip(segments, scores)):
        m = mask[i].bool()
        print(f"{i:>2} {int(m.sum()):>4} {len(segs):>8} {int(rewards[i]):>+3}  {adv[i][m].mean():>+7.3f}  "
              + " ".join(f"{s:.2f}" for s in sc))
    print(f"\n{len(samples)} rollouts, {sum(map(len, segments))} segments scored, "
          f"{sum(correct)} correct; PRPO step done in {time.time() - t0:.0f} s "
          "(random tiny models: the numbers show the pipeline, not learning).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
