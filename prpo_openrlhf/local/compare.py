"""``prpo-local compare``: the paper's Table 4 / Figure 3 at small scale, on one machine.

Every method trains from the same warmed-up policy with the same seeds (same prompts per step,
same sampling seeds) and the same budget (steps x rollouts); only the advantage estimator, the
split or the normalisation differs. Each run lives in ``<out>/<method>/seed<k>/``; a finished
run is reused, so an interrupted comparison continues where it stopped. Prints a table and
writes ``compare.md``, ``compare.json`` and ``compare.png`` into ``<out>``.

With ``--compare.prm_noise FLIP,JITTER`` (on by default) every method is also trained against
the exact verifier with that noise (``--prm.noise.*``), in ``<out>/noisy-prm/``: the paper's
PRM-only and relative-normalisation collapses come from imperfect PRM scores, which the exact
verifier alone never gives. Methods that use no process scores are the same run in both arms.
That arm gets its own table and ``compare_noisy.png``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time
from pathlib import Path

from prpo_openrlhf.local import runlog
from prpo_openrlhf.local.config import TrainConfig, UsageError, diff
from prpo_openrlhf.local.flag_names import flag_of

# name -> TrainConfig overrides; GRPO first: the others are measured against its final accuracy.
METHODS: dict[str, dict] = {
    "GRPO": {"estimator": "group_norm"},
    "PRPO": {"estimator": "prpo"},
    "PRM-Avg": {"estimator": "prm_avg"},
    "PRM-Avg+PRPO": {"estimator": "prm_avg_prpo"},
    "process-only": {"estimator": "process_only"},
    "PRPO uniform split": {"estimator": "prpo", "split": "uniform"},
    "PRPO random split": {"estimator": "prpo", "split": "random"},
    "PRPO relative norm": {"estimator": "prpo", "normalization": "relative"},
    # not in the default list, available by name:
    "Dr.GRPO": {"estimator": "dr_grpo"},
    "PURE": {"estimator": "pure"},
}
DEFAULT_METHODS = list(METHODS)[:8]
# 512 held-out problems and 3 seeds: one run's sampled accuracy has a standard error of about
# 2 points on 512 problems, so a 3-point gap between methods needs the seeds' spread too.
COMPARE_DEFAULTS = dict(eval_problems=512)
GAIN = 0.10  # "steps to +10 points": first evaluation at least this far above the seed's start


def add_compare_flags(parser: argparse.ArgumentParser) -> None:
    from prpo_openrlhf.local.flags import add_train_flags

    g = parser.add_argument_group("comparison")
    g.add_argument("--compare.methods", dest="methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated, from: {', '.join(METHODS)}")
    g.add_argument("--compare.seeds", dest="seeds", default="0,1,2", help="comma-separated training seeds")
    g.add_argument("--compare.prm_noise", dest="compare_noise", default="0.1,0.1",
                   help="FLIP,JITTER of the noisy-PRM arm (--prm.noise.flip/jitter for every method), "
                        "or none")
    g.add_argument("--compare.output_dir", dest="compare_dir", default="runs/prpo-local-compare",
                   help="directory of the comparison (one run directory per method and seed)")
    add_train_flags(parser.add_argument_group("shared training settings (every method)"),
                    TrainConfig(**COMPARE_DEFAULTS), skip=("output_dir", "resume"))


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def parse_noise(text: str) -> tuple[float, float] | None:
    if text.strip().lower() in ("none", "off", "0", ""):
        return None
    try:
        flip, jitter = (float(x) for x in text.split(","))
    except ValueError:
        raise UsageError(f"--compare.prm_noise {text!r}: give FLIP,JITTER (e.g. 0.1,0.1) or none") from None
    return flip, jitter


def run_one(base: TrainConfig, name: str, seed: int, root: Path, log=print) -> list[dict]:
    from prpo_openrlhf.local.trainer import LocalTrainer

    out = root / slug(name) / f"seed{seed}"
    resume = (out / runlog.CKPT).exists()
    cfg = dataclasses.replace(base, **METHODS[name], seed=seed, output_dir=str(out), resume=resume)
    records = runlog.read_metrics(out)
    if any(r["step"] == base.num_steps and "eval/accuracy" in r for r in records):  # finished (or longer)
        saved = json.loads((out / "config.json").read_text())
        # Prompts and sampling seeds are functions of the step, so a longer run's first steps are a
        # shorter run unless the LR schedule stretches with the length (diff then names num_steps).
        changed = diff(saved, cfg)
        if changed:
            raise UsageError(f"{out} was trained with other settings ({', '.join(flag_of(c) for c in changed)}); "
                             "use another --compare.output_dir")
        log(f"{name} seed {seed}: finished earlier, reusing {out} (its first {base.num_steps} steps)")
        # Steps 0..num_steps-1 trained, then the evaluation logged at step num_steps.
        return [r for r in records
                if r["step"] < base.num_steps or (r["step"] == base.num_steps and "eval/accuracy" in r)]
    if not resume and out.exists():  # a run killed before its first checkpoint: start it again
        (out / runlog.METRICS).unlink(missing_ok=True)
    t0 = time.monotonic()
    records = LocalTrainer(cfg, log=log).train()
    log(f"{name} seed {seed}: {time.monotonic() - t0:.0f} s")
    return records


def summarize(records: list[dict], last: int = 10) -> dict:
    """Final held-out accuracies, the eval curve, and the mean length of the last training steps."""
    evals = [r for r in records if "eval/accuracy" in r]
    train = [r for r in records if "train/accuracy" in r]
    tail = train[-last:]
    return {"accuracy": evals[-1]["eval/accuracy"], "sampled_accuracy": evals[-1]["eval/sampled_accuracy"],
            "response_length": sum(r["train/response_length"] for r in tail) / max(len(tail), 1),
            "curve": [(r["step"], r["eval/accuracy"], r["eval/sampled_accuracy"]) for r in evals],
            "length_curve": [(r["step"], r["train/response_length"]) for r in train]}


def steps_to_reach(curve, target: float, column: int = 2) -> int | None:
    """First evaluated step after the start whose held-out accuracy (column 2: sampled, 1:
    greedy) is >= target; None if never. Step 0 is skipped: it is the same policy for all."""
    return next((c[0] for c in curve if c[0] > 0 and c[column] >= target - 1e-9), None)


def mean_sd(xs: list[float | None], scale: float = 100.0, digits: int = 1) -> str:
    """``xs`` (Nones left out) times ``scale``: the value, or mean ± sd over several; '-' for none."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{scale * xs[0]:.{digits}f}"
    return f"{scale * statistics.mean(xs):.{digits}f} ± {scale * statistics.stdev(xs):.{digits}f}"


