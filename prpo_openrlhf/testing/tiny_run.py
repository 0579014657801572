"""Inputs of a tiny end-to-end run on CPU: a policy, a PRM and a prompt set, written once.

    python -m prpo_openrlhf.testing.tiny_run DIR [--prompts 4] [--prm-hidden 128] [--prm-layers 2]

Writes ``DIR/policy`` (random 2-layer Qwen2, hidden 128), ``DIR/prm`` (random
Qwen2ForProcessRewardModel layout) and ``DIR/prompts.jsonl`` (``{"problem", "answer"}`` rows, the
keys the launch scripts read) unless they are already there; prints their paths as shell
assignments (``POLICY_MODEL=...``). Each part is written to a temporary name and renamed, so an
interrupted run never leaves a half-written checkpoint that a later run would take as complete.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from prpo_openrlhf.fileio import replace_atomically
from prpo_openrlhf.testing.tiny_models import write_tiny_lm, write_tiny_prm


def _write_once(target: Path, write) -> Path:
    if target.exists():
        return target
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    os.replace(tmp, target)
    return target


def prompt_rows(n: int) -> list[dict]:
    """``n`` one-step arithmetic problems with their answers."""
    return [{"problem": f"What is {a} + {b}? Put the answer in \\boxed{{}}.", "answer": str(a + b)}
            for a, b in ((3 + 7 * i, 4 + 5 * i) for i in range(n))]


def write_tiny_run(root: str | os.PathLike, *, prompts: int = 4, prm_hidden: int = 128,
                   prm_layers: int = 2) -> dict:
    """Write what a tiny run needs under ``root`` (once); returns ``{name: path}``."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    policy = _write_once(root / "policy", write_tiny_lm)
    prm_name = "prm" if (prm_hidden, prm_layers) == (128, 2) else f"prm-h{prm_hidden}-l{prm_layers}"
    prm = _write_once(root / prm_name,
                      lambda p: write_tiny_prm(p, hidden_size=prm_hidden, num_layers=prm_layers))
    data = root / f"prompts-{prompts}.jsonl"
    if not data.exists():
        text = "".join(json.dumps(r) + "\n" for r in prompt_rows(prompts))
        replace_atomically(data, lambda tmp: tmp.write_text(text))
    return {"POLICY_MODEL": str(policy), "PRM_MODEL": str(prm), "PROMPT_DATA": str(data)}


def read_scalars(log_root: str | os.PathLike, name: str) -> dict:
    """tag -> [(step, value)] of run ``name``'s tensorboard events under ``log_root`` (the
    launch scripts' ``--logger.tensorboard_dir LOG_ROOT/name``; OpenRLHF adds one folder per run)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = sorted(p for p in (Path(log_root) / name).iterdir() if p.is_dir())
    if len(runs) != 1:
        raise ValueError(f"expected one tensorboard run under {Path(log_root) / name}, found {runs}")
    events = EventAccumulator(str(runs[0]))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--prm-hidden", type=int, default=128)
    parser.add_argument("--prm-layers", type=int, default=2)
    args = parser.parse_args(argv)
    paths = write_tiny_run(args.root, prompts=args.prompts, prm_hidden=args.prm_hidden,
                           prm_layers=args.prm_layers)
    for name, path in paths.items():
        print(f"{name}={path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
