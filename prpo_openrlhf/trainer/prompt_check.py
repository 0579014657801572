"""Start-up check of ``--data.prompt_dataset``: every row has the prompt and label keys.

Upstream reads the prompt rows inside the trainer actor, after every Ray actor and vLLM
engine has started, and a row without ``--data.label_key`` stops it with a bare
``KeyError: 'answer'``. Local JSON Lines / JSON files are read here first, and a bad row stops
the run before anything starts, naming the file, the line and the missing key. Hub datasets
and other formats are left to upstream (logged).
"""
from __future__ import annotations

import json
import logging
import os

logger = logging.getLogger(__name__)
MAX_REPORTED = 5


def _rows(path: str):
    """(line number, parsed row or None when the line is not JSON) of a .jsonl / .json file."""
    with open(path, encoding="utf-8") as f:
        head = f.read(1)
        f.seek(0)
        if path.endswith(".json") and head == "[":  # one JSON array
            for i, row in enumerate(json.load(f)):
                yield i + 1, row
            return
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError:
                    yield number, None


def row_problems(path: str, keys: dict) -> list[str]:
    """Problems of a local prompt file: ``keys`` maps each required key to the flag naming it."""
    problems = []
    for number, row in _rows(path):
        if not isinstance(row, dict):
            problems.append(f"line {number}: not a JSON object")
            continue
        missing = [f"{key!r} ({flag})" for key, flag in keys.items() if key not in row]
        if missing:
            problems.append(f"line {number}: no {', '.join(missing)}; its keys: {sorted(row)[:8]}")
    return problems


def check_prompt_dataset(args) -> None:
    """Refuse to start when a local prompt file has a row without the keys the run reads."""
    data = args.data
    if not data.prompt_dataset:
        return
    keys = {data.input_key: "--data.input_key"}
    if data.label_key:
        keys[data.label_key] = "--data.label_key"
    errors = []
    for entry in data.prompt_dataset.split(","):
        path = entry.split("@")[0].strip()
        if not (os.path.isfile(path) and path.endswith((".jsonl", ".json"))):
            logger.info("--data.prompt_dataset %s: not a local JSON file, its rows are checked by OpenRLHF", path)
            continue
        problems = row_problems(path, keys)
        if problems:
            shown = "\n    ".join(problems[:MAX_REPORTED])
            more = f"\n    ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
            errors.append(f"{path}: {len(problems)} bad row(s)\n    {shown}{more}")
    if errors:
        raise SystemExit("train_prpo_ray: --data.prompt_dataset has rows the run cannot read:\n  "
                         + "\n  ".join(errors))
