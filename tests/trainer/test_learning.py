"""PRPO learns through the real pipeline (the shape of verl's end-to-end arithmetic check).

examples/scripts/train_prpo_embedded_cpu.sh under `ray job submit` on a private Ray head:
OpenRLHF's DeepSpeed actors, a vLLM engine with the entropy plugin, PPOTrainer.fit and the
weight sync, from the shipped policy, with the exact verifier as the PRM on its own actor (the
oracle arm). The run makes EPISODES passes over the same PROMPTS training prompts (two steps of
16 prompts x 8 samples per pass), so the first pass and the last ones are judged on the same
problems: one step's accuracy on new prompts moves with their difficulty by more than 20 steps
of learning do (seed 42 once read 0.797 at its first step). Two things are checked:
- the mean PRM score stays at or above the training accuracy: an exact strict verifier scores
  1 on every segment of a response whose every line is right, so a mean far below the accuracy
  means segments, scores and tokens slipped out of line (the last segment once reached the PRM
  with the EOS text attached: 0.45-0.52 against an accuracy of 0.66-0.83). A right answer after a
  wrong line scores 0 from that line on, so near an accuracy of 0.9 a step may read a little
  below (0.890 at 0.898, the lowest of 3 seeds x 20 steps): TOLERANCE per step, none on average;
- training accuracy rises: the mean of the last two passes is at least MARGIN above the first.
"""
from pathlib import Path

import pytest

from prpo_openrlhf.local.embedded import paths, train

PROMPTS = 32        # two steps of 16 prompts per pass
EPISODES = 10       # 20 steps at make run's LR (2e-4; 1e-3 fell to 0.30 by step 4)
MARGIN = 0.08       # mean training accuracy of the last two passes over the first
TOLERANCE = 0.03    # the mean PRM score below the training accuracy, at one step


def train_embedded(tmp_path: Path, seed: int) -> dict:
    """EPISODES passes of the embedded run over PROMPTS prompts; the run's TensorBoard scalars."""
    env_paths = paths("exact")
    rows = Path(env_paths["PROMPT_DATA"]).read_text().splitlines()[:PROMPTS]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(rows) + "\n")
    extra_env = {"EXTRA_ARGS": f"--train.seed {seed}", "NUM_EPISODES": str(EPISODES)}
    _, scalars = train(tmp_path, {**env_paths, "PROMPT_DATA": str(prompts)}, extra_env, 2 * EPISODES)
    return scalars


def pass_means(acc: list[float]) -> list[float]:
    """Mean accuracy per pass over the prompts (two steps each)."""
    return [(a + b) / 2 for a, b in zip(acc[::2], acc[1::2])]


def test_prpo_raises_training_accuracy_with_scores_in_line(tmp_path):
    scalars = train_embedded(tmp_path, seed=42)
    acc = [v for _, v in scalars["train/accuracy"]]
    prm = [v for _, v in scalars["train/prm_score_mean"]]
    assert len(acc) == len(prm) == 2 * EPISODES
    assert all(p >= a - TOLERANCE for p, a in zip(prm, acc)), list(zip(acc, prm))
    assert sum(prm) >= sum(acc), list(zip(acc, prm))
    passes = pass_means(acc)
    gain = (passes[-1] + passes[-2]) / 2 - passes[0]
    assert gain >= MARGIN, [round(p, 3) for p in passes]
