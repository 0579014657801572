"""Results JSON, markdown tables laid out like the paper's Tables 2 and 3, pass@k plot.

Table 2 (accuracy %): one row per model, columns MATH500 | AMC23 | AIME25 | AIME24 (then any
other benchmark), each headed by its metric (pass@1 for greedy decoding, mean@n otherwise).
Table 3 (pass@k %): per sampled benchmark (AIME24, AIME25, AMC23 first, as in the paper), one
row per model, columns pass@k for the requested k and their average. A value that cannot be
computed (k above the number of samples) is shown as "–" with the reason under the table.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from prpo_openrlhf.fileio import replace_atomically

from .metrics import benchmark_pass_at_k, mean_at_n

DISPLAY = {"math500": "MATH500", "amc23": "AMC23", "aime25": "AIME25", "aime24": "AIME24"}
TABLE2_ORDER = ("math500", "amc23", "aime25", "aime24")
TABLE3_ORDER = ("aime24", "aime25", "amc23")
MISSING = "–"

Labelled = Sequence[tuple[str, dict]]  # (row label, results dict) per model


def _curve_ks(n: int, pass_k: Sequence[int]) -> list[int]:
    """k values drawn in the plot: powers of two up to n plus the requested k that fit."""
    ks = {1} | {k for k in pass_k if k <= n}
    k = 2
    while k <= n:
        ks.add(k)
        k *= 2
    return sorted(ks)


def benchmark_result(*, file: str, problems, verdicts: dict, generations: dict, n: int,
                     greedy: bool, pass_k: Sequence[int], settings: dict,
                     skipped_rows: int, grading: dict, name: str) -> dict:
    """Everything reported for one benchmark; ``verdicts``/``generations`` keyed by sample."""
    counts = [sum(verdicts[(name, p.index, s)] for s in range(n)) for p in problems]
    sizes = [n] * len(problems)
    recs = [generations[(name, p.index, s)] for p in problems for s in range(n)]
    curve = benchmark_pass_at_k(sizes, counts, _curve_ks(n, pass_k))
    return {
        "file": file, "n_problems": len(problems), "n_samples": n,
        "metric": "pass@1" if greedy else f"mean@{n}",
        "accuracy": mean_at_n(counts, n),
        "pass_at_k": {str(k): v for k, v in benchmark_pass_at_k(sizes, counts, pass_k).items()},
        "curve": {str(k): v["value"] for k, v in curve.items()},
        "settings": settings, "skipped_rows": skipped_rows, "grading": grading,
        "mean_response_tokens": sum(r["num_tokens"] for r in recs) / len(recs),
        "truncated_fraction": sum(r["finish_reason"] == "length" for r in recs) / len(recs),
        "per_problem": [{"index": p.index, "id": p.id, "line": p.line, "n": n, "correct": c}
                        for p, c in zip(problems, counts)],
    }


def write_json(path: str | os.PathLike, results: dict) -> None:
    text = json.dumps(results, indent=2) + "\n"
    replace_atomically(path, lambda tmp: tmp.write_text(text))


def _pct(x: float | None) -> str:
    return MISSING if x is None else f"{100 * x:.2f}"


def _ordered(names, order) -> list[str]:
    names = list(dict.fromkeys(names))
    return [b for b in order if b in names] + [b for b in names if b not in order]


def table2(rows: Labelled) -> str:
    """Accuracy (%) per model and benchmark, in the paper's column order."""
    benches = _ordered([b for _, r in rows for b in r["benchmarks"]], TABLE2_ORDER)
    head = ["model"]
    for b in benches:
        metrics = {r["benchmarks"][b]["metric"] for _, r in rows if b in r["benchmarks"]}
        head.append(f"{DISPLAY.get(b, b)} {'/'.join(sorted(metrics))}")
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for label, r in rows:
        cells = [label] + [_pct(r["benchmarks"][b]["accuracy"]) if b in r["benchmarks"]
                           else MISSING for b in benches]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table3(rows: Labelled, pass_k: Sequence[int]) -> tuple[str, list[str]]:
    """pass@k (%) per sampled benchmark and model, and the notes explaining missing cells."""
    sampled = [b for _, r in rows for b, v in r["benchmarks"].items()
               if not v["settings"]["greedy"]]
    benches = _ordered(sampled, TABLE3_ORDER)
    head = ["benchmark", "model"] + [f"pass@{k}" for k in pass_k] + ["average"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    notes: list[str] = []
    for b in benches:
        for label, r in rows:
            if b not in r["benchmarks"]:
                continue
            pk = r["benchmarks"][b]["pass_at_k"]
            vals = [pk.get(str(k), {}).get("value") for k in pass_k]
            for k in pass_k:
                reason = pk.get(str(k), {}).get("reason")
                if reason:
                    notes.append(f"{DISPLAY.get(b, b)}, {label}, pass@{k}: {reason}")
            avg = None if None in vals or not vals else sum(vals) / len(vals)
            cells = [DISPLAY.get(b, b), label] + [_pct(v) for v in vals] + [_pct(avg)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), notes


def markdown(rows: Labelled, pass_k: Sequence[int]) -> str:
    """The full report: Table 2, Table 3 with notes, and the protocol of each run."""
    t3, notes = table3(rows, pass_k)
    parts = ["## Accuracy (%), laid out like Table 2 of the paper", "", table2(rows), ""]
    if t3.count("\n") > 1:
        parts += ["## pass@k (%), laid out like Table 3 of the paper", "", t3, ""]
        if notes:
            parts += ["Missing cells (never estimated from fewer samples than k):", ""]
            parts += [f"- {n}" for n in notes] + [""]
            parts += ["A rerun with a larger `--n_samples` in the same `--output_dir` keeps "
                      "every existing sample and generates only the new ones.", ""]
    parts += ["## Protocol", ""]
    for label, r in rows:
        for b, v in r["benchmarks"].items():
            s = v["settings"]
            dec = "greedy" if s["greedy"] else (f"T={s['temperature']}, top-p={s['top_p']}, "
                                                f"seed={s['seed']}")
            parts.append(f"- {label} / {DISPLAY.get(b, b)}: {v['n_problems']} problems, "
                         f"{v['n_samples']} sample(s) each, {dec}, max_new_tokens="
                         f"{s['max_new_tokens']}, template={s['prompt_template']}, backend="
                         f"{s['backend']}; truncated {100 * v['truncated_fraction']:.1f}%")
    return "\n".join(parts) + "\n"


def plot_pass_at_k(rows: Labelled, path: str | os.PathLike) -> bool:
    """PNG of pass@k against k, one panel per sampled benchmark; False if none to draw."""
    benches = _ordered([b for _, r in rows for b, v in r["benchmarks"].items()
                        if len(v["curve"]) > 1], TABLE3_ORDER)
    if not benches:
        return False
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on clusters and CI
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(benches), figsize=(4.2 * len(benches), 3.6), squeeze=False)
    for ax, b in zip(axes[0], benches):
        ks: set[int] = set()
        for label, r in rows:
            curve = r["benchmarks"].get(b, {}).get("curve", {})
            pts = sorted((int(k), v) for k, v in curve.items() if v is not None)
            if pts:
                ax.plot([k for k, _ in pts], [100 * v for _, v in pts], marker="o", label=label)
                ks.update(k for k, _ in pts)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(ks), [str(k) for k in sorted(ks)])
        ax.set_ylim(-2, 102)
        ax.set_xlabel("k")
        ax.set_ylabel("pass@k (%)")
        ax.set_title(DISPLAY.get(b, b))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
