"""pass@k and mean@n over graded samples.

pass@k is the unbiased estimator of Chen et al. (2021, "Evaluating Large Language Models
Trained on Code", eq. 1): with ``n`` samples of a problem of which ``c`` are correct,
``pass@k = 1 - C(n - c, k) / C(n, k)``, averaged over problems. It needs ``n >= k``; a
benchmark with fewer samples gets no value for that ``k`` (reported as missing, with why).
"""
from __future__ import annotations

from math import comb
from typing import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of ``k`` samples drawn without replacement from ``n``
    (``c`` of them correct) is correct: ``1 - C(n-c, k) / C(n, k)``.

    Python integers make both binomials exact and ``int / int`` rounds the ratio once, so the
    result is correct to the last bit for any ``n`` (no cancellation, no overflow).
    """
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise TypeError(f"pass_at_k needs integers, got n={n!r}, c={c!r}, k={k!r}")
    if k < 1 or c < 0 or c > n:
        raise ValueError(f"pass_at_k needs k >= 1 and 0 <= c <= n; got n={n}, c={c}, k={k}")
    if n < k:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem; got n={n}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def mean_at_n(correct_counts: Sequence[int], n: int) -> float:
    """mean@n: the fraction of correct samples, averaged over problems (each has ``n``)."""
    if not correct_counts:
        raise ValueError("mean@n of an empty benchmark")
    return sum(c / n for c in correct_counts) / len(correct_counts)


def benchmark_pass_at_k(samples_per_problem: Sequence[int], correct_counts: Sequence[int],
                        ks: Sequence[int]) -> dict[int, dict]:
    """``{k: {"value": float | None, "reason": str | None}}`` for one benchmark.

    ``samples_per_problem[i]`` and ``correct_counts[i]`` are ``n_i`` and ``c_i`` of problem
    ``i``. A ``k`` above the smallest ``n_i`` gets ``value=None`` and the reason.
    """
    if len(samples_per_problem) != len(correct_counts) or not correct_counts:
        raise ValueError("one (n, c) pair per problem, at least one problem")
    n_min = min(samples_per_problem)
    out: dict[int, dict] = {}
    for k in ks:
        if k > n_min:
            out[k] = {"value": None,
                      "reason": f"needs n >= {k} samples per problem; this run has n = {n_min}"}
            continue
        vals = [pass_at_k(n, c, k) for n, c in zip(samples_per_problem, correct_counts)]
        out[k] = {"value": sum(vals) / len(vals), "reason": None}
    return out
