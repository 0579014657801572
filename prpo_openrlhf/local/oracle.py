"""The exact process verifier behind the PRM scorer's interface: the oracle PRM of the embedded task.

``--prm.backend exact`` (training) and ``prpo-serve-prm --backend exact`` (the shared service)
score segments with :class:`~prpo_openrlhf.local.verifier.ExactProcessVerifier` instead of a
model, in the same place a PRM runs: the PRM actor on its own placement group, or the service.
A comparison then has an arm whose process scores are never wrong, so a learned PRM's errors can
be told apart from the method's. It knows only the arithmetic task: a problem without an
arithmetic expression is an error (:class:`PRMScoreError`), never a made-up score.
"""
from __future__ import annotations

import time

from prpo_openrlhf.local.verifier import ExactProcessVerifier
from prpo_openrlhf.prm.inputs import validate_batch
from prpo_openrlhf.prm.scorer import PRMScoreError, PRMStats, PreparedBatch

# The model-side options a PRM backend takes (PRMScorer's keywords); the verifier reads no model.
MODEL_OPTIONS = ("dtype", "max_length", "step_tag", "system_prompt", "overlong_fill", "tokenizer", "device",
                 "max_tokens_per_batch", "max_batch_size", "attn_implementation", "engine_kwargs")


class ExactVerifierScorer:
    """``score_with_stats`` / ``prepare`` + ``score_prepared`` / ``info``, like PRMScorer."""

    backend_name = "exact"

    def __init__(self, model_name_or_path: str | None = None, *, mode: str = "strict", **model_options):
        unknown = set(model_options) - set(MODEL_OPTIONS)
        if unknown:
            raise TypeError(f"unexpected options for the exact verifier: {sorted(unknown)}")
        self.verifier = ExactProcessVerifier(mode)
        self.model_name_or_path = model_name_or_path or f"exact-verifier ({mode})"

    def prepare(self, problems: list[str], segments: list[list[str]]) -> PreparedBatch:
        validate_batch(problems, segments)
        return PreparedBatch(encoded=[(p, list(s)) for p, s in zip(problems, segments)], seconds=0.0)

    def score_prepared(self, batch: PreparedBatch) -> tuple[list[list[float]], PRMStats]:
        start = time.time()
        scores = []
        for i, (problem, segs) in enumerate(batch.encoded):
            try:
                scores.append(self.verifier.score_one(problem, segs))
            except ValueError as err:  # not a problem of the arithmetic task
                raise PRMScoreError(f"response {i}: the exact verifier cannot judge it: {err}") from None
        n = sum(len(s) for s in scores)
        return scores, PRMStats(responses=len(scores), segments=n, scored_segments=n, seconds=time.time() - start)

    def score_with_stats(self, problems, segments) -> tuple[list[list[float]], PRMStats]:
        return self.score_prepared(self.prepare(problems, segments))

    def score(self, problems, segments) -> list[list[float]]:
        return self.score_with_stats(problems, segments)[0]

    def info(self) -> dict:
        return {"model": self.model_name_or_path, "backend": self.backend_name, "mode": self.verifier.mode}

    def close(self) -> None:
        pass
