"""Coalescing: the calls that reach a PRM actor while it is scoring go into its next forward together.

PRPO submits each prompt group to the PRM the moment the group is generated, so during a step
the PRM actor receives many small calls. One after another, each is a forward of its own; with
``Coalescer`` the calls that arrive while a forward runs wait for it to end and are then scored
in one forward (the backend batches them: padding-aware token budgets for hf, continuous
batching for vLLM). A call that finds the scorer idle starts at once, so nothing waits that
would not have waited anyway. The calls still answer one by one, each with its own scores and
its own stats; ``forward_responses`` says how many responses its forward held.

Errors stay with the call that caused them: when a joint forward raises (a response the
verifier cannot judge, non-finite scores), each call of it is scored again alone.
"""
from __future__ import annotations

import threading
from dataclasses import replace

from .scorer import PRMStats


class _Call:
    def __init__(self, batch):
        self.batch, self.result, self.error, self.done = batch, None, None, False


def slice_stats(joint: PRMStats, encoded: list, offset: int, scores: list[list[float]]) -> PRMStats:
    """One call's share of a joint forward's stats: its own counts, the forward's time and shape."""
    n = len(scores)
    segments = sum(len(s) for s in scores)
    scored = sum(getattr(e, "n_scored", len(s)) for e, s in zip(encoded, scores))
    truncated = [i - offset for i in joint.truncated_indices if offset <= i < offset + n]
    return replace(joint, responses=n, segments=segments, scored_segments=scored, filled_segments=segments - scored,
                   truncated_responses=len(truncated), truncated_indices=truncated,
                   stripped_tags=sum(getattr(e, "stripped_tags", 0) for e in encoded),
                   tokens=sum(len(getattr(e, "ids", ())) for e in encoded), forward_responses=joint.responses)


class Coalescer:
    """Wraps a scorer with ``prepare`` / ``score_prepared`` (PRMScorer, the exact verifier) for
    callers on several threads; ``score_with_stats`` has the scorer's contract."""

    def __init__(self, scorer):
        self.scorer = scorer
        self._cond = threading.Condition()
        self._pending: list[_Call] = []
        self._busy = False
        self.forwards = 0  # joint forwards run, for the actor's info

    def score_with_stats(self, problems: list[str], segments: list[list[str]]) -> tuple[list[list[float]], PRMStats]:
        call = _Call(self.scorer.prepare(problems, segments))  # checks and tokenizes in the caller's thread
        with self._cond:
            self._pending.append(call)
            while not call.done and self._busy:
                self._cond.wait()
            if call.done:
                return self._answer(call)
            self._busy, batch, self._pending = True, self._pending, []
        try:
            self._run(batch)
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
        return self._answer(call)

    @staticmethod
    def _answer(call: _Call):
        if call.error is not None:
            raise call.error
        return call.result

    def _run(self, calls: list[_Call]) -> None:
        """Score ``calls`` in one forward (each alone if the joint one raises); fills each call."""
        self.forwards += 1
        batch_type = type(calls[0].batch)
        joint = batch_type([e for c in calls for e in c.batch.encoded], sum(c.batch.seconds for c in calls))
        try:
            scores, stats = self.scorer.score_prepared(joint)
        except Exception as exc:
            if len(calls) == 1:
                calls[0].error, calls[0].done = exc, True
                return
            for c in calls:
                self._run([c])
            return
        offset = 0
        for c in calls:
            n = len(c.batch.encoded)
            mine = scores[offset:offset + n]
            c.result = (mine, slice_stats(stats, c.batch.encoded, offset, mine) if len(calls) > 1
                        else replace(stats, forward_responses=stats.responses))
            c.done = True
            offset += n
