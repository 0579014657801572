"""The response's final answer and its math-verify verdict, in-process (no torch: grader workers
import it).

Two halves. Text only, cheap, run by the parent before any worker sees a response:
``final_answer`` finds the response's final ``\\boxed{}`` group (the last complete box and the
boxes that math-verify joins to it) and ``answer_context`` cuts the part of the response that
math-verify is given. In a worker (SymPy, no bound on its own running time):
``verify_response`` extracts the answer from that context with math-verify's own ``parse``
(all boxed answers, its priorities) and compares it with the reference with ``verify``.
``rewards.grade_batch`` runs the second half in killable workers; ``soft_deadline`` is the cheap
first line of defence inside one process's main thread.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import re
import signal
import threading
from dataclasses import dataclass

_BOXED = "\\boxed"
# Text between two boxes that makes math-verify read them as one answer (latex2sympy2_extended's
# ``extract_boxed_content``, "last" mode): under 10 characters, or under 70 with one of these in
# it (and the two contents differ).
_SEPARATOR = re.compile(r"\b(and|or)\b|,|;")
_CLOSE_GAP = 10
_SEPARATED_GAP = 70
# Characters of the response kept on each side of the final box group for math-verify: room for
# the math environment around the boxes (``$...$``, ``\[...\]``) and a "The final answer is ...
# I hope it is correct." sentence, and a bound on what its regexes scan (some are quadratic in
# the length of pathological text such as thousands of unclosed ``\[``).
CONTEXT_CHARS = 1000
_BOXED_SPACE = re.compile(r"\\boxed\s+\{")
_DELIMITED = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` in ``text`` (nested braces kept, stripped), or None.

    None when there is no ``\\boxed{`` or when the last one is never closed (a truncated
    response has no final answer). Escaped braces (``\\{``, ``\\}``) and ``\\\\`` do not count
    as grouping braces, so ``\\boxed{\\{1,2\\}}`` gives ``\\{1,2\\}``.
    """
    final = final_answer(text)
    return final.boxes[-1] if final is not None else None


@dataclass(frozen=True)
class FinalAnswer:
    """The final box group of a response: ``boxes`` are the contents (stripped, in order, a box
    equal to the one after it dropped), ``text[start:end]`` runs from the first box's
    ``\\boxed`` to the last one's closing brace."""

    boxes: tuple[str, ...]
    start: int
    end: int

    @property
    def joined(self) -> str:
        """The contents joined by commas, as math-verify joins them."""
        return ",".join(self.boxes)


def final_answer(text: str) -> FinalAnswer | None:
    """The final box group of ``text``, or None when it has no final answer.

    The group is the last ``\\boxed{...}`` (a ``\\boxed`` not followed by ``{`` is skipped) and,
    going left, each earlier box that math-verify's "last" rule joins to the one after it:
    fewer than 10 characters between them, or fewer than 70 holding "and", "or", "," or ";"
    with a different content. The first box that does not qualify, or a ``\\boxed`` without a
    brace, ends the group. None when there is no ``\\boxed{`` or the last one is never closed
    (a truncated response). Escaped braces (``\\{``, ``\\}``) are not grouping braces.
    """
    if not isinstance(text, str):
        return None
    boxes: list[str] = []
    start = end = -1
    pos = text.rfind(_BOXED)
    limit = len(text)  # an earlier box must close before the later one starts
    while pos != -1:
        i = pos + len(_BOXED)
        while i < limit and text[i] in " \t\n":
            i += 1
        if i >= limit or text[i] != "{":
            if boxes:
                break
            pos = text.rfind(_BOXED, 0, pos)  # "\boxed 5" or prose after the last box
            continue
        close = _closing_brace(text, i, limit)
        if close is None:
            break  # the last box is never closed (no answer), or an earlier one runs into the next
        content = text[i + 1:close].strip()
        if boxes:
            between = text[close + 1:start]
            linked = len(between) < _CLOSE_GAP or (
                content != boxes[-1] and len(between) < _SEPARATED_GAP and _SEPARATOR.search(between))
            if not linked:
                break
        else:
            end = close + 1
        if not boxes or content != boxes[-1]:
            boxes.append(content)
        start = limit = pos
        pos = text.rfind(_BOXED, 0, pos)
    if not boxes:
        return None
    return FinalAnswer(tuple(reversed(boxes)), start, end)


def _closing_brace(text: str, open_at: int, limit: int) -> int | None:
    """Index of the "}" matching the "{" at ``open_at`` (before ``limit``), or None."""
    depth = 0
    i = open_at
    while i < limit:
        ch = text[i]
        if ch == "\\":
            i += 2  # skip the escaped character: \{ \} \\ are not grouping braces
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def answer_context(text: str, final: FinalAnswer, margin: int = CONTEXT_CHARS) -> str:
    """The part of ``text`` that math-verify reads: the final box group with up to ``margin``
    characters on each side, cut at a line break where one falls in the margin (inline math
    never spans lines, so its ``$`` pairs stay intact), and ``\\boxed {`` written ``\\boxed{``.
    """
    a = final.start - margin
    if a <= 0:
        a = 0
    else:
        newline = text.find("\n", a, final.start)
        a = a if newline == -1 else newline + 1
    b = final.end + margin
    if b >= len(text):
        b = len(text)
    else:
        newline = text.rfind("\n", final.end, b)
        b = b if newline == -1 else newline
    return _BOXED_SPACE.sub(r"\\boxed{", text[a:b])


def reference_text(reference) -> str:
    """What math-verify parses for a reference: as written when it has a ``\\boxed`` or math
    delimiters (``$``, ``\\(``, ``\\[``; not ``\\$``), else the bare answer put in ``\\boxed{}``."""
    ref = str(reference).strip()
    return ref if _DELIMITED.search(ref) else "\\boxed{" + ref + "}"


@functools.lru_cache(maxsize=1)
def _configs():
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    # The response: math-verify's LaTeX and expression extraction with boxed answers first (the
    # configuration of its own test suite), anchored patterns only: a box, "final answer is",
    # "answer:"; never a bare number or formula from the reasoning.
    response = (LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False),
                ExprExtractionConfig(try_extract_without_anchor=False))
    # The reference: the same, unanchored (a reference is nothing but its answer).
    reference = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
    return response, reference


@functools.lru_cache(maxsize=4096)
def _parse_reference(reference: str):
    # A rollout group shares one reference: parse it once per worker.
    from math_verify import parse

    return parse(reference_text(reference), _configs()[1], parsing_timeout=None)


def parse_response(context: str):
    """math-verify's extraction from a response's ``answer_context``: a list, empty if none."""
    from math_verify import parse

    return parse(context, _configs()[0], parsing_timeout=None)


def verify_response(context: str, reference: str) -> bool:
    """math-verify equivalence of the answer in ``context`` with the reference (no time bound).

    ``context`` is ``answer_context`` of a response (any text works). The answer is what
    ``math_verify.parse`` extracts from it (``_configs``); the reference is parsed from
    ``reference_text``. They are compared with ``math_verify.verify(gold, target)`` at its
    defaults (6-digit float rounding, strict variables). math-verify's own signal-based
    timeouts are off: they only work on a main thread, and the callers bound the time themselves.
    """
    from math_verify import verify

    gold = _parse_reference(str(reference))
    target = parse_response(context)
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
