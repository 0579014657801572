"""Outcome reward R of PRPO_SPEC §4: the response's final answer graded with math-verify.

    R(tau) = (+1 if answer ~ reference else -1) - (L / scale if L > threshold else 0)

The final answer is the response's last ``\\boxed{...}`` together with the boxes math-verify joins
to it (``\\boxed{1}`` and ``\\boxed{-2}``), as math-verify's own ``parse`` extracts it from the text
around them (``_answer``: ``final_answer``, ``answer_context``, ``verify_response``); a
response whose last box is missing or unclosed has none.

Grading runs in a pool of worker processes that the parent kills and replaces when an answer
overruns its budget (``_grader_pool``): math-verify's own timeouts use SIGALRM, which does
nothing off the main thread, and SymPy can spend minutes on an exponent tower. Every answer,
whatever its text, gets True or False within ``timeout_s``; a timed-out answer is False and is
counted in ``GradeResults.timeouts`` and logged.
"""
from __future__ import annotations

import atexit
import logging
import math
import os
import threading
import time
from typing import Sequence

import torch

from prpo_openrlhf.algorithms._answer import (
    SoftTimeout,
    answer_context,
    final_answer,
    soft_deadline,
    verify_response,
)
from prpo_openrlhf.algorithms._grader_pool import GraderPool
from prpo_openrlhf.algorithms._screen import hostile_reason, screened_verdict
from prpo_openrlhf.rowcheck import answer_fault

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0


class GradeResults(list):
    """``list[bool]`` of verdicts that also carries counters for logging.

    timeouts: answers cut off at their budget (``stopped``: by the worker's own soft deadline,
    ``killed``: by the parent killing the worker); crashed: the worker died on the answer;
    errors: math-verify raised; no_boxed: the response has no final answer (no ``\\boxed{...}``,
    or its last one is never closed); screened: answers judged by string equality without
    math-verify, because the final box group's text alone shows they would make SymPy run far
    past any budget (``_screen``: power towers, huge factorials, over 1000 characters);
    bad_references: references no answer may match (null, NaN, inf, empty or blank, as
    ``rowcheck.answer_fault`` says); their responses are False without grading;
    max_latency_s: the slowest answer, from hand-over to a worker to its verdict;
    seconds: wall time of the whole call. Counts other than no_boxed are over unique
    (answer context, reference) pairs.
    """

    COUNTERS = ("timeouts", "stopped", "killed", "crashed", "errors", "no_boxed", "screened", "bad_references",
                "max_latency_s", "seconds")

    def __init__(self, verdicts=(), **counters):
        super().__init__(verdicts)
        for name in self.COUNTERS:
            setattr(self, name, counters.get(name, 0))

    def counters(self) -> dict:
        return {name: getattr(self, name) for name in self.COUNTERS}


def verify_answer(response: str, reference: str, *, timeout_s: float | None = None) -> bool:
    """In-process verdict: is the final answer of ``response`` equivalent to ``reference``?

    No worker, no process: what the workers run. ``timeout_s`` is a SIGALRM soft deadline, only
    honoured on the main thread and only for Python-level work; use ``grade_batch`` when the
    time must be bounded. Never raises on bad input: an error or timeout is False.
    """
    final = final_answer(response)
    if final is None:
        return False
    try:
        try:
            with soft_deadline(timeout_s):
                return verify_response(answer_context(response, final), str(reference))
        except SoftTimeout:
            return False
        except Exception:
            logger.debug("verify_answer: math-verify raised", exc_info=True)
            return False
    except SoftTimeout:  # fired between the work and its cancellation
        return False


# ── the shared pool: workers cost seconds to start (SymPy import + warm-up), so keep them ──

_LOCK = threading.Lock()
_POOL: GraderPool | None = None


def default_num_workers() -> int:
    """``PRPO_GRADER_WORKERS`` if set, else min(4, CPU count)."""
    env = os.environ.get("PRPO_GRADER_WORKERS")
    if env:
        return max(1, int(env))
    return max(1, min(4, os.cpu_count() or 1))


def _get_pool(num_workers: int) -> GraderPool:
    global _POOL
    if _POOL is not None and _POOL.pid != os.getpid():
        _POOL = None  # a forked child: those workers belong to the parent
    if _POOL is not None and _POOL.num_workers != num_workers:
        _POOL.close()
        _POOL = None
    if _POOL is None:
        _POOL = GraderPool(num_workers)
    return _POOL


def start_pool(num_workers: int | None = None) -> None:
    """Start the workers now (in the background) so the first batch does not wait for them."""
    with _LOCK:
        _get_pool(num_workers or default_num_workers()).start()


def close() -> None:
    """Stop the shared pool's workers (also run at interpreter exit)."""
    global _POOL
    with _LOCK:
        if _POOL is not None and _POOL.pid == os.getpid():
            _POOL.close()
        _POOL = None


atexit.register(close)


