"""Task length (--local.n_ops) and simulated PRM errors (--prm.noise.*): flags, bounds, noise model."""
import math
import random

import pytest

from prpo_openrlhf.local import runlog
from prpo_openrlhf.local.config import TrainConfig, UsageError, check
from prpo_openrlhf.local.task import ArithmeticTask, TaskConfig, max_solution_bytes, parse_n_ops, sample_problem
from prpo_openrlhf.local.verifier import add_score_noise
from tests.local.conftest import TINY

# ---- --local.n_ops -----------------------------------------------------------------------


def _cli_config(*flags):
    from prpo_openrlhf.local.__main__ import build_parser
    from prpo_openrlhf.local.flags import config_from_args

    return config_from_args(build_parser().parse_args(["train", *flags]))


def test_n_ops_flag_parses_into_the_task_and_the_warmup_key():
    from prpo_openrlhf.local.trainer import warmup_config

    default = _cli_config()
    assert default.n_ops == "3,4" and default.task == TaskConfig(n_ops=(3, 4))
    cfg = _cli_config("--local.n_ops", "4, 3", "--rollout.max_new_tokens", "48")
    assert cfg.n_ops == "3,4" and cfg.task.n_ops == (3, 4)
    assert _cli_config("--local.n_ops", "3").task.n_ops == (3,)
    assert warmup_config(cfg).task == cfg.task
    # Every cache key that depends on the task moves with it; the default's is the shipped recipe's.
    keys = {warmup_config(TrainConfig(n_ops=n)).key() for n in ("2,3", "3", "3,4", "4")}
    assert len(keys) == 4
    assert warmup_config(default).key() == warmup_config(TrainConfig()).key()
    from prpo_openrlhf.local.warmup import WarmupConfig
    assert warmup_config(default).key() == WarmupConfig().key()


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
def test_bad_n_ops_is_refused_naming_the_flag(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_n_ops(bad)
    with pytest.raises(UsageError, match=f"--local.n_ops '{bad}': .*{message}"):
        check(TrainConfig(n_ops=bad))


def test_too_small_max_new_tokens_is_refused_naming_both_flags(capsys):
    from prpo_openrlhf.local.__main__ import main

    check(TrainConfig(n_ops="4"))  # 41 bytes + EOS fit the default 48
    with pytest.raises(UsageError, match=r"--rollout.max_new_tokens 48 is too small for --local.n_ops 5: .*"
                                         r"49 tokens plus EOS; use --rollout.max_new_tokens 50 or more"):
        check(TrainConfig(n_ops="5"))
    check(TrainConfig(n_ops="5", max_new_tokens=50))
    with pytest.raises(UsageError, match="--rollout.max_new_tokens 41 is too small for --local.n_ops 3,4"):
        check(TrainConfig(max_new_tokens=41))  # the default task: 41 bytes + EOS
    check(TrainConfig(max_new_tokens=42))
    check(TrainConfig(max_new_tokens=16, model="some/hf-model"))  # prose in its own tokens: not checked
    assert main(["train", "--local.n_ops", "3,5", "--local.num_steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "--rollout.max_new_tokens 48" in err and "--local.n_ops 3,5" in err


# ---- --prm.noise.* ------------------------------------------------------------------------

SCORES = [[1.0, 1.0, 0.0], [0.0], [], [1.0, 0.5, 0.25, 0.0]]


def _noise(scores=SCORES, flip=0.0, jitter=0.0, seed=0, step=0):
    return add_score_noise(scores, flip=flip, jitter=jitter, seed=seed, step=step)


def test_zero_noise_leaves_scores_unchanged():
    noisy, stats = _noise()
    assert noisy == SCORES and noisy is not SCORES
    assert stats["flipped"] == 0.0 and stats["jitter_abs"] == 0.0


def test_flip_one_inverts_every_score():
    noisy, stats = _noise(flip=1.0)
    assert noisy == [[1 - s for s in row] for row in SCORES]
    assert stats["flipped"] == 1.0 and stats["jitter_abs"] == 0.0


def test_flip_rate_is_p_within_three_sd():
    p, rows = 0.3, [[1.0] * 50 for _ in range(400)]
    noisy, stats = _noise(rows, flip=p, step=5)
    n = 50 * 400
    observed = sum(s == 0.0 for row in noisy for s in row) / n
    assert observed == stats["flipped"]
    assert abs(observed - p) < 3 * math.sqrt(p * (1 - p) / n)


def test_jitter_stays_in_range_and_is_reported():
    rows = [[random.Random(i).choice([0.0, 1.0, 0.5]) for _ in range(20)] for i in range(100)]
    noisy, stats = _noise(rows, flip=0.2, jitter=0.3, step=1)
    flat = [s for row in noisy for s in row]
    assert all(0.0 <= s <= 1.0 for s in flat) and [len(r) for r in noisy] == [len(r) for r in rows]
    assert 0.05 < stats["jitter_abs"] < 0.3  # clipping at 0 and 1 removes part of sigma * E|z| = 0.24
    assert stats["mean"] == pytest.approx(sum(flat) / len(flat))


def test_noise_is_a_function_of_seed_step_and_row():
    a, _ = _noise(flip=0.5, jitter=0.2, seed=1, step=3)
    assert _noise(flip=0.5, jitter=0.2, seed=1, step=3)[0] == a
    assert _noise(flip=0.5, jitter=0.2, seed=2, step=3)[0] != a
    assert _noise(flip=0.5, jitter=0.2, seed=1, step=4)[0] != a
    # A row's noise does not depend on the other rows (a resumed or regrouped batch agrees).
    assert _noise(SCORES[:1], flip=0.5, jitter=0.2, seed=1, step=3)[0] == a[:1]
    # Common random numbers: more flips flip a superset of the segments.
    few, _ = _noise([[1.0] * 200], flip=0.1, seed=1)
    many, _ = _noise([[1.0] * 200], flip=0.4, seed=1)
    assert all(m == 0.0 for f, m in zip(few[0], many[0]) if f == 0.0) and sum(many[0]) < sum(few[0])


def test_noise_flags_are_checked():
    cfg = _cli_config("--prm.noise.flip", "0.2", "--prm.noise.jitter", "0.1", "--prm.noise.seed", "7")
    assert (cfg.prm_noise_flip, cfg.prm_noise_jitter, cfg.prm_noise_seed, cfg.prm_noise) == (0.2, 0.1, 7, True)
    assert not TrainConfig().prm_noise
    with pytest.raises(UsageError, match=r"--prm.noise.flip 1.5 must lie in \[0, 1\]"):
        check(TrainConfig(prm_noise_flip=1.5))
    with pytest.raises(UsageError, match="--prm.noise.jitter -0.1 must be >= 0"):
        check(TrainConfig(prm_noise_jitter=-0.1))
    with pytest.raises(UsageError, match="need --prm synthetic"):
        check(TrainConfig(prm_noise_flip=0.1, prm="some/prm"))


def test_noisy_run_trains_and_logs_the_noise(cache_dir, tmp_path):
    from prpo_openrlhf.local.trainer import LocalTrainer

    cfg = TrainConfig(**{**TINY, "output_dir": str(tmp_path / "run"), "num_steps": 2, "eval_steps": 0,
                         "eval_problems": 4, "eval_samples": 1, "prm_noise_flip": 0.25, "prm_noise_jitter": 0.1})
    LocalTrainer(cfg, log=lambda *_: None).train()
    steps = [r for r in runlog.read_metrics(tmp_path / "run") if "train/accuracy" in r]
    assert [r["step"] for r in steps] == [0, 1]
    for r in steps:
        assert 0.0 < r["train/prm_noise_flipped"] < 1.0 and 0.0 < r["train/prm_noise_jitter"] < 0.1
        assert 0.0 <= r["train/process_score_noisy"] <= 1.0 and 0.0 <= r["train/process_score"] <= 1.0
        assert math.isfinite(r["train/loss"])
