"""Seconds per step on OpenRLHF's real pipeline (CPU): GRPO vs PRPO, PRM dispatch per group vs per batch.

    .venv/bin/python benchmarks/bench_pipeline.py [--steps 5 --prompts-per-step 4 --n 8 --tokens 128]

Runs the paper's launch scripts through ``scripts/run_tiny_cpu.sh`` one after the other on the
same machine, same prompts and sizes (``ray job submit``, upstream's DeepSpeed actors and
vLLM engine, PPOTrainer.fit, weight sync):
  - GRPO (``train_grpo_qwen2.5_math_1.5b.sh``, no PRM);
  - PRPO (``train_prpo_qwen2.5_math_1.5b.sh``) with ``--prpo.prm_dispatch group`` (each prompt
    group goes to the PRM as vLLM finishes it; the default);
  - PRPO with ``--prpo.prm_dispatch batch`` (the whole batch after generation).
The PRM is a random checkpoint about 4x the policy's parameters (``--prm-hidden``/``--prm-layers``),
on its own actor with vLLM's pooling runner, like the paper's 7B PRM next to a 1.5B policy.
Step times come from OpenRLHF's own ``timing/step_total``; step 1 (vLLM's first batch) is left
out. Printed: median seconds per step, the ratio to GRPO, and ``prm/wait_s`` as a share of the step.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = [  # label, script, extra arguments
    ("GRPO (no PRM)", "train_grpo_qwen2.5_math_1.5b.sh", "grpo_1.5b", ""),
    ("PRPO, PRM per group", "train_prpo_qwen2.5_math_1.5b.sh", "prpo_1.5b", "--prpo.prm_dispatch group"),
    ("PRPO, PRM per batch", "train_prpo_qwen2.5_math_1.5b.sh", "prpo_1.5b", "--prpo.prm_dispatch batch"),
]


def _params(path: Path) -> int:
    from safetensors.torch import load_file

    return sum(t.numel() for f in path.glob("*.safetensors") for t in load_file(str(f)).values())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--prompts-per-step", type=int, default=4)
    p.add_argument("--n", type=int, default=8, help="samples per prompt")
    p.add_argument("--tokens", type=int, default=128, help="max new tokens")
    p.add_argument("--prm-hidden", type=int, default=256)
    p.add_argument("--prm-layers", type=int, default=2)
    p.add_argument("--workdir", default=None, help="where models, checkpoints and logs go (default: a temp dir)")
    args = p.parse_args(argv)

    from prpo_openrlhf.testing.tiny_run import read_scalars, write_tiny_run

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_pipeline_")).resolve()
    prompts = args.steps * args.prompts_per_step
    paths = write_tiny_run(work / "tiny", prompts=prompts, prm_hidden=args.prm_hidden, prm_layers=args.prm_layers)
    policy_n, prm_n = _params(Path(paths["POLICY_MODEL"])), _params(Path(paths["PRM_MODEL"]))
    samples = args.prompts_per_step * args.n
    sizes = {"TINY_DIR": str(work / "tiny"), "TINY_PROMPTS": str(prompts), "TINY_PRM_HIDDEN": str(args.prm_hidden),
             "TINY_PRM_LAYERS": str(args.prm_layers), "ROLLOUT_BATCH": str(args.prompts_per_step),
             "N_SAMPLES": str(args.n), "ROLLOUT_MICRO_BATCH": str(args.n), "TRAIN_BATCH": str(samples),
             "TRAIN_MICRO_BATCH": "4", "MAX_NEW_TOKENS": str(args.tokens), "DATA_MAX_LEN": str(args.tokens + 128)}
    print(f"policy {policy_n / 1e6:.2f}M parameters, PRM {prm_n / 1e6:.2f}M ({prm_n / policy_n:.1f}x); "
          f"{args.steps} steps of {args.prompts_per_step} prompts x {args.n} samples, <= {args.tokens} new tokens; "
          f"machine: {os.cpu_count()} cores", flush=True)
    rows = []
    for label, script, name, extra in RUNS:
        save = work / f"run{len(rows)}"
        env = {**os.environ, **sizes, "SAVE_ROOT": str(save), "LOG_ROOT": str(save / "logs"), "EXTRA_ARGS": extra}
        env.pop("RAY_ADDRESS", None)
        out = subprocess.run(["bash", str(ROOT / "scripts" / "run_tiny_cpu.sh"), str(ROOT / "examples" / "scripts" / script)],
                             env=env, capture_output=True, text=True)
        if out.returncode != 0:
            print((out.stdout + out.stderr)[-4000:], file=sys.stderr)
            raise SystemExit(f"{label}: the run failed (exit {out.returncode})")
        metrics = read_scalars(save / "logs", name)
        steps = {s: v for s, v in metrics["train/timing/step_total"] if s > 1}
        waits = {s: v for s, v in metrics.get("train/prm/wait_s", []) if s > 1}
        step_s = statistics.median(steps.values())
        share = statistics.median(waits[s] / steps[s] for s in steps) if waits else None
        rows.append((label, step_s, share))
        print(f"  {label}: {step_s:.2f} s/step (steps 2-{args.steps}: "
              f"{', '.join(f'{v:.2f}' for v in steps.values())})", flush=True)

    grpo = rows[0][1]
    print("\n| run | s/step (median, steps 2+) | vs GRPO | prm/wait_s share of the step |")
    print("| --- | --- | --- | --- |")
    for label, step_s, share in rows:
        print(f"| {label} | {step_s:.2f} | {step_s / grpo:.2f}x | {'-' if share is None else f'{share:.1%}'} |")
    print(f"\ntarget: PRPO with per-group dispatch <= 1.05x GRPO (the paper's Table 1: 1.73x); "
          f"measured {rows[1][1] / grpo:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
