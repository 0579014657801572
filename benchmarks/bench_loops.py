"""Seconds per training step of the two RL loops on the same work: train_prpo_ray vs prpo-local.

The same work: GRPO from the shipped policy on the embedded task, 16 prompts x 8 samples a
step, 2 optimizer updates of 64, up to 64 new tokens, AdamW LR 2e-4 / eps 1e-8 under OpenRLHF's
default schedule (cosine_with_min_lr, 3% warm-up), KL 0.001 (k3). The real loop: the launch
script under `ray job submit` on a private Ray head (train_prpo_ray: DeepSpeed actors, a vLLM
engine, PPOTrainer.fit, weight sync), its per-step time `train/timing/step_total`; prpo-local:
`prpo-local train` in one process, its `time/step`. Start-up and evaluations are outside both.
The runs alternate (real, local, real, local, ...) so drift hits both; prints each loop's median
step time with its spread over all measured steps (the first STEPS_SKIP left out) and the ratio.

    .venv/bin/python benchmarks/bench_loops.py [--rounds 2] [--steps 30] [--out runs/bench-loops]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS_SKIP = 3  # the first steps compile and warm caches in both loops


def real(out: Path, steps: int) -> dict:
    from prpo_openrlhf.local.embedded import paths, train

    env_paths = paths("exact")
    rows = Path(env_paths["PROMPT_DATA"]).read_text().splitlines()[: 16 * steps]
    prompts = out / "prompts.jsonl"
    prompts.write_text("\n".join(rows) + "\n")
    _, scalars = train(out, {**env_paths, "PROMPT_DATA": str(prompts)},
                       {"EMBEDDED_SCRIPT": "train_grpo_qwen2.5_math_1.5b.sh"}, steps)
    parts = {k.rsplit("/", 1)[-1]: [v for _, v in scalars[k]][STEPS_SKIP:]
             for k in scalars if k.startswith("train/timing/")}
    return {"step": parts.pop("step_total"), "parts": parts}


def local(out: Path, steps: int) -> dict:
    cmd = [sys.executable, "-m", "prpo_openrlhf.local", "train", "--local.no_progress",
           "--algo.advantage.estimator", "grpo", "--local.num_steps", str(steps),
           "--rollout.max_new_tokens", "64", "--actor.adam.eps", "1e-8",
           "--actor.lr_scheduler", "cosine_with_min_lr", "--actor.lr_warmup_ratio", "0.03",
           "--local.eval_problems", "16", "--eval.steps", str(10 * steps), "--ckpt.save_steps", "0",
           "--ckpt.output_dir", str(out)]
    with open(out.parent / f"{out.name}.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if "time/step" in r][STEPS_SKIP:]
    parts = {k.split("/", 1)[1]: [r[k] for r in train] for k in train[0] if k.startswith("time/") and k != "time/step"}
    return {"step": [r["time/step"] for r in train], "parts": parts}


def spread(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=4)
    return f"median {statistics.median(xs):.2f} s (quartiles {q[0]:.2f}-{q[2]:.2f}, n {len(xs)})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default=str(ROOT / "runs" / f"bench-loops-{time.strftime('%Y%m%d-%H%M%S')}"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    got = {"real": [], "local": []}
    for r in range(args.rounds):
        for name, fn in (("real", real), ("local", local)):
            t0 = time.monotonic()
            d = out / f"{name}{r}"
            d.mkdir()
            got[name].append(fn(d, args.steps))
            print(f"[bench] round {r + 1}: {name} {spread(got[name][-1]['step'])}, "
                  f"{time.monotonic() - t0:.0f} s in all", flush=True)
    steps = {k: [s for run in v for s in run["step"]] for k, v in got.items()}
    per_round = [statistics.median(a["step"]) / statistics.median(b["step"]) for a, b in zip(got["real"], got["local"])]
    print(f"\ntrain_prpo_ray: {spread(steps['real'])}\nprpo-local:     {spread(steps['local'])}")
    print(f"ratio real / local: {statistics.median(steps['real']) / statistics.median(steps['local']):.2f}x "
          f"(per round: {', '.join(f'{x:.2f}x' for x in per_round)})")
    for name, runs in got.items():
        parts = {k: statistics.median([x for run in runs for x in run["parts"].get(k, [])]) for k in runs[0]["parts"]}
        print(f"{name} per step, medians: " + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items()))
    (out / "result.json").write_text(json.dumps(got))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
