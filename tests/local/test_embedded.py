"""The pieces of `make run` around the training: its prompts, its private Ray head, its held-out
evaluation. The training itself runs through the launch script in tests/trainer/test_learning.py."""
import json
import subprocess

import pytest
import requests

from prpo_openrlhf.local.cluster import private_ray_head
from prpo_openrlhf.local.embedded import _task, write_prompts


def test_prompts_are_training_problems_never_held_out_ones(tmp_path):
    path = write_prompts(tmp_path / "p.jsonl", 64)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 64 and all(set(r) == {"problem", "answer"} for r in rows)
    task = _task()
    heldout = {p.text for p in task.heldout}
    assert not heldout & {r["problem"] for r in rows}
    assert [r["problem"] for r in rows] == [p.text for p in task.train_batch(64, "rl-prompts")]
    assert write_prompts(path, 8) == path and len(path.read_text().splitlines()) == 64  # written once


def _raylets() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "raylet"], capture_output=True, text=True).stdout
    return {int(pid) for pid in out.split()}


@pytest.mark.slow
def test_private_head_answers_on_its_own_ports_and_stops_alone(tmp_path):
    """Two heads at once (one standing for another user's Ray): stopping ours leaves theirs up."""
    before = _raylets()
    with private_ray_head(num_gpus=2, num_cpus=2, log_file=tmp_path / "other.log") as other:
        with private_ray_head(num_gpus=4, num_cpus=2, log_file=tmp_path / "ours.log") as ours:
            assert ours != other
            both = _raylets() - before
            assert len(both) == 2
        assert requests.get(f"{other}/api/version", timeout=10).ok
        assert len(_raylets() - before) == 1
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{ours}/api/version", timeout=5)
    assert _raylets() - before == set()


def test_heldout_evaluation_gives_the_same_figures_on_a_loaded_machine():
    # The start policy's evaluation is the reference of every run's gain: its sampled figure must
    # not move with the machine's load (an engine core in a process of its own made it do so).
    import sys

    from prpo_openrlhf.local.embedded import evaluate
    from prpo_openrlhf.local.warmup import WarmupConfig, shipped_policy

    policy, _ = shipped_policy(WarmupConfig())
    quiet = evaluate(policy, 64)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        loaded = evaluate(policy, 64)
    finally:
        for b in burners:
            b.kill()
    assert quiet["sampled"]["samples_per_problem"] == 4 and 0.3 < quiet["sampled"]["accuracy"] < 1.0
    for kind in ("greedy", "sampled"):
        assert loaded[kind] == quiet[kind]
