"""Start-up check of ``--data.prompt_dataset``: every row has usable prompt and label values.

Upstream reads the prompt rows inside the trainer actor, after every Ray actor and vLLM
engine has started: a row without ``--data.label_key`` stops it with a bare ``KeyError``, a
``"problem": null`` with a ``TypeError``, and an empty or NaN label trains silently. Local JSON
Lines / JSON files are read here first with prpo-eval's row checks (``prpo_openrlhf.rowcheck``),
and bad rows stop the run before anything starts, each named ``file:line: reason``. Hub
datasets and other formats are left to upstream (logged).
"""
from __future__ import annotations

import json
import logging
import os

from prpo_openrlhf.rowcheck import json_lines, refuse_constant, row_fault

logger = logging.getLogger(__name__)
MAX_REPORTED = 20  # with reasons; the lines of the rest are still listed


def _rows(path: str):
    """(where, parsed row or None, reason) per row of a .jsonl file or a .json array."""
    if path.endswith(".json"):
        with open(path, "rb") as f:
            raw = f.read()
        if raw.lstrip()[:1] == b"[":  # one JSON array: rows by position
            try:
                rows = json.loads(raw.decode("utf-8"), parse_constant=refuse_constant)
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError too
                yield f"{path}:{getattr(exc, 'lineno', 1)}", None, f"not a readable JSON array ({exc})"
                return
            for i, row in enumerate(rows, 1):
                yield f"{path}: row {i}", row, None if isinstance(row, dict) else "not a JSON object"
            return
    for number, row, reason in json_lines(path):
        yield f"{path}:{number}", row, reason


def row_problems(path: str, keys: dict, labels: dict = None, *, chat: bool = False) -> list[tuple[str, str]]:
    """``(where, reason)`` of each bad row of a local prompt file. ``keys`` maps each text key
    to the flag naming it, ``labels`` each answer key; ``chat`` accepts message lists."""
    labels = labels or {}
    problems = []
    for where, row, reason in _rows(path):
        if reason is None:
            missing = [f"{key!r} ({flag})" for key, flag in {**keys, **labels}.items() if key not in row]
            if missing:
                reason = f"no {', '.join(missing)}; its keys: {sorted(row)[:8]}"
            else:
                reason = row_fault(row, {k: f"{k!r} ({f})" for k, f in keys.items()},
                                   {k: f"{k!r} ({f})" for k, f in labels.items()}, chat_keys=chat)
        if reason is not None:
            problems.append((where, reason))
    return problems


def _report(path: str, problems: list[tuple[str, str]]) -> str:
    shown = [f"{where}: {reason}" for where, reason in problems[:MAX_REPORTED]]
    rest = [where.rpartition(":")[2].strip() for where, _ in problems[MAX_REPORTED:]]
    if rest:
        shown.append(f"... and {len(rest)} more, at {path} lines/rows {', '.join(rest)}")
    return f"{path}: {len(problems)} bad row(s)\n    " + "\n    ".join(shown)


def check_prompt_dataset(args) -> None:
    """Refuse to start when a local prompt file has a row the run cannot use, naming each."""
    data = args.data
    if not data.prompt_dataset:
        return
    keys = {data.input_key: "--data.input_key"}
    labels = {data.label_key: "--data.label_key"} if data.label_key else {}
    chat = bool(getattr(data, "apply_chat_template", False))
    errors = []
    for entry in data.prompt_dataset.split(","):
        path = entry.split("@")[0].strip()
        if not (os.path.isfile(path) and path.endswith((".jsonl", ".json"))):
            logger.info("--data.prompt_dataset %s: not a local JSON file, its rows are checked by OpenRLHF", path)
            continue
        problems = row_problems(path, keys, labels, chat=chat)
        if problems:
            errors.append(_report(path, problems))
    if errors:
        raise SystemExit("train_prpo_ray: --data.prompt_dataset has rows the run cannot read:\n  "
                         + "\n  ".join(errors))
