"""Append-only JSONL files that hold an evaluation's generations and grades.

Every finished sample is appended as one line and flushed and fsync'ed with its batch, so a
crash loses nothing that finished. A crash in the middle of a write leaves at most a truncated
last line: reading tolerates it and cuts the file back to the last complete line before the
next append (appending after a partial line would glue two records together). A bad line
anywhere else is not a crash artefact, so it is an error naming file:line.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

from prpo_openrlhf.fileio import append_durably, replace_atomically

GENERATIONS_FILE = "generations.jsonl"
GRADES_FILE = "grades.jsonl"
CONFIG_FILE = "run_config.json"

Key = tuple  # (benchmark: str, problem index: int, sample index: int)


def text_sha(text: str) -> str:
    """Short content hash; ties a stored sample to the problem text it answered."""
    # surrogatepass: a lone surrogate edited into a record must hash, not raise (same digest
    # as plain UTF-8 for every valid string).
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def sample_seed(seed: int, benchmark: str, problem: int, sample: int) -> int:
    """The sampling seed of one sample, derived from the run's ``--seed``.

    One seed per sample (not per batch) makes a sample independent of which other samples
    are generated with it, so a resumed run draws the same samples as an uninterrupted one.
    """
    digest = hashlib.sha256(f"{seed}|{benchmark}|{problem}|{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class StoreError(RuntimeError):
    """A store file that cannot be read as written by this tool (names file:line)."""


class AppendOnlyJsonl:
    """One JSON object per line; records are only ever appended."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.repaired_tail = False  # whether load() dropped a truncated last line
        self.lines: list[int] = []  # the file line of each record load() returned

    def load(self) -> list[dict]:
        """Every complete record; cuts a truncated last line off the file."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        records, numbers, good_end = [], [], 0
        lines = data.split(b"\n")
        pos = 0
        for lineno, raw in enumerate(lines, start=1):
            last = lineno == len(lines)
            end = pos + len(raw) + (0 if last else 1)
            if raw.strip():
                try:
                    rec = json.loads(raw)
                    if not isinstance(rec, dict):
                        raise ValueError("not an object")
                except ValueError as exc:
                    if last:  # written partly when the process died: drop it
                        self.repaired_tail = True
                        break
                    raise StoreError(f"{self.path}:{lineno}: unreadable record ({exc}); "
                                     "this file is written only by prpo-eval") from exc
                records.append(rec)
                numbers.append(lineno)
            good_end = end
            pos = end
        if good_end < len(data) or (data and not data.endswith(b"\n")):
            self._cut_to(data, good_end)
        self.lines = numbers
        return records

    def _cut_to(self, data: bytes, good_end: int) -> None:
        """Cut the file at the end of its last complete record, in place.

        Only the bytes after ``good_end`` ever go: a kill during the repair leaves every
        complete record on disk (rewriting the whole file would leave nothing in that window).
        """
        with self.path.open("r+b") as fh:
            fh.truncate(good_end)
            if good_end and not data[:good_end].endswith(b"\n"):
                fh.seek(good_end)
                fh.write(b"\n")  # a complete record missing only its newline
            fh.flush()
            os.fsync(fh.fileno())

    def append(self, records: Iterable[dict]) -> int:
        """Append ``records`` in one write, then flush and fsync; returns how many."""
        lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records]
        if not lines:
            return 0
        append_durably(self.path, "".join(lines))
        return len(lines)


# What every record of each file must hold, with its type (int: not a bool).
GENERATION_FIELDS = {"benchmark": str, "problem": int, "sample": int, "problem_sha": str,
                     "text": str, "num_tokens": int, "finish_reason": str}
GRADE_FIELDS = {"benchmark": str, "problem": int, "sample": int, "correct": bool}


def record_fault(rec: dict, fields: dict) -> str | None:
    """Why ``rec`` lacks one of ``fields`` or holds a wrong type there, or None."""
    for name, kind in fields.items():
        if name not in rec:
            return f"record without {name!r}"
        value = rec[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{name!r} is {value!r}, not {kind.__name__}"
    return None


def load_index(store: AppendOnlyJsonl, fields: dict) -> dict[Key, dict]:
    """``store``'s records by key (the last one wins), each checked to hold ``fields``.

    A record that does not is an error naming file:line: these files are written only by
    prpo-eval, so such a record was edited in, and guessing what it meant would be wrong.
    """
    records = store.load()
    for rec, line in zip(records, store.lines):
        fault = record_fault(rec, fields)
        if fault:
            raise StoreError(f"{store.path}:{line}: {fault}; this file is written only by "
                             "prpo-eval (remove the line, or use a new --output_dir)")
    return index_records(records, str(store.path))


def record_key(rec: dict) -> Key:
    return (rec["benchmark"], int(rec["problem"]), int(rec["sample"]))


def index_records(records: list[dict], what: str) -> dict[Key, dict]:
    """Records by key; the last one wins (a regrade appends a newer grade for the same key)."""
    out: dict[Key, dict] = {}
    for rec in records:
        try:
            out[record_key(rec)] = rec
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{what}: record without benchmark/problem/sample: {rec!r}") from exc
    return out


class RunConfig:
    """Generation settings per benchmark, checked on every rerun into the same directory.

    Samples drawn with other settings must not be mixed into one estimate, so a rerun whose
    settings differ stops and names the differing flags. The sample count is not a setting:
    raising ``--n_samples`` extends a finished run, lowering it uses the first ``n``.
    """

    def __init__(self, output_dir: str | os.PathLike):
        self.path = Path(output_dir) / CONFIG_FILE
        self.data: dict = self._read() if self.path.exists() else {}

    def _read(self) -> dict:
        """The stored settings; a file that is not what this tool writes is a named error."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise StoreError(f"{self.path}:{exc.lineno}: unreadable ({exc.msg}); this file is "
                             "written only by prpo-eval") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreError(f"{self.path}: unreadable ({exc})") from None
        benches = data.get("benchmarks", {}) if isinstance(data, dict) else None
        if not (isinstance(benches, dict) and all(isinstance(v, dict) for v in benches.values())):
            raise StoreError(f"{self.path}: expected {{\"benchmarks\": {{name: settings}}}}; "
                             "this file is written only by prpo-eval")
        return data

    def check_and_record(self, benchmark: str, settings: dict) -> None:
        stored = self.data.setdefault("benchmarks", {}).get(benchmark)
        if stored is not None:
            # Keys stored but not given now differ too (a setting this version no longer has).
            diff = [f"--{k}: stored {stored.get(k)!r}, now {settings.get(k)!r}"
                    for k in {**stored, **settings} if stored.get(k) != settings.get(k)]
            if diff:
                raise StoreError(
                    f"{self.path}: benchmark {benchmark!r} was generated with other settings "
                    "(" + "; ".join(diff) + "). Use the same flags to resume, or a new "
                    "--output_dir for a new run.")
        self.data["benchmarks"][benchmark] = dict(settings)

    def save(self) -> None:
        text = json.dumps(self.data, indent=2, sort_keys=True) + "\n"
        replace_atomically(self.path, lambda tmp: tmp.write_text(text))
