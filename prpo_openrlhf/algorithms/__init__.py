"""PRPO algorithms: pure torch and stdlib (no ray, vllm, deepspeed or openrlhf imports).

segmentation  Algorithm 1 (entropy spikes) and the ablation splits, per sequence and batched
advantages    prpo, prm_avg, prm_avg_prpo, pure, process_only; ESTIMATORS maps names to them
rewards       the final \\boxed{} group, math-verify equivalence in killable workers, length penalty

Names are re-exported lazily: the grader's worker processes import this package and should
not pay for importing torch.
"""
import importlib

_EXPORTS = {
    "entropy_segments": "segmentation",
    "uniform_segments": "segmentation",
    "random_segments": "segmentation",
    "newline_segments": "segmentation",
    "segment_batch": "segmentation",
    "segment_ranges": "segmentation",
    "scores_to_tokens": "segmentation",
    "ESTIMATORS": "advantages",
    "prpo_advantages": "advantages",
    "prm_avg_advantages": "advantages",
    "prm_avg_prpo_advantages": "advantages",
    "pure_advantages": "advantages",
    "process_only_advantages": "advantages",
    "GradeResults": "rewards",
    "grade_batch": "rewards",
    "verify_answer": "rewards",
    "outcome_rewards": "rewards",
    "length_penalty": "rewards",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
