"""Grader throughput and worst latency: MATH500 answers boxed back into responses, with
adversarial answers mixed in.

    python benchmarks/bench_grader.py [--workers 2 --timeout_s 5 --adversarial 10]

Five batches, each on a freshly started and warmed pool (so that no batch profits from the
parse caches another one filled): the 500 clean answers; MATH500's 500 reference solutions
(whole worked solutions, graded against their answers); the clean answers with
``--adversarial`` hostile responses inserted, taken in turn from ``HOSTILE`` (exponent towers,
huge factorials, 100k-character and deeply nested answers, unbalanced and empty ones; from the
11th on, text that is hostile around the answer: thousands of unclosed ``\\[``, a final answer
of 4000 boxes), graded as ``grade_batch`` does by default, with the screen that settles
answers SymPy cannot afford (``_screen``) by string equality; the mixed batch with the screen
off, so that each hostile answer holds a worker until its budget ends it; and the same again
with the workers' own SIGALRM stop off too, so that every hang is ended by the parent killing
the worker. For each: answers/s (wall), the workers' CPU seconds (live ones from /proc, killed ones from
RUSAGE_CHILDREN) turned into answers/s on ``--workers`` fully available cores, which reads the
figure apart from other load on a shared machine, and the worst latency from hand-over to
verdict. A hostile answer that hangs holds one worker for its whole budget (stopped by the
worker's SIGALRM a little earlier, or killed at the budget); the wall figure pays that.
Target: >= 200 answers/s on 2 cores, no answer later than its budget + 1 s.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import time
from pathlib import Path

from prpo_openrlhf.algorithms import rewards

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = [
    "\\boxed{9^{9^{9^{9^{9}}}}}",
    "\\boxed{(10^{10})!}",
    "\\boxed{10^{10^{9}}}",
    "\\boxed{\\binom{10^{9}}{10^{7}}}",
    "x" * 100_000 + "\\boxed{7}",
    "\\boxed{" + "1" * 100_000 + "}",
    "\\boxed{" + "{" * 3000 + "7" + "}" * 3000 + "}",
    "\\boxed{\\frac{1}{2",
    "",
    "{" * 50_000,
    # Hostile around the answer: math-verify's regexes are quadratic in unclosed "\[", and a
    # long run of joined boxes is one final answer of thousands of elements.
    "\\[" * 20_000 + "\\boxed{7}",
    "\\boxed{1}\\boxed{2}" * 2_000,
]


def load_math500() -> list[dict]:
    for path in (ROOT / "data" / "math500.jsonl", Path("/work/shared/data/math500.jsonl")):
        if path.exists():
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    raise SystemExit("math500.jsonl not found in data/ or /work/shared/data/")


def _worker_cpu() -> dict[int, float]:
    """pid -> user + system CPU seconds of each live grader worker (Linux /proc)."""
    pool, out = rewards._POOL, {}
    for w in list(pool._workers) if pool else []:
        try:
            fields = Path(f"/proc/{w.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[w.proc.pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return out


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # workers killed and reaped so far
    return usage.ru_utime + usage.ru_stime


def fresh_pool(workers: int) -> float:
    """Stop the pool and start a new, warm one; seconds it took."""
    t0 = time.monotonic()
    rewards.close()
    rewards.start_pool(workers)
    rewards.grade_batch(["\\boxed{1}"] * workers, ["1"] * workers, 60.0, num_workers=workers)
    return time.monotonic() - t0


def run(label, responses, references, timeout_s, workers, soft=True, screen=True):
    """Grade one batch on a fresh pool and print its figures; CPU counts live and killed workers."""
    fresh_pool(workers)
    before, dead0, replaced0 = _worker_cpu(), _children_cpu(), rewards._POOL.replaced
    t0 = time.monotonic()
    got = rewards.grade_batch(responses, references, timeout_s, num_workers=workers, soft_timeouts=soft,
                              screen=screen)
    wall = time.monotonic() - t0
    after = _worker_cpu()
    reaped = [pid for pid in before if pid not in after]
    cpu = (sum(c - before.get(pid, 0.0) for pid, c in after.items())
           + _children_cpu() - dead0 - sum(before[pid] for pid in reaped))
    n = len(responses)
    print(f"{label:44s} {n:4d} answers {wall:6.2f} s  {n / wall:6.1f} answers/s wall | workers' CPU {cpu:6.2f} s "
          f"= {n / max(cpu, 1e-9) * workers:6.1f} answers/s on {workers} cores | worst latency "
          f"{got.max_latency_s:5.2f} s | correct {sum(got)} timeouts {got.timeouts} (killed {got.killed}) "
          f"no_boxed {got.no_boxed} screened {got.screened} replaced {rewards._POOL.replaced - replaced0}")
    return got


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout_s", type=float, default=5.0, help="budget per answer")
    ap.add_argument("--adversarial", type=int, default=10, help="hostile responses mixed in (12: every shape once)")
    args = ap.parse_args(argv)
    rows = load_math500()
    responses = [f"Let us work it out step by step.\n\nThe answer is $\\boxed{{{r['answer']}}}$." for r in rows]
    references = [r["answer"] for r in rows]
    rng = random.Random(0)
    mixed_r, mixed_ref = list(responses), list(references)
    for i in range(args.adversarial):
        at = rng.randrange(len(mixed_r) + 1)
        mixed_r.insert(at, HOSTILE[i % len(HOSTILE)])
        mixed_ref.insert(at, "7")

    print(f"{args.workers} workers started and warm in {fresh_pool(args.workers):.1f} s; budget {args.timeout_s} s "
          f"per answer; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    # Every reference matches itself: "correct" below 500 means answers ran out of budget.
    run("MATH500, clean", responses, references, args.timeout_s, args.workers)
    run("MATH500 reference solutions", [r["solution"] for r in rows], references, args.timeout_s, args.workers)
    hostile = f"MATH500 + {args.adversarial} hostile"
    mixed = [run(hostile, mixed_r, mixed_ref, args.timeout_s, args.workers),
             run(hostile + ", no screen", mixed_r, mixed_ref, args.timeout_s, args.workers, screen=False),
             run(hostile + ", no screen, kill only", mixed_r, mixed_ref, args.timeout_s, args.workers,
                 soft=False, screen=False)]
    worst = max(got.max_latency_s for got in mixed)
    print(f"worst latency {worst:.2f} s vs budget + 1 s = {args.timeout_s + 1:.2f} s: "
          f"{'within' if worst <= args.timeout_s + 1 else 'OVER'}")
    rewards.close()


if __name__ == "__main__":
    main()
