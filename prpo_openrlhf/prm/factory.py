"""``make_scorer``: a PRM scorer by backend name, the exact verifier (the oracle) included; the one
module that knows both, so that the scorer and the oracle built on its types do not import
each other."""
from __future__ import annotations

from prpo_openrlhf.prm.scorer import PRMScorer

ORACLE_BACKEND = "exact"  # the embedded task's exact verifier (prpo_openrlhf/local/oracle.py)


def make_scorer(model_name_or_path: str | None, backend: str, **kwargs):
    """A :class:`PRMScorer`, or for ``backend="exact"`` the embedded task's exact verifier
    behind the same interface (no model; ``model_name_or_path`` is only its label)."""
    if backend == ORACLE_BACKEND:
        from prpo_openrlhf.local.oracle import ExactVerifierScorer

        return ExactVerifierScorer(model_name_or_path, **kwargs)
    return PRMScorer(model_name_or_path, backend, **kwargs)
