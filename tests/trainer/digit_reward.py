"""A dense outcome reward for tiny random policies (OpenRLHF's reward-function hook).

A random byte-level policy never writes a \\boxed{} answer, so the default outcome reward is -1
for every rollout, every group has zero variance, and GRPO makes no update. Here R is the share
of the response's characters that are digits: it differs between the rollouts of a group, so
the real pipeline's tests see the policy move. Passed as ``--reward.remote_url <this file>``.
"""
import torch


def reward_func(queries, prompts, labels):
    responses = [q[len(p):] if q.startswith(p) else q for q, p in zip(queries, prompts)]
    rewards = torch.tensor([sum(c.isdigit() for c in r) / max(1, len(r)) for r in responses])
    return {"rewards": rewards, "scores": rewards, "extra_logs": {"digit_share": rewards.mean()}}
