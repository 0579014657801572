"""``make compare``: the paper's Tables 2 and 4 on the embedded task, through the real pipeline.

    python -m prpo_openrlhf.local.embedded_compare [--compare.methods GRPO,PRPO,...]
        [--compare.seeds 42,1,2] [--compare.prms learned,exact] [--compare.dir runs/embedded-compare]

Every run is ``make run``'s: train_prpo_ray through one of the launch scripts of examples/scripts
at the embedded sizes (a private Ray head, DeepSpeed actors, a vLLM engine with the entropy
plugin, the PRM on its own actor), from the shipped policy, 60 steps; only the estimator, the
split or the normalisation differs (the ``EXTRA_ARGS`` of each method below), and the seed
(``--train.seed``: prompt order and vLLM's sampling). Two PRM arms: the shipped learned PRM
(vLLM pooling) and the exact verifier as the PRM (the oracle: what the method does when the
process scores are right), so that the learned PRM's errors can be told apart from the method's.
GRPO uses no process scores: one run serves both arms.

The start policy is evaluated once; each run's final policy on the same held-out problems
(greedy pass@1 and sampled mean@4, 512 problems). Runs live in ``<dir>/<arm>/<method>/seed<k>/``
and a finished one (its ``summary.json``) is reused, so an interrupted comparison continues
where it stopped. Writes ``compare.md`` (a table per arm and the paper's orderings, each
marked as seen or not here) and ``compare.json``, ``compare_<arm>.png``.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

from prpo_openrlhf.fileio import replace_atomically
from prpo_openrlhf.local import embedded

# name -> (launch script of examples/scripts, EXTRA_ARGS); GRPO first: the others are read against it.
PRPO_SCRIPT = "train_prpo_qwen2.5_math_1.5b.sh"
METHODS: dict[str, tuple[str, str]] = {
    "GRPO": ("train_grpo_qwen2.5_math_1.5b.sh", ""),
    "PRPO": (PRPO_SCRIPT, ""),
    "PRM-Avg": ("train_prm_avg_qwen2.5_math_1.5b.sh", ""),
    "PRM-Avg+PRPO": ("train_prm_avg_prpo_qwen2.5_math_1.5b.sh", ""),
    "PURE": ("train_pure_qwen2.5_math_1.5b.sh", ""),
    "process-only": (PRPO_SCRIPT, "--algo.advantage.estimator process_only"),
    "PRPO uniform split": (PRPO_SCRIPT, "--prpo.split uniform"),
    "PRPO random split": (PRPO_SCRIPT, "--prpo.split random"),
    "PRPO relative norm": (PRPO_SCRIPT, "--prpo.normalization relative"),
    # not in the default list, available by name:
    "REINFORCE++": ("train_reinforce_pp_qwen2.5_math_1.5b.sh", ""),
}
DEFAULT_METHODS = list(METHODS)[:9]
NO_PROCESS = {"GRPO", "REINFORCE++"}  # the same run under either PRM arm
TAIL = 10  # training steps averaged at the end of a run


class UsageError(ValueError):
    """A flag value that cannot run: the CLI prints it and exits 2."""


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def mean_sd(xs: list[float | None], scale: float = 100.0, digits: int = 1) -> str:
    """``xs`` (Nones left out) times ``scale``: the value, or mean ± sd over several; '-' for none."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{scale * xs[0]:.{digits}f}"
    return f"{scale * statistics.mean(xs):.{digits}f} ± {scale * statistics.stdev(xs):.{digits}f}"


def pooled_sd(results: dict[str, list[dict]]) -> float | None:
    """sqrt of the mean over methods of the variance over seeds of the final sampled accuracy;
    None with one seed. Three seeds' sd scatters widely around it (a chi-square with 2 degrees
    of freedom), so a single method's sd is a poor guide to what a gap means."""
    variances = [statistics.variance([s["sampled_accuracy"] for s in v]) for v in results.values() if len(v) > 1]
    return math.sqrt(statistics.mean(variances)) if variances else None


def run_dir(root: Path, method: str, arm: str, seed: int) -> Path:
    return root / ("no-prm" if method in NO_PROCESS else arm) / slug(method) / f"seed{seed}"


def finished_seeds(root: Path, method: str, arm: str) -> list[int]:
    """The seeds of ``method`` under ``arm`` whose run has finished (its ``summary.json``)."""
    where = run_dir(root, method, arm, 0).parent
    return sorted(int(d.name[4:]) for d in where.glob("seed*") if (d / "summary.json").is_file())


