"""The comparison's summary arithmetic on hand-made results: the pairing with GRPO, the pooled
sd over seeds and the table lines built from them."""
import math

import pytest

from prpo_openrlhf.local.compare import paired_with, pooled_sd, table


def _run(final: float, curve: list[tuple[int, float]]) -> dict:
    return {"accuracy": 0.9, "sampled_accuracy": final, "response_length": 30.0,
            "curve": [(step, 0.9, sampled) for step, sampled in curve], "length_curve": [(0, 30.0)]}


def test_paired_with_counts_same_step_same_seed_and_skips_the_start_and_ties():
    method = [_run(0.7, [(0, 0.5), (10, 0.7), (20, 0.6)]), _run(0.8, [(0, 0.4), (10, 0.8), (20, 0.8)])]
    grpo = [_run(0.6, [(0, 0.5), (10, 0.6), (20, 0.6)]), _run(0.9, [(0, 0.9), (10, 0.7), (20, 0.9)])]
    # seed 0: above at 10, level at 20; seed 1: above at 10, below at 20; step 0 is never counted
    assert paired_with(method, grpo) == (2, 1)
    # a shorter run is paired only on the steps both have
    assert paired_with([_run(0.7, [(0, 0.5), (10, 0.7)])], [grpo[0]]) == (1, 0)


def test_pooled_sd_is_the_root_mean_variance_and_none_with_one_seed():
    results = {"A": [_run(0.80, []), _run(0.82, [])], "B": [_run(0.70, []), _run(0.74, [])]}
    assert pooled_sd(results) == pytest.approx(math.sqrt((0.0002 + 0.0008) / 2))
    assert pooled_sd({"A": [_run(0.8, [])]}) is None


def test_table_has_the_paired_column_and_the_pooled_sd_line():
    grpo = [_run(0.70, [(0, 0.5), (10, 0.70)]), _run(0.74, [(0, 0.5), (10, 0.74)])]
    prpo = [_run(0.80, [(0, 0.5), (10, 0.80)]), _run(0.82, [(0, 0.5), (10, 0.82)])]
    text = table({"GRPO": grpo, "PRPO": prpo}, None)
    assert "| PRPO | 81.0 ± 1.4 |" in text and text.splitlines()[3].endswith("| 2 / 0 |")
    assert text.splitlines()[2].endswith("| - |")  # GRPO is not paired with itself
    sd = math.sqrt((0.0008 + 0.0002) / 2)
    assert f"Pooled sd over seeds of the final sampled accuracy: {100 * sd:.2f} points" in text
    assert f"standard error of about {100 * sd:.2f} points" in text  # sd * sqrt(2 / 2)
    assert "Pooled sd" not in table({"GRPO": grpo[:1], "PRPO": prpo[:1]}, None)
