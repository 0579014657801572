"""Run directory: metrics JSONL, resumable checkpoint, learning-curve plot."""
from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import torch

from prpo_openrlhf.fileio import append_durably, replace_atomically
from prpo_openrlhf.local.config import UsageError

logger = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
CKPT = "checkpoint.pt"
CURVE = "learning_curve.png"


def append_metrics(out: Path, record: dict) -> None:
    append_durably(out / METRICS, json.dumps(record) + "\n")


def read_metrics(out: Path) -> list[dict]:
    """Every complete record. A truncated last line (the process died while writing it) is
    dropped and logged; a bad line anywhere else is an error naming file:line."""
    path = Path(out) / METRICS
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as err:
            if number == len(lines):  # no newline after it: cut short by a crash
                logger.warning("%s:%d: dropped a truncated last line (%s)", path, number, err)
                break
            raise UsageError(f"{path}:{number}: unreadable metrics record ({err}); "
                             "this file is written only by prpo-local") from err
    return records


def truncate_metrics(out: Path, next_step: int) -> None:
    """Drop records written after the checkpoint (steps >= next_step) so a resume does not repeat them."""
    text = "".join(json.dumps(r) + "\n" for r in read_metrics(out) if r["step"] < next_step)
    replace_atomically(out / METRICS, lambda tmp: tmp.write_text(text))


def save_checkpoint(out: Path, *, policy, optimizer, next_step: int, config: dict) -> None:
    """Policy and optimizer state, the next step, RNG states; written atomically."""
    state = {
        "policy": policy.state_dict(), "optimizer": optimizer.state_dict(), "next_step": next_step,
        "config": config, "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                                  "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
    }
    replace_atomically(out / CKPT, lambda tmp: torch.save(state, tmp))


def load_checkpoint(out: Path, *, policy, optimizer) -> dict:
    """Restore policy, optimizer and RNG states; a checkpoint is data only (``weights_only``:
    loading one cannot run code). An empty, cut or foreign file is a UsageError naming it."""
    path = out / CKPT
    if path.stat().st_size == 0:
        raise UsageError(f"{path}: the checkpoint is empty (0 bytes); remove it or start a new --output_dir")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError ... by damage
        raise UsageError(f"{path}: not a readable prpo-local checkpoint ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from err
    missing = {"policy", "optimizer", "next_step", "config", "rng"} - set(state if isinstance(state, dict) else ())
    if missing:
        raise UsageError(f"{path}: not a prpo-local checkpoint (missing {sorted(missing)})")
    policy.load_state_dict(state["policy"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    if state["rng"].get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state


def _smooth(ys: list[float], w: int = 5) -> list[float]:
    return [sum(ys[max(0, i - w + 1): i + 1]) / len(ys[max(0, i - w + 1): i + 1]) for i in range(len(ys))]


def plot_learning_curve(out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_metrics(out)
    train = [r for r in recs if "train/accuracy" in r]
    evals = [r for r in recs if "eval/accuracy" in r]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    steps = [r["step"] for r in train]
    axes[0].plot(steps, _smooth([r["train/accuracy"] for r in train]), label="train (rollouts, smoothed)")
    axes[0].plot([r["step"] for r in evals], [r["eval/accuracy"] for r in evals], "o-", label="held-out (greedy)")
    if evals and "eval/sampled_accuracy" in evals[0]:
        axes[0].plot([r["step"] for r in evals], [r["eval/sampled_accuracy"] for r in evals], "s--",
                     label="held-out (sampled)")
    axes[0].set_title("accuracy")
    axes[0].legend(fontsize=8)
    axes[1].plot(steps, [r["train/response_length"] for r in train])
    axes[1].set_title("mean response length (tokens)")
    axes[2].plot(steps, [r.get("train/kl", 0.0) for r in train], label="KL to reference")
    axes[2].plot(steps, [r.get("train/entropy", 0.0) for r in train], label="entropy")
    axes[2].set_title("KL and entropy")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out / CURVE, dpi=110)
    plt.close(fig)
    return out / CURVE
