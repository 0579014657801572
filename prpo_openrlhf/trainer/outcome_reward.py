"""Outcome reward R for OpenRLHF's reward-function hook (``--reward.remote_url <this file>``).

OpenRLHF's single-turn executor loads ``reward_func(queries, prompts, labels)`` from a Python
file and calls it inside the rollout workers as soon as each sample finishes, so grading
overlaps generation. R = +1 if the response's final answer (its final \\boxed{} group, docs/algorithms.md §3) is
equivalent to the label (math-verify, in killable worker processes), else -1. The length penalty needs token
counts and is applied later by PRPOExperienceMaker.

The grader's per-answer budget comes from the environment variable PRPO_GRADER_TIMEOUT
(seconds), which the launcher sets from ``--prpo.grader_timeout`` for every Ray worker.
"""
from __future__ import annotations

import os

import torch

from prpo_openrlhf.algorithms.rewards import grade_batch


def _response_text(query: str, prompt: str) -> str:
    # `query` is decode(prompt tokens + response tokens); the prompt's own text (e.g. a
    # system prompt mentioning \boxed{}) must not be graded.
    return query[len(prompt):] if query.startswith(prompt) else query


def reward_func(queries, prompts, labels):
    graded = grade_batch(
        [_response_text(q, p) for q, p in zip(queries, prompts)],
        list(labels),  # not str(): a NaN or null label must stay recognisable as no answer
        timeout_s=float(os.environ.get("PRPO_GRADER_TIMEOUT", "5")),
    )
    rewards = torch.tensor([1.0 if ok else -1.0 for ok in graded])
    return {
        "rewards": rewards,
        "scores": rewards,
        "extra_logs": {
            "accuracy": (rewards > 0).float().mean(),
            "grader_timeouts": torch.tensor(float(graded.timeouts)),
            "grader_screened": torch.tensor(float(graded.screened)),
        },
    }
