"""Grade stored generations with the training grader, caching each verdict beside them.

Grading reads the generations file, not the model, so a rerun regrades for free and a new
reference answer regrades only the samples it affects: a cached verdict is reused only when
it was made against the same reference string and the same text (each verdict stores a hash
of the text it judged: a newer record for a key, whose text differs, is regraded).
``--regrade`` ignores the cache.
"""
from __future__ import annotations

from typing import Sequence

from .store import GRADE_FIELDS, AppendOnlyJsonl, Key, load_index, record_key, text_sha


def _grade_batch(responses: list[str], references: list[str], timeout_s: float | None):
    # The training grader (the final \boxed{} group, math-verify equivalence, killable workers):
    # evaluation must count exactly what training rewards.
    from prpo_openrlhf.algorithms.rewards import grade_batch

    if timeout_s is None:
        return grade_batch(responses, references)
    return grade_batch(responses, references, timeout_s=timeout_s)


def _timeout_count(result) -> int:
    """Timeouts reported by ``grade_batch`` (a count or a collection of indices)."""
    t = getattr(result, "timeouts", 0)
    return t if isinstance(t, int) else len(t)


def grade_samples(generations: Sequence[dict], answers: dict[tuple[str, int], str],
                  grades: AppendOnlyJsonl, *, timeout_s: float | None = None,
                  regrade: bool = False, batch_size: int = 64, pbar=None
                  ) -> tuple[dict[Key, bool], dict]:
    """Verdict per sample key for ``generations`` and counts ``{"cached", "graded", "timeouts", "screened"}``
    (screened: answers settled by string equality because SymPy could not afford them, see
    ``algorithms._screen``).

    ``answers`` maps ``(benchmark, problem index)`` to the reference answer. New verdicts are
    appended to ``grades`` batch by batch (so an interrupted grading pass resumes too).
    """
    cache = {} if regrade else load_index(grades, GRADE_FIELDS)
    verdicts: dict[Key, bool] = {}
    todo: list[dict] = []
    for rec in generations:
        key = record_key(rec)
        hit = cache.get(key)
        # Grades written before the hash was stored have none: they are regraded once.
        if (hit is not None and hit.get("answer") == answers[key[:2]]
                and hit.get("text_sha") == text_sha(rec["text"])):
            verdicts[key] = bool(hit["correct"])
        else:
            todo.append(rec)
    stats = {"cached": len(verdicts), "graded": 0, "timeouts": 0, "screened": 0}
    if pbar is not None:
        pbar.update(len(verdicts))
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        refs = [answers[record_key(r)[:2]] for r in batch]
        result = _grade_batch([r["text"] for r in batch], refs, timeout_s)
        stats["timeouts"] += _timeout_count(result)
        stats["screened"] += getattr(result, "screened", 0)
        rows = []
        for rec, ref, ok in zip(batch, refs, result):
            key = record_key(rec)
            verdicts[key] = bool(ok)
            rows.append({"benchmark": key[0], "problem": key[1], "sample": key[2],
                         "answer": ref, "text_sha": text_sha(rec["text"]), "correct": bool(ok)})
        grades.append(rows)
        stats["graded"] += len(batch)
        if pbar is not None:
            pbar.update(len(batch))
    return verdicts, stats
