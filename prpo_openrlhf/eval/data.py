"""Benchmark JSONL loading with validation that names the file and line of every bad row.

A benchmark is a UTF-8 JSON Lines file with one problem per line and at least the fields
``problem`` (a string with visible text) and ``answer`` (such a string or a finite number;
numbers are kept as their text). The vendored sets live in ``data/`` at the repository root;
any other file is given by its path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from prpo_openrlhf.rowcheck import json_lines, row_fault

DEFAULT_BENCHMARKS = ("math500", "amc23", "aime24", "aime25")

# The repository's data/ (an editable install or a checkout); PRPO_DATA_DIR overrides it.
_REPO_DATA = Path(__file__).resolve().parents[2] / "data"


class DataError(ValueError):
    """A benchmark file that cannot be used as it is; the message lists file:line of each fault."""


@dataclass(frozen=True)
class Problem:
    index: int          # position among the file's valid rows: the key of its samples
    line: int           # 1-based line in the file, for messages
    problem: str
    answer: str
    id: str | None = None


def default_data_dir() -> Path:
    return Path(os.environ.get("PRPO_DATA_DIR", _REPO_DATA))


def resolve_benchmark(spec: str, data_dir: str | os.PathLike | None = None) -> tuple[str, Path]:
    """``(name, path)`` for a benchmark name in ``data_dir`` or a path to a ``.jsonl`` file."""
    if spec.endswith(".jsonl") or os.sep in spec:
        path = Path(spec)
        name = path.stem
    else:
        name = spec
        path = Path(data_dir) if data_dir is not None else default_data_dir()
        path = path / f"{spec}.jsonl"
    if not path.is_file():
        raise DataError(f"benchmark {spec!r}: no file {path} (see --data_dir / --benchmarks)")
    return name, path


def load_problems(path: str | os.PathLike, *, skip_bad_rows: bool = False,
                  limit: int | None = None) -> tuple[list[Problem], list[str]]:
    """Valid rows of ``path`` (the first ``limit`` of them) and the messages of skipped ones.

    Blank lines are ignored. Any bad row raises ``DataError`` listing every bad row as
    ``file:line: reason`` unless ``skip_bad_rows``; then they are left out and returned as
    messages so the caller can report the count. The whole file is checked even with
    ``limit``, so a smoke run finds faults a full run would hit.
    """
    path = Path(path)
    problems: list[Problem] = []
    bad: list[str] = []
    for lineno, row, reason in json_lines(path):
        if reason is None:
            reason = row_fault(row, {"problem": "'problem'"}, {"answer": "'answer'"})
        if reason is not None:
            bad.append(f"{path}:{lineno}: {reason}")
            continue
        rid = row.get("id", row.get("unique_id"))
        problems.append(Problem(len(problems), lineno, row["problem"], str(row["answer"]),
                                None if rid is None else str(rid)))
    if bad and not skip_bad_rows:
        shown = "\n  ".join(bad[:20]) + (f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else "")
        raise DataError(f"{len(bad)} malformed row(s) in {path} (pass --skip_bad_rows to leave "
                        f"them out):\n  {shown}")
    if not problems:
        raise DataError(f"{path}: no usable rows")
    return (problems if limit is None else problems[:limit]), bad