def run_one(root: Path, method: str, arm: str, seed: int, start: dict, settings: dict, log=print) -> dict:
    """One training through the real pipeline and the evaluation of its final policy; reused when
    ``summary.json`` exists with the same settings. Returns the run's summary."""
    out = run_dir(root, method, arm, seed)
    script, extra = METHODS[method]
    wanted = {"method": method, "prm": "none" if method in NO_PROCESS else arm, "seed": seed,
              "script": script, "extra_args": extra, **settings}
    done = out / "summary.json"
    if done.is_file():
        summary = json.loads(done.read_text())
        changed = sorted(k for k, v in wanted.items() if summary.get(k) != v)
        if changed:
            raise UsageError(f"{out} was run with other settings ({', '.join(changed)}); use another --compare.dir")
        log(f"[compare] {method}, {arm} PRM, seed {seed}: finished earlier, reusing {out}")
        return summary
    if out.exists():  # killed before it finished: the launch script would resume its checkpoints
        log(f"[compare] {out}: an unfinished run, started again")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.monotonic()
    env_paths = embedded.paths("learned" if method in NO_PROCESS else arm, settings["n_prompts"])
    extra_env = {"EMBEDDED_SCRIPT": script, "EXTRA_ARGS": f"--train.seed {seed} {extra}".strip()}
    saved, scalars = embedded.train(out, env_paths, extra_env, settings["n_prompts"] // embedded.ROLLOUT_BATCH)
    end = embedded.evaluate_apart(str(saved), settings["eval_problems"], out / "eval_end.json")
    summary = {**wanted, "end": end, "start": start, "seconds": round(time.monotonic() - t0, 1),
               "scalars": {tag: scalars[tag] for tag in embedded.CURVE_TAGS if tag in scalars}}
    replace_atomically(done, lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))  # whole, or not there
    log(f"[compare] {method}, {arm} PRM, seed {seed}: held-out sampled {end['sampled']['accuracy']:.1%}, "
        f"greedy {end['greedy']['accuracy']:.1%} ({summary['seconds']:.0f} s)")
    return summary


def row_of(summary: dict) -> dict:
    """The figures of one run that the table reads."""
    def tail(tag):
        points = summary["scalars"].get(tag, [])
        return statistics.mean(v for _, v in points[-TAIL:]) if points else None

    acc = [v for _, v in summary["scalars"].get("train/accuracy", [])]
    return {"sampled_accuracy": summary["end"]["sampled"]["accuracy"], "accuracy": summary["end"]["greedy"]["accuracy"],
            "response_length": summary["end"]["sampled"]["response_length"],
            "train_accuracy": tail("train/accuracy"), "prm_score": tail("train/prm_score_mean"),
            # peak of the 5-step moving average minus its last value: how far training fell back
            "train_drop": (max(_moving(acc)) - _moving(acc)[-1]) if len(acc) >= 5 else None}


def _moving(xs: list[float], w: int = 5) -> list[float]:
    return [statistics.mean(xs[i - w + 1:i + 1]) for i in range(w - 1, len(xs))]


def table(rows: dict[str, list[dict]], start: dict) -> str:
    head = ("| method | held-out sampled, mean@4 (%) | held-out greedy (%) | response length (tokens, held-out "
            "sampled) | training accuracy, last 10 steps (%) | mean PRM score, last 10 steps | fall from the "
            "peak of training accuracy (points) | seeds |\n|---|---|---|---|---|---|---|---|\n")
    lines = [f"| (start: the shipped policy) | {100 * start['sampled']['accuracy']:.1f} | "
             f"{100 * start['greedy']['accuracy']:.1f} | {start['sampled']['response_length']:.1f} | | | | |"]
    for name, per_seed in rows.items():
        lines.append(f"| {name} | {mean_sd([r['sampled_accuracy'] for r in per_seed])} | "
                     f"{mean_sd([r['accuracy'] for r in per_seed])} | "
                     f"{mean_sd([r['response_length'] for r in per_seed], 1.0)} | "
                     f"{mean_sd([r['train_accuracy'] for r in per_seed])} | "
                     f"{mean_sd([r['prm_score'] for r in per_seed], 1.0, 3)} | "
                     f"{mean_sd([r['train_drop'] for r in per_seed])} | {len(per_seed)} |")
    text = head + "\n".join(lines) + "\n"
    sd = pooled_sd(rows)
    if sd is not None:
        text += f"\nPooled sd over seeds of the final sampled accuracy: {100 * sd:.2f} points.\n"
    return text


