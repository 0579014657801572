"""Exact process verifier for the synthetic arithmetic task, behind PRMScorer's interface.

``score(problems, segments)`` returns, for each response, one score in ``[0, 1]`` per segment:
the score of the prefix made of segments ``0..j`` (what a PRM reads at the j-th step tag).

A prefix is judged on its *completed* lines: lines ended by a newline, plus the last line of
the final segment (the response is over, so its last line is complete too). Each completed,
non-empty line must be one of

- a step ``a<op>b=c``: correct when some operation of the problem is *ready* (its operands
  are problem values or results of operations already computed correctly), its operands are
  ``a`` and ``b`` in that order (either order for ``+`` and ``*``), and ``c`` is its exact value;
  any ready operation may go next, not only the canonical order;
- the answer ``\\boxed{v}``: correct when ``v`` is the problem's value.

Anything else on a completed line (prose, a truncated step) counts as a wrong step: the task's
format is part of the task. Operands are checked against the *true* values, so a step built on
an earlier slip is wrong too, even if its own arithmetic is right.

Modes: ``strict`` (default) scores 1.0 while every completed step so far is correct and 0.0
from the first wrong one on; ``graded`` scores the fraction of completed steps so far that are
correct. A prefix with no completed step scores 1.0 in both (nothing is wrong yet).
"""
from __future__ import annotations

import re

from prpo_openrlhf.local.task import Node, parse_expression

_STEP_RE = re.compile(r"^\s*(\d+)\s*([+\-*])\s*(\d+)\s*=\s*(-?\d+)\s*$")
_BOX_RE = re.compile(r"^\s*\\boxed\{\s*(-?\d+)\s*\}\s*$")


class _State:
    """Which operations of one problem have been computed correctly so far."""

    def __init__(self, tree: Node):
        self.answer = tree.value
        self.ops: list[Node] = []
        self._collect(tree)
        self.done: set[int] = set()

    def _collect(self, node: Node) -> None:
        if node.op is not None:
            self._collect(node.left)
            self._collect(node.right)
            self.ops.append(node)

    def _known(self, node: Node) -> bool:
        return node.op is None or id(node) in self.done

    def apply(self, line: str) -> bool:
        """Judge one completed line; mark the operation it computes as done when correct."""
        box = _BOX_RE.match(line)
        if box:
            return int(box.group(1)) == self.answer
        step = _STEP_RE.match(line)
        if not step:
            return False
        a, op, b, c = int(step.group(1)), step.group(2), int(step.group(3)), int(step.group(4))
        for node in self.ops:  # post-order: the leftmost matching ready operation wins
            if id(node) in self.done or node.op != op:
                continue
            if not (self._known(node.left) and self._known(node.right)):
                continue
            x, y = node.left.value, node.right.value
            if (a, b) == (x, y) or (op in "+*" and (a, b) == (y, x)):
                if c == node.value:
                    self.done.add(id(node))
                    return True
                return False
        return False


def judge_lines(problem: str, lines: list[str]) -> list[bool]:
    """Correctness of each completed non-empty line of a response, in order."""
    state = _State(parse_expression(problem))
    return [state.apply(line) for line in lines if line.strip()]


class ExactProcessVerifier:
    """Exact process scores for the synthetic task; a drop-in for ``PRMScorer``."""

    def __init__(self, mode: str = "strict"):
        if mode not in ("strict", "graded"):
            raise ValueError(f"verifier mode must be 'strict' or 'graded', got {mode!r}")
        self.mode = mode

    def _prefix_score(self, verdicts: list[bool]) -> float:
        if not verdicts:
            return 1.0
        if self.mode == "strict":
            return float(all(verdicts))
        return sum(verdicts) / len(verdicts)

    def score_one(self, problem: str, segments: list[str]) -> list[float]:
        state = _State(parse_expression(problem))
        verdicts: list[bool] = []
        text, consumed, scores = "", 0, []
        for j, seg in enumerate(segments):
            text += seg
            last = j == len(segments) - 1
            # Completed lines: up to the last newline, or everything once the response is over.
            cut = len(text) if last else text.rfind("\n") + 1
            for line in text[consumed:cut].split("\n"):
                if line.strip():
                    verdicts.append(state.apply(line))
            consumed = max(consumed, cut)
            scores.append(self._prefix_score(verdicts))
        return scores

    def score(self, problems: list[str], segments: list[list[str]]) -> list[list[float]]:
        """Per-segment prefix scores, one list per response (same contract as PRMScorer)."""
        if len(problems) != len(segments):
            raise ValueError(f"{len(problems)} problems but {len(segments)} segment lists")
        return [self.score_one(p, segs) for p, segs in zip(problems, segments)]