def grade_batch(responses: Sequence[str], references: Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S,
                *, num_workers: int | None = None, soft_timeouts: bool = True, screen: bool = True
                ) -> GradeResults:
    """Verdict per response: its final answer is equivalent to its reference (math-verify).

    The final answer is found as the module docstring says; the response's text around it
    (``_answer.answer_context``) goes to a worker. Each distinct (that text, reference) pair is
    graded once, by a worker process that gets ``timeout_s`` seconds for it and is killed and
    replaced if it overruns. Any text gives a bool; a timed-out, crashed or erroring answer is
    False and counted. Safe to call from any thread; concurrent calls take turns on the shared
    pool. Raises only for mismatched input lengths, a non-positive budget, or workers that
    cannot start at all (broken environment).
    ``soft_timeouts=False`` turns off the workers' own SIGALRM stop, leaving only the kill.
    ``screen`` (on by default) settles answers whose final box group (from its first
    ``\\boxed`` to its last closing brace) ``_screen.hostile_reason`` flags (power towers, huge
    factorials, over-long text) by string equality of the boxes' contents, joined by commas,
    with the reference, in this process, so that they do not hold a worker for their whole
    budget; they are counted in ``screened``.
    """
    if len(responses) != len(references):
        raise ValueError(f"grade_batch: {len(responses)} responses but {len(references)} references")
    if not (isinstance(timeout_s, (int, float)) and 0 < timeout_s < math.inf):
        raise ValueError(f"grade_batch: timeout_s must be > 0 seconds, got {timeout_s!r}")
    t0 = time.monotonic()
    # str() of a NaN or null label is "nan" / "None", which \boxed{nan} / \boxed{None} would
    # match: a reference that is no answer is never matched, whatever the response.
    usable = [answer_fault(ref) is None for ref in references]
    finals = [final_answer(r) if ok else None for r, ok in zip(responses, usable)]
    answers = [None if f is None else answer_context(r, f) for r, f in zip(responses, finals)]
    slot: dict[tuple[str, str], int] = {}
    screened: dict[tuple[str, str], bool] = {}
    for r, f, a, ref in zip(responses, finals, answers, references):
        if a is None:
            continue
        pair = (a, str(ref))
        if pair in slot or pair in screened:
            continue
        if screen and hostile_reason(r[f.start:f.end]):
            screened[pair] = screened_verdict(f.joined, pair[1])
        else:
            slot[pair] = len(slot)
    jobs = list(slot)
    outcomes = []
    if jobs:
        with _LOCK:
            pool = _get_pool(num_workers or default_num_workers())
            outcomes = pool.grade(jobs, float(timeout_s), soft_timeouts)

    def verdict(a, ref) -> bool:
        if a is None:
            return False
        pair = (a, str(ref))
        return screened[pair] if pair in screened else outcomes[slot[pair]].ok

    verdicts = [verdict(a, ref) for a, ref in zip(answers, references)]
    status = [o.status for o in outcomes]
    stopped, killed = status.count("timeout"), status.count("killed")
    result = GradeResults(
        verdicts, timeouts=stopped + killed, stopped=stopped, killed=killed,
        crashed=status.count("crashed"), errors=status.count("error"),
        no_boxed=sum(a is None and ok for a, ok in zip(answers, usable)), screened=len(screened),
        bad_references=usable.count(False),
        max_latency_s=max((o.latency_s for o in outcomes), default=0.0), seconds=time.monotonic() - t0,
    )
    if result.bad_references:
        logger.warning("grade_batch: %d of %d references are null, NaN, inf or empty: graded "
                       "wrong", result.bad_references, len(responses))
    if result.timeouts or result.crashed or result.screened:
        logger.warning("grade_batch: %d answers, %d timed out (%d killed), %d crashed workers, "
                       "%d screened as too costly for SymPy", len(responses), result.timeouts, killed,
                       result.crashed, result.screened)
    return result


def length_penalty(lengths, threshold: int = 1024, scale: float = 1024.0) -> torch.Tensor:
    """(B,) penalty ``L / scale`` where ``L > threshold``, else 0 (PRPO_SPEC §4)."""
    lengths = torch.as_tensor(lengths, dtype=torch.float32)
    return torch.where(lengths > threshold, lengths / scale, torch.zeros_like(lengths))


def outcome_rewards(responses: Sequence[str], references: Sequence[str], response_lengths,
                    *, timeout_s: float = DEFAULT_TIMEOUT_S, length_threshold: int = 1024,
                    length_scale: float = 1024.0, num_workers: int | None = None
                    ) -> tuple[torch.Tensor, GradeResults]:
    """(B,) outcome rewards and the verdicts behind them.

    ``R = (+1 if correct else -1) - (L / length_scale if L > length_threshold else 0)``, with
    ``L`` = ``response_lengths`` in tokens. The GradeResults carries the timeout counters.
    """
    if len(response_lengths) != len(responses):
        raise ValueError(f"outcome_rewards: {len(responses)} responses but {len(response_lengths)} lengths")
    grades = grade_batch(responses, references, timeout_s, num_workers=num_workers)
    correct = torch.tensor([1.0 if ok else -1.0 for ok in grades], dtype=torch.float32)
    penalty = length_penalty(response_lengths, length_threshold, length_scale)
    return correct - penalty, grades  # R = ±1 - (L / scale if L > threshold else 0)