def orderings(rows: dict[str, list[dict]]) -> list[str]:
    """The paper's orderings, each with what was measured here and whether it appears. A gap counts
    as seen only when it exceeds the noise of the held-out estimate (about 2 points on 512
    problems x 4 samples) and, with several seeds, two standard errors of the difference."""
    def mean(name, key="sampled_accuracy"):
        return statistics.mean(r[key] for r in rows[name]) if name in rows else None

    sd = pooled_sd(rows)

    def margin(a, b):  # two standard errors of the difference of two means over seeds, at least 2 points
        return max(0.02, 2 * sd * (1 / len(rows[a]) + 1 / len(rows[b])) ** 0.5) if sd is not None else 0.02

    out = ["A gap counts when it is larger than 2 points (sampled accuracy) and than two standard errors of the "
           "difference (the pooled sd, each side's seeds); the margin is given with each."]

    def above(a, b):
        ma, mb = mean(a), mean(b)
        if ma is None or mb is None:
            return f"{a} vs {b}: not run"
        m = margin(a, b)
        gap = f"{100 * (ma - mb):+.1f} points, margin {100 * m:.1f}"
        verdict = "seen" if ma - mb > m else ("reversed" if mb - ma > m else "not resolved (within the margin)")
        return f"{a} {100 * ma:.1f} vs {b} {100 * mb:.1f} ({gap}): {verdict}"

    out.append(f"PRPO > GRPO (paper: 64.4 vs 57.0 on MATH500): {above('PRPO', 'GRPO')}")
    out.append(f"entropy split > uniform split (paper: 64.4 vs 29.8): {above('PRPO', 'PRPO uniform split')}")
    out.append(f"uniform split > random split (paper: 29.8 vs 2.4): "
               f"{above('PRPO uniform split', 'PRPO random split')}")
    if "process-only" in rows and "GRPO" in rows:
        lp, lg = mean("process-only", "response_length"), mean("GRPO", "response_length")
        out.append(f"process-only collapses to short outputs: held-out response length {lp:.1f} vs GRPO's {lg:.1f} "
                   f"tokens: {'seen' if lp < 0.5 * lg else 'not seen'} (collapse: under half of GRPO's)")
    if "PRPO relative norm" in rows and "PRPO" in rows:
        dr, dp = mean("PRPO relative norm", "train_drop"), mean("PRPO", "train_drop")
        out.append(f"relative normalisation unstable: training accuracy falls {100 * dr:.1f} points from its peak "
                   f"(PRPO's prior normalisation: {100 * dp:.1f}): "
                   f"{'seen' if dr - dp > 0.10 else 'not seen'} (unstable: 10 points more than PRPO's); "
                   f"final {above('PRPO', 'PRPO relative norm')}")
    return out


