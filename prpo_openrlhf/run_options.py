"""What a training's settings imply, read by the command line (cli/) and by the pieces it starts
(rollout/, trainer/) alike: which estimators need process rewards, which splits exist, and
whether rollouts must carry vLLM's token entropies."""
from __future__ import annotations

# Estimators that need process rewards, computed by prpo_openrlhf.algorithms.advantages.
PRM_ESTIMATORS = ("prpo", "prm_avg", "prm_avg_prpo", "pure", "process_only")
SPLITS = ("entropy", "uniform", "random", "newline")


def needs_vllm_entropy(args) -> bool:
    """Whether rollouts must carry vLLM's per-token entropies (PRPO's entropy executor).

    Only a PRM estimator splitting at entropy spikes with ``--prpo.entropy_source vllm`` reads
    them; every other run (GRPO, REINFORCE++, the uniform/random/newline splits, the actor
    source) keeps OpenRLHF's own executor. The parser installs the executor and the samples
    generator requires entropies by this one rule, so the two cannot disagree.
    """
    return (flag_value(args, "algo.advantage.estimator") in PRM_ESTIMATORS and flag_value(args, "prpo.split") == "entropy"
            and flag_value(args, "prpo.entropy_source") == "vllm")


def flag_value(args, name: str):
    """``name`` of the parser's flat namespace, or of the hierarchical args upstream builds from it."""
    if hasattr(args, name):
        return getattr(args, name)
    for part in name.split("."):
        args = getattr(args, part)
    return args