def _reach(hits: list[int | None]) -> str:
    return ", ".join("never" if h is None else str(h) for h in hits)


def paired_with(per_seed: list[dict], reference: list[dict]) -> tuple[int, int]:
    """(above, below): evaluations after the start, over all seeds, where the method's sampled
    accuracy is above / below the reference's at the same step with the same seed. Both saw the
    same prompts and sampling seeds, so this pairs away most of the between-seed spread."""
    above = below = 0
    for run, ref in zip(per_seed, reference):
        ref_at = {step: sampled for step, _, sampled in ref["curve"]}
        for step, _, sampled in run["curve"]:
            if step > 0 and step in ref_at:
                above += sampled > ref_at[step] + 1e-9
                below += sampled < ref_at[step] - 1e-9
    return above, below


def pooled_sd(results: dict[str, list[dict]]) -> float | None:
    """sqrt of the mean over methods of the variance over seeds of the final sampled accuracy;
    None with one seed. Three seeds' sd scatters widely around it (a chi-square with 2 degrees
    of freedom), so a single method's sd is a poor guide to what a gap means."""
    variances = [statistics.variance([s["sampled_accuracy"] for s in v]) for v in results.values() if len(v) > 1]
    return math.sqrt(statistics.mean(variances)) if variances else None


def table(results: dict[str, list[dict]], start: dict | None, starts: list[dict] | None = None) -> str:
    """Markdown table; 'steps to GRPO' uses each seed's own GRPO run as the target, 'steps to
    +10' each seed's own start (``starts``, one per seed).

    The sampled accuracy (mean@k at the rollout temperature) leads: it is what RL on a small
    policy moves first; greedy pass@1 follows.
    """
    grpo = results.get("GRPO")
    head = ("| method | held-out acc. sampled, mean@k (%) | held-out acc. greedy (%) | mean response length "
            "(tokens, last 10 steps) | steps to +10 points sampled | steps to GRPO's final sampled acc. | "
            "evaluations above / below GRPO |\n"
            "|---|---|---|---|---|---|---|\n")
    rows = []
    if start:
        rows.append(f"| (start: warmed-up policy) | {100 * start['sampled_accuracy']:.1f} | "
                    f"{100 * start['accuracy']:.1f} | {start['response_length']:.1f} | | | |")
    for name, per_seed in results.items():
        reach, gain, paired = "-", "-", "-"
        if grpo:
            reach = _reach([steps_to_reach(s["curve"], g["sampled_accuracy"]) for s, g in zip(per_seed, grpo)])
            if name != "GRPO":
                paired = "%d / %d" % paired_with(per_seed, grpo)
        if starts:
            gain = _reach([steps_to_reach(s["curve"], st["sampled_accuracy"] + GAIN)
                           for s, st in zip(per_seed, starts)])
        rows.append(f"| {name} | {mean_sd([s['sampled_accuracy'] for s in per_seed])} | "
                    f"{mean_sd([s['accuracy'] for s in per_seed])} | "
                    f"{statistics.mean(s['response_length'] for s in per_seed):.1f} | {gain} | {reach} | {paired} |")
    text = head + "\n".join(rows) + "\n"
    sd = pooled_sd(results)
    if sd is not None:
        n = min(len(v) for v in results.values())
        text += (f"\nPooled sd over seeds of the final sampled accuracy: {100 * sd:.2f} points; the difference of "
                 f"two methods' means over {n} seeds then has a standard error of about "
                 f"{100 * sd * math.sqrt(2 / n):.2f} points.\n")
    return text


