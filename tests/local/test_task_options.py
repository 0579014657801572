"""Task length (``prpo-local warmup --warmup.n_ops``): the flag, the bounds, the recipe's key."""
import random

import pytest

from prpo_openrlhf.local.__main__ import build_parser, warmup_config
from prpo_openrlhf.local.task import ArithmeticTask, TaskConfig, max_solution_bytes, parse_n_ops, sample_problem
from prpo_openrlhf.local.warmup import WarmupConfig


def _warmup(*flags) -> WarmupConfig:
    return warmup_config(build_parser().parse_args(["warmup", *flags]))


def test_n_ops_flag_parses_into_the_task_and_the_warmup_key():
    assert _warmup() == WarmupConfig()  # the defaults are the shipped recipe
    assert _warmup("--warmup.n_ops", "4, 3").task == TaskConfig(n_ops=(3, 4))
    assert _warmup("--warmup.n_ops", "3").task.n_ops == (3,)
    # Every cache key that depends on the task moves with it.
    keys = {_warmup("--warmup.n_ops", n).key() for n in ("2,3", "3", "3,4", "4")}
    assert len(keys) == 4


@pytest.mark.parametrize("n_ops", [(2,), (3,), (4,), (5,), (3, 4)])
def test_problems_have_exactly_the_asked_operations(n_ops):
    task = ArithmeticTask(TaskConfig(n_ops=n_ops), seed=0, n_heldout=64)
    problems = task.heldout + task.train_batch(200, stream="rl-0")
    assert {len(p.steps) for p in problems} == set(n_ops)
    assert all(sum(p.expression.count(op) for op in "+-*") == len(p.steps) for p in problems)


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_max_solution_bytes_bounds_every_solution_and_is_reached(n):
    cfg = TaskConfig(n_ops=(n,))
    rng = random.Random(0)
    lengths = [len(sample_problem(rng, cfg).solution().encode()) for _ in range(3000)]
    assert max_solution_bytes(cfg) == 8 * n + 9
    assert max(lengths) == max_solution_bytes(cfg)  # the bound is tight, not just safe


@pytest.mark.parametrize("bad, message", [("1", r"must lie in \[2, 8\]"), ("9", r"must lie in \[2, 8\]"),
                                          ("3,", "comma-separated integers"), ("three", "comma-separated")])
def test_bad_n_ops_is_refused_naming_the_flag(bad, message, capsys):
    with pytest.raises(ValueError, match=message):
        parse_n_ops(bad)
    with pytest.raises(SystemExit, match=f"--warmup.n_ops '{bad}'.*{message}"):
        _warmup("--warmup.n_ops", bad)
