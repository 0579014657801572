"""pass@k: hand-worked cases, a brute-force reference, exactness for large n."""
from fractions import Fraction
from itertools import combinations

import pytest

from prpo_openrlhf.eval.metrics import benchmark_pass_at_k, mean_at_n, pass_at_k


@pytest.mark.parametrize("n, c, k, expected", [
    (1, 1, 1, 1.0),
    (1, 0, 1, 0.0),
    (2, 1, 1, 0.5),
    (4, 1, 2, 0.5),            # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (4, 2, 2, 5 / 6),          # 1 - C(2,2)/C(4,2) = 1 - 1/6
    (5, 2, 3, 0.9),            # 1 - C(3,3)/C(5,3) = 1 - 1/10
    (10, 3, 1, 0.3),           # pass@1 is the fraction correct
    (10, 3, 8, 1.0),           # n - c = 7 < 8: every 8-subset holds a correct sample
    (10, 0, 5, 0.0),
    (128, 1, 64, 0.5),         # one correct sample is in half of the 64-subsets
    (32, 32, 32, 1.0),
])
def test_hand_worked(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-15)


def test_matches_brute_force_enumeration():
    # Probability over all k-subsets of n samples (c correct) that one is correct.
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                subsets = list(combinations(range(n), k))
                hit = sum(any(i < c for i in s) for s in subsets)
                assert pass_at_k(n, c, k) == pytest.approx(hit / len(subsets), abs=1e-15)


def test_exact_for_large_n():
    # Exact rational value vs the float: no cancellation even when the answer is tiny.
    n, c, k = 1000, 1, 3
    exact = 1 - Fraction(999 * 998 * 997, 1000 * 999 * 998)
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-14)
    assert pass_at_k(1024, 1, 1) == pytest.approx(1 / 1024, rel=1e-14)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="needs at least 8 samples"):
        pass_at_k(4, 1, 8)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 0)
    with pytest.raises(TypeError):
        pass_at_k(4.0, 1, 1)


def test_benchmark_average_and_missing_k():
    # Two problems with n = 4: c = 1 and c = 4.
    out = benchmark_pass_at_k([4, 4], [1, 4], [1, 2, 4, 8])
    assert out[1]["value"] == pytest.approx((0.25 + 1.0) / 2)
    assert out[2]["value"] == pytest.approx((0.5 + 1.0) / 2)
    assert out[4]["value"] == pytest.approx(1.0)
    assert out[8]["value"] is None and "n >= 8" in out[8]["reason"] and "n = 4" in out[8]["reason"]
    assert mean_at_n([1, 4], 4) == pytest.approx(0.625)