def plot(results: dict[str, list[dict]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, per_seed in results.items():
        curve = per_seed[0]["curve"]
        steps = [c[0] for c in curve]
        for col, ax in ((1, axes[0]), (2, axes[1])):
            ys = [statistics.mean(s["curve"][i][col] for s in per_seed) for i in range(len(curve))]
            ax.plot(steps, ys, marker="o", ms=3, label=name)
        ls = per_seed[0]["length_curve"]
        axes[2].plot([x[0] for x in ls], runlog._smooth([statistics.mean(s["length_curve"][i][1] for s in per_seed)
                                                         for i in range(len(ls))]), label=name)
    for ax, t in zip(axes, ("held-out accuracy (greedy)", "held-out accuracy (sampled)",
                            "mean response length (smoothed)")):
        ax.set_title(t)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_arm(base: TrainConfig, names: list[str], seeds: list[int], root: Path, log=print,
            reuse: dict | None = None) -> tuple[dict, list[dict]]:
    """Every method and seed in ``root``; ``reuse``: results to take for methods without process
    scores (the noisy arm reuses the clean arm's). Returns results and each seed's start."""
    results, starts = {}, []
    for name in names:
        if reuse is not None and not dataclasses.replace(base, **METHODS[name]).needs_process:
            results[name] = reuse[name]
            continue
        results[name] = []
        for seed in seeds:
            recs = run_one(base, name, seed, root, log)
            results[name].append(summarize(recs))
            if len(starts) < len(seeds):  # the start policy, evaluated with each seed's sampling seeds
                first = next(r for r in recs if "eval/accuracy" in r)
                first_train = next(r for r in recs if "train/accuracy" in r)
                starts.append({"accuracy": first["eval/accuracy"], "sampled_accuracy": first["eval/sampled_accuracy"],
                               "response_length": first_train["train/response_length"]})
    return results, starts


def run_compare(args: argparse.Namespace, log=print) -> dict:
    from prpo_openrlhf.local.flags import config_from_args

    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise UsageError(f"--compare.methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    noise = parse_noise(args.compare_noise)
    base = config_from_args(args)
    root = Path(args.compare_dir)
    root.mkdir(parents=True, exist_ok=True)
    arms = {"clean": run_arm(base, names, seeds, root, log)}
    if noise is not None and base.prm != "synthetic":
        log(f"--compare.prm_noise: skipped, the noise model is the exact verifier's (--prm synthetic), "
            f"not {base.prm}'s")
        noise = None
    if noise is not None:
        noisy = dataclasses.replace(base, prm_noise_flip=noise[0], prm_noise_jitter=noise[1])
        arms["noisy"] = run_arm(noisy, names, seeds, root / "noisy-prm", log, reuse=arms["clean"][0])
    budget = (f"{base.num_steps} steps x {base.prompts_per_step} prompts x {base.n_samples_per_prompt} rollouts, "
              f"--local.n_ops {base.n_ops}, seeds {seeds}, {base.eval_problems} held-out problems "
              f"(greedy and mean@{base.eval_samples}); mean ± sd over seeds")
    text, out = f"# prpo-local compare\n\n{budget}\n", {"budget": budget, "config": dataclasses.asdict(base)}
    for arm, (results, starts) in arms.items():
        start = {k: statistics.mean(s[k] for s in starts) for k in starts[0]} if starts else None
        title = ("exact process verifier" if arm == "clean" else
                 f"noisy PRM: --prm.noise.flip {noise[0]} --prm.noise.jitter {noise[1]} (methods without "
                 "process scores: the clean runs)")
        text += f"\n## {title}\n\n{table(results, start, starts)}"
        png = root / ("compare.png" if arm == "clean" else "compare_noisy.png")
        plot(results, png, f"prpo-local compare, {title}")
        out[arm] = {"start": start, "starts": starts, "results": results}
    (root / "compare.md").write_text(text)
    (root / "compare.json").write_text(json.dumps(out, indent=1))
    log(f"\n{text}\nwrote {root / 'compare.md'} and the figures")
    return {arm: results for arm, (results, _) in arms.items()}