def plot(rows_runs: dict[str, list[dict]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for name, runs in rows_runs.items():
        for ax, tag in zip(axes, ("train/accuracy", "train/response_length")):
            curves = [[v for _, v in r["scalars"].get(tag, [])] for r in runs]
            steps = min(len(c) for c in curves)
            if steps >= 5:
                ax.plot(range(5, steps + 1), _moving([statistics.mean(c[i] for c in curves) for i in range(steps)]),
                        label=name)
    for ax, t in zip(axes, ("training accuracy (5-step mean)", "response length (5-step mean)")):
        ax.set_title(t)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m prpo_openrlhf.local.embedded_compare",
                                description=__doc__.splitlines()[0])
    p.add_argument("--compare.methods", dest="methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated, from: {', '.join(METHODS)}")
    p.add_argument("--compare.seeds", dest="seeds", default="42,1,2", help="comma-separated --train.seed values")
    p.add_argument("--compare.prms", dest="prms", default="learned,exact",
                   help="PRM arms: learned (the shipped PRM, vLLM pooling), exact (the oracle)")
    p.add_argument("--compare.dir", dest="dir", default=str(embedded.ROOT / "runs" / "embedded-compare"))
    p.add_argument("--compare.eval_problems", dest="eval_problems", type=int, default=512)
    p.add_argument("--compare.prompts", dest="n_prompts", type=int, default=embedded.N_PROMPTS,
                   help=f"training prompts, one pass ({embedded.N_PROMPTS}: 60 steps of {embedded.ROLLOUT_BATCH})")
    p.add_argument("--compare.report", dest="report", action="store_true",
                   help="train nothing: write the tables from every finished run under --compare.dir (all seeds)")
    args = p.parse_args(argv)
    args.command = " ".join(sys.argv[1:] if argv is None else argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise UsageError(f"--compare.methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    args.prms = [a.strip() for a in args.prms.split(",") if a.strip()]
    if not args.prms or set(args.prms) - {"learned", "exact"}:
        raise UsageError(f"--compare.prms {','.join(args.prms)}: choose from learned, exact")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise UsageError(f"--compare.seeds {args.seeds!r}: comma-separated integers") from None
    if args.n_prompts < 5 * embedded.ROLLOUT_BATCH or args.n_prompts % embedded.ROLLOUT_BATCH:
        raise UsageError(f"--compare.prompts {args.n_prompts}: a multiple of {embedded.ROLLOUT_BATCH}, "
                         f"at least {5 * embedded.ROLLOUT_BATCH} (5 steps)")
    return args


def run_compare(args, log=print) -> dict:
    root = Path(args.dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    settings = {"eval_problems": args.eval_problems, "n_prompts": args.n_prompts}
    start_file = root / f"eval_start-{args.eval_problems}.json"
    if start_file.is_file():
        start = json.loads(start_file.read_text())
    else:
        log(f"[compare] held-out evaluation of the shipped policy ({args.eval_problems} problems)")
        start = embedded.evaluate_apart(embedded.paths("exact", args.n_prompts)["POLICY_MODEL"],
                                        args.eval_problems, start_file)
    todo = [(arm, m, s) for arm in args.prms for m in args.methods for s in args.seeds
            if not (m in NO_PROCESS and arm != args.prms[0])]
    if args.report:  # the tables from what is on disk: every finished seed, nothing trained
        todo = [(arm, m, s) for arm, m in dict.fromkeys((arm, m) for arm, m, _ in todo)
                for s in finished_seeds(root, m, arm)]
    runs: dict[str, dict[str, list[dict]]] = {arm: {} for arm in args.prms}
    failed = []
    for i, (arm, method, seed) in enumerate(todo, 1):
        log(f"[compare] run {i}/{len(todo)}: {method}, {arm} PRM, seed {seed}")
        try:
            runs[arm].setdefault(method, []).append(run_one(root, method, arm, seed, start, settings, log))
        except (RuntimeError, TimeoutError) as exc:  # one failed training does not stop the others
            where = run_dir(root, method, arm, seed)
            failed.append(f"{method}, {arm} PRM, seed {seed}")
            log(f"[compare] {failed[-1]} FAILED: {str(exc).splitlines()[0]} (see {where / 'train.log'}); going on, "
                "and the next call of this command runs it again")
    runs = {arm: {m: v for m, v in by_method.items() if v} for arm, by_method in runs.items()}
    for arm in args.prms[1:]:  # the runs without a PRM appear in every arm
        for m in args.methods:
            if m in NO_PROCESS and m in runs[args.prms[0]]:
                runs[arm] = {m: runs[args.prms[0]][m], **runs[arm]}
    text = (f"# The comparison on the real pipeline (train_prpo_ray), embedded task\n\n"
            f"From the shipped policy, {args.n_prompts // embedded.ROLLOUT_BATCH} steps of {embedded.ROLLOUT_BATCH} "
            f"prompts x 8 samples, seeds {'(every finished run)' if args.report else args.seeds}; held-out: "
            f"{args.eval_problems} problems, greedy pass@1 and "
            f"sampled mean@4 (temperature 1); mean ± sd over seeds.\n"
            f"Command: python -m prpo_openrlhf.local.embedded_compare {args.command}\n")
    if failed:
        text += f"\nNot in the tables (the training failed; run the command again): {'; '.join(failed)}.\n"
    out = {"start": start, "arms": {}, "failed": failed}
    for arm, by_method in runs.items():
        if not by_method:
            continue
        rows = {m: [row_of(s) for s in v] for m, v in by_method.items()}
        name = "learned PRM (shipped, vLLM pooling)" if arm == "learned" else "exact verifier as the PRM (oracle)"
        text += f"\n## {name}\n\n{table(rows, start)}\n" + "".join(f"- {line}\n" for line in orderings(rows))
        plot(by_method, root / f"compare_{arm}.png", f"train_prpo_ray on the embedded task, {name}")
        out["arms"][arm] = rows
    replace_atomically(root / "compare.md", lambda tmp: tmp.write_text(text))
    replace_atomically(root / "compare.json", lambda tmp: tmp.write_text(json.dumps(out, indent=1)))
    log(f"\n{text}\n[compare] wrote {root / 'compare.md'}, compare.json and the figures")
    return out


def main(argv=None) -> int:
    # SIGTERM (a scheduler, `kill`) unwinds like Ctrl-C, so the private Ray head is stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        args = _parse(argv)
        result = run_compare(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
