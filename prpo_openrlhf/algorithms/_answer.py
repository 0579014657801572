"""Answer extraction and math-verify equivalence, in-process (no torch: grader workers import it).

``last_boxed`` finds the final ``\\boxed{...}`` of a response; ``verify_extracted`` decides with
math-verify whether that answer equals the reference. Neither bounds its own running time: a
SymPy evaluation can run for minutes. ``rewards.grade_batch`` runs them in killable workers;
``soft_deadline`` is the cheap first line of defence inside one process's main thread.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import signal
import threading

_BOXED = "\\boxed"


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` in ``text`` (nested braces kept), or None.

    None when there is no ``\\boxed{`` or when the last one is never closed (a truncated
    response has no final answer). Escaped braces (``\\{``, ``\\}``) and ``\\\\`` do not count
    as grouping braces, so ``\\boxed{\\{1,2\\}}`` gives ``\\{1,2\\}``.
    """
    if not isinstance(text, str):
        return None
    pos = text.rfind(_BOXED)
    while pos != -1:
        i = pos + len(_BOXED)
        while i < len(text) and text[i] in " \t\n":
            i += 1
        if i < len(text) and text[i] == "{":
            return _group_content(text, i)
        # "\boxed" not followed by "{" (e.g. "\boxed 5" or prose): look at an earlier one.
        pos = text.rfind(_BOXED, 0, pos)
    return None


def _group_content(text: str, open_at: int) -> str | None:
    """Text between the "{" at ``open_at`` and its matching "}", or None if unbalanced."""
    depth = 0
    i = open_at
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2  # skip the escaped character: \{ \} \\ are not grouping braces
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1:i]
        i += 1
    return None


def _strip_reference(reference: str) -> str:
    ref = str(reference).strip()
    inner = last_boxed(ref) if _BOXED in ref else None
    if inner is not None:
        return inner.strip()
    if len(ref) >= 2 and ref[0] == "$" and ref[-1] == "$":
        ref = ref[1:-1].strip()
    return ref


@functools.lru_cache(maxsize=4096)
def _parse_reference(reference: str):
    # A rollout group shares one reference: parse it once per worker.
    from math_verify import parse

    return parse("\\boxed{" + _strip_reference(reference) + "}", parsing_timeout=None)


@functools.lru_cache(maxsize=16384)
def _parse_answer(answer: str):
    from math_verify import parse

    return parse("\\boxed{" + answer + "}", parsing_timeout=None)


def verify_extracted(answer: str, reference: str) -> bool:
    """math-verify equivalence of an extracted answer with the reference (no time bound).

    Both sides are parsed as ``\\boxed{...}`` LaTeX (math-verify's LaTeX and expression
    extractors) and compared with ``math_verify.verify(gold, target)`` at its defaults
    (6-digit float rounding, strict variables). math-verify's own signal-based timeouts are
    off: they only work on a main thread, and the callers bound the time themselves.
    """
    from math_verify import verify

    gold = _parse_reference(reference)
    target = _parse_answer(answer)
    if not gold or not target:
        return False
    return bool(verify(gold, target, timeout_seconds=None))


class SoftTimeout(BaseException):
    """Raised inside the computation when a soft deadline passes.

    A BaseException so that math-verify's and SymPy's ``except Exception`` blocks let it
    through to the caller.
    """


def _raise_soft_timeout(signum, frame):
    raise SoftTimeout()


@contextlib.contextmanager
def soft_deadline(seconds: float | None):
    """Interrupt Python-level work after ``seconds`` (SIGALRM; main thread only).

    C-level work (a huge integer power) is not interrupted: only killing the process is a
    guarantee. Outside the main thread, or with ``seconds`` None, this does nothing.
    """
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGALRM, _raise_soft_timeout)
    signal.setitimer(signal.ITIMER_REAL, max(float(seconds), 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def quiet_math_verify() -> None:
    """math-verify warns once that its timeouts are off and logs whole inputs on errors."""
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.ERROR)
