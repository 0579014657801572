"""The PRM's cost as a cluster sees it: the PRM on a core of its own, the rest of the training on another.

On a cluster the PRM has GPUs of its own; on one CPU machine its compute would compete with
vLLM's and DeepSpeed's for the same cores, and the step time would mix that competition with
the time the trainer really waits for scores. This benchmark models the split:
- this process pins itself to --train-cpus (default "0") before it starts anything, so the
  private Ray head, its workers, the job's driver, the DeepSpeed actors and the vLLM engine
  inherit that core;
- PRPO's PRM actor moves itself to --prm-cpus (default "1") when it starts (PRPO_PRM_CPUS,
  prm/ray_group.py; vLLM's CPU thread binding follows the allowed cores).
GRPO runs the same way and never uses the PRM's core. What it does not model: memory
bandwidth and caches are still shared, and a cluster's PRM sits across a network.

Each run is make run's launch script (examples/scripts/train_prpo_embedded_cpu.sh) on the
embedded task from the shipped policy, with the shipped learned PRM (4x the policy's parameters)
served by vLLM's pooling runner on its own actor, at larger sizes so a step lasts long enough to
time (--prompts x 8 samples, 64 new tokens). The kinds run interleaved, round after round (GRPO,
PRPO, PRPO --prm.coalesce, GRPO, ...), so drift hits all. Per kind: the median of OpenRLHF's
`timing/step_total` over all measured steps (the first --skip of each run left out) with its
quartiles, the ratio to GRPO's, `prm/wait_s` as a share of the step, and the PRM's forward sizes
(`prm/forward_responses`: responses per PRM forward; with coalescing, groups share forwards).

    .venv/bin/python benchmarks/bench_pinned.py [--rounds 2] [--steps 10] [--prompts 64]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = {  # name -> (launch script, EXTRA_ARGS)
    "GRPO": ("train_grpo_qwen2.5_math_1.5b.sh", ""),
    "PRPO": ("train_prpo_qwen2.5_math_1.5b.sh", ""),
    "PRPO coalesce": ("train_prpo_qwen2.5_math_1.5b.sh", "--prm.coalesce"),
}


def cpus(text: str) -> set[int]:
    return {int(c) for c in text.split(",")}


def one_run(out: Path, kind: str, steps: int, prompts: int, env_paths: dict) -> dict:
    from prpo_openrlhf.local.embedded import train

    script, extra = KINDS[kind]
    rows = Path(env_paths["PROMPT_DATA"]).read_text().splitlines()
    data = out / "prompts.jsonl"
    data.write_text("\n".join((rows * (1 + steps * prompts // len(rows)))[: steps * prompts]) + "\n")
    sizes = {"ROLLOUT_BATCH": prompts, "ROLLOUT_MICRO_BATCH": prompts, "TRAIN_BATCH": prompts * 4,
             "TRAIN_MICRO_BATCH": 32, "EMBEDDED_SCRIPT": script, "EXTRA_ARGS": extra}
    _, s = train(out, {**env_paths, "PROMPT_DATA": str(data)}, {k: str(v) for k, v in sizes.items()}, steps)
    return {tag.rsplit("/", 1)[-1]: [v for _, v in s[tag]] for tag in
            ("train/timing/step_total", "train/timing/generation", "train/prm/wait_s", "train/prm/forward_responses")
            if tag in s}


def summary(runs: list[dict], skip: int) -> dict:
    steps = [x for r in runs for x in r["step_total"][skip:]]
    q = statistics.quantiles(steps, n=4)
    out = {"step_s": statistics.median(steps), "q1": q[0], "q3": q[2], "n": len(steps),
           "per_run": [round(statistics.median(r["step_total"][skip:]), 2) for r in runs]}
    if "wait_s" in runs[0]:
        waits = [w / t for r in runs for w, t in zip(r["wait_s"][skip:], r["step_total"][skip:])]
        out["wait_share"] = statistics.median(waits)
        out["wait_share_max"] = max(waits)
        # 0 when calls are not coalesced (each call is its own forward: one prompt group)
        out["forward_responses"] = statistics.median([x for r in runs for x in r["forward_responses"][skip:]])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="training steps per run")
    ap.add_argument("--skip", type=int, default=2, help="first steps of each run left out (vLLM warm-up)")
    ap.add_argument("--prompts", type=int, default=64, help="prompts per step (x 8 samples)")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, from: {', '.join(KINDS)}")
    ap.add_argument("--train-cpus", default="0")
    ap.add_argument("--prm-cpus", default="1")
    ap.add_argument("--out", default=str(ROOT / "runs" / f"bench-pinned-{time.strftime('%Y%m%d-%H%M%S')}"))
    ap.add_argument("--summarize", action="store_true", help="print the table of the runs already in --out")
    args = ap.parse_args(argv)
    if args.summarize:
        return report(json.loads((Path(args.out) / "runs.json").read_text()), args)
    # SIGTERM unwinds like Ctrl-C, so the run's private Ray head is stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    kinds = [k.strip() for k in args.kinds.split(",")]
    os.sched_setaffinity(0, cpus(args.train_cpus))  # before any thread or process is started
    os.environ["PRPO_PRM_CPUS"] = args.prm_cpus      # reaches the PRM actor through the Ray head
    from prpo_openrlhf.local.embedded import paths

    env_paths = paths("learned")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    got: dict[str, list[dict]] = {k: [] for k in kinds}
    for r in range(args.rounds):
        for kind in kinds:
            d = out / f"{kind.replace(' ', '-').lower()}-{r}"
            d.mkdir()
            t0 = time.monotonic()
            got[kind].append(one_run(d, kind, args.steps, args.prompts, env_paths))
            (out / "runs.json").write_text(json.dumps(got))
            print(f"[bench] round {r + 1}, {kind}: median step {statistics.median(got[kind][-1]['step_total'][args.skip:]):.1f} s, "
                  f"{time.monotonic() - t0:.0f} s in all", flush=True)
    return report(got, args)


def report(got: dict, args) -> int:
    res = {k: summary(v, args.skip) for k, v in got.items() if v}
    base = res.get("GRPO", {}).get("step_s")
    print(f"\n{args.prompts} prompts x 8 samples a step; training on CPUs {args.train_cpus}, PRM on {args.prm_cpus}")
    print("| run | step (s), median [quartiles] | per run | / GRPO | prm/wait_s share of the step, median (max) | responses per PRM forward |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k, s in res.items():
        ratio = f"{s['step_s'] / base:.3f}x" if base else "-"
        wait = f"{100 * s['wait_share']:.1f}% ({100 * s['wait_share_max']:.1f}%)" if "wait_share" in s else "-"
        fwd = "-" if "forward_responses" not in s else \
            f"{s['forward_responses']:.0f}" if s["forward_responses"] else "one group (8) per call"
        print(f"| {k} | {s['step_s']:.2f} [{s['q1']:.2f}-{s['q3']:.2f}], n {s['n']} | {s['per_run']} | {ratio} | {wait} | {fwd} |")
    (Path(args.out) / "result.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
