"""Advantage estimators of PRPO_SPEC §4 (paper §3.2) and the PRM baselines it compares against.

Every estimator has one keyword signature so a trainer can call any of them the same way:

    fn(process_scores, outcome_rewards, action_mask, n_samples_per_prompt, **options) -> (B, T)

process_scores (B, T): at each response token, the PRM score in [0, 1] of its segment.
outcome_rewards (B,): R of each rollout (±1 minus the length penalty, rewards.outcome_rewards).
action_mask (B, T): 1 on response tokens. Groups are contiguous blocks of n rows (one prompt).
options: segment_ids (B, T) (-1 off the response; when absent, segments are recovered as runs
of equal score, which merges two adjacent segments only if their scores are bit-identical),
prior_mean, prior_std, normalization, eps, temperature, outcome_coef. An estimator ignores the
options it does not use. Every result is exactly 0 where action_mask is 0.
"""
from __future__ import annotations

from typing import Callable

import torch

GROUP_NORM_EPS = 1e-9  # OpenRLHF 0.11.2 group_norm: (R - mean) / (std + 1e-9), unbiased std


def _prepare(process_scores, outcome_rewards, action_mask, n: int):
    scores = torch.as_tensor(process_scores).float()
    rewards = torch.as_tensor(outcome_rewards, device=scores.device).float().reshape(-1)
    mask = torch.as_tensor(action_mask, device=scores.device).bool()
    if scores.dim() != 2 or scores.shape != mask.shape:
        raise ValueError(f"process_scores {tuple(scores.shape)} and action_mask {tuple(mask.shape)} "
                         "must both be (B, T)")
    if rewards.numel() != scores.shape[0]:
        raise ValueError(f"{rewards.numel()} outcome rewards for {scores.shape[0]} rollouts")
    if n < 1 or scores.shape[0] % n:
        raise ValueError(f"batch of {scores.shape[0]} rollouts is not whole groups of n_samples_per_prompt={n}")
    return scores, rewards, mask


def segment_starts(process_scores: torch.Tensor, action_mask: torch.Tensor, segment_ids=None) -> torch.Tensor:
    """(B, T) bool: the first token of each segment (from segment_ids, else runs of equal score)."""
    mask = torch.as_tensor(action_mask).bool()
    key = process_scores if segment_ids is None else torch.as_tensor(segment_ids)
    changed = torch.ones_like(mask)
    changed[:, 1:] = (key[:, 1:] != key[:, :-1]) | ~mask[:, :-1]
    return changed & mask


def _segment_mean(scores: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """(B,) plain mean of each rollout's segment scores (each segment once, whatever its length)."""
    count = starts.sum(1)
    total = (scores * starts).sum(1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))


def outcome_shift(outcome_rewards: torch.Tensor, n: int) -> torch.Tensor:
    """(B,) beta(tau) = R(tau) - mean over the group of R (Dr.GRPO: no division by the std)."""
    grouped = outcome_rewards.view(-1, n)
    return (grouped - grouped.mean(-1, keepdim=True)).view(-1)  # beta(tau) = R(tau) - mu_rollout


def _z(scores, mask, n: int, prior_mean: float, prior_std: float, normalization: str, segment_ids,
       eps: float) -> torch.Tensor:
    """(B, T) process z-score, unspecified off the response (callers mask it)."""
    if normalization == "prior":
        return (scores - prior_mean).div_(prior_std)  # z_t = (r_i - mu_prior) / sigma_prior
    if normalization != "relative":
        raise ValueError(f"normalization must be 'prior' or 'relative', got {normalization!r}")
    clean = torch.where(mask, scores, 0.0)
    w = segment_starts(clean, mask, segment_ids).float().view(-1, n * scores.shape[1])
    s = clean.view_as(w)
    count = w.sum(1, keepdim=True)
    mu = (s * w).sum(1, keepdim=True) / count.clamp(min=1)
    var = ((s - mu) ** 2 * w).sum(1, keepdim=True) / (count - 1).clamp(min=1)
    return ((s - mu) / (var.sqrt() + eps)).view_as(scores)  # z_t = (r_i - mu_group) / (sigma_group + eps)


def process_z(process_scores, action_mask, n_samples_per_prompt: int, prior_mean: float = 0.5,
              prior_std: float = 0.289, normalization: str = "prior", segment_ids=None,
              eps: float = GROUP_NORM_EPS) -> torch.Tensor:
    """(B, T) z_t = (r_i - mu) / sigma for every token t of segment i; 0 off the response.

    normalization="prior": mu, sigma = prior_mean, prior_std (a [0, 1] PRM: 0.5 and 0.289, the
    std of U[0, 1]). "relative" (ablation): mean and unbiased std of the group's segment scores,
    each segment counted once, and sigma + eps in the denominator.
    """
    mask = torch.as_tensor(action_mask).bool()
    scores = torch.as_tensor(process_scores).float()
    z = _z(scores, mask, n_samples_per_prompt, prior_mean, prior_std, normalization, segment_ids, eps)
    return torch.where(mask, z, 0.0)


def prpo_advantages(process_scores, outcome_rewards, action_mask, n_samples_per_prompt: int,
                    prior_mean: float = 0.5, prior_std: float = 0.289, normalization: str = "prior",
                    segment_ids=None, eps: float = GROUP_NORM_EPS, **_unused) -> torch.Tensor:
    """(B, T) PRPO: AF_t = z_t + beta(tau) on every response token, 0 on padding.

    With every PRM score 0.5 (prior normalization) z is exactly 0 and this is exactly
    OpenRLHF's dr_grpo advantage R - mean_group R on every token.
    """
    scores, rewards, mask = _prepare(process_scores, outcome_rewards, action_mask, n_samples_per_prompt)
    z = _z(scores, mask, n_samples_per_prompt, prior_mean, prior_std, normalization, segment_ids, eps)
    beta = outcome_shift(rewards, n_samples_per_prompt)
    return torch.where(mask, z.add_(beta[:, None]), 0.0)  # AF_t = z_process,t + beta(tau)


def process_only_advantages(process_scores, outcome_rewards, action_mask, n_samples_per_prompt: int,
                            prior_mean: float = 0.5, prior_std: float = 0.289, normalization: str = "prior",
                            segment_ids=None, eps: float = GROUP_NORM_EPS, **_unused) -> torch.Tensor:
    """(B, T) ablation AF_t = z_t: no outcome term (the paper's §3.2 predicts collapse)."""
    scores, _, mask = _prepare(process_scores, outcome_rewards, action_mask, n_samples_per_prompt)
    z = _z(scores, mask, n_samples_per_prompt, prior_mean, prior_std, normalization, segment_ids, eps)
    return torch.where(mask, z, 0.0)  # AF_t = z_process,t


def _prm_augmented_reward(scores, rewards, mask, segment_ids) -> torch.Tensor:
    """(B,) R' = R + mean_i r_i, the plain mean over segments (a long segment counts once)."""
    scores = torch.where(mask, scores, 0.0)
    return rewards + _segment_mean(scores, segment_starts(scores, mask, segment_ids))  # R' = R + mean_i r_i


def prm_avg_advantages(process_scores, outcome_rewards, action_mask, n_samples_per_prompt: int,
                       segment_ids=None, eps: float = GROUP_NORM_EPS, **_unused) -> torch.Tensor:
    """(B, T) PRM-Avg: A = (R' - mean_g R') / (std_g R' + eps), broadcast to tokens.

    The std is the unbiased group std and eps 1e-9, exactly as OpenRLHF 0.11.2's group_norm;
    so it needs n_samples_per_prompt >= 2.
    """
    n = n_samples_per_prompt
    if n < 2:
        raise ValueError("prm_avg normalises by the group std: it needs n_samples_per_prompt >= 2")
    scores, rewards, mask = _prepare(process_scores, outcome_rewards, action_mask, n)
    r_prime = _prm_augmented_reward(scores, rewards, mask, segment_ids).view(-1, n)
    # A = (R' - mean_g R') / (std_g R' + eps)
    adv = (r_prime - r_prime.mean(-1, keepdim=True)) / (r_prime.std(-1, keepdim=True) + eps)
    return torch.where(mask, adv.view(-1)[:, None], 0.0)


def prm_avg_prpo_advantages(process_scores, outcome_rewards, action_mask, n_samples_per_prompt: int,
                            prior_mean: float = 0.5, prior_std: float = 0.289, normalization: str = "prior",
                            segment_ids=None, eps: float = GROUP_NORM_EPS, **_unused) -> torch.Tensor:
    """(B, T) PRM-Avg + PRPO: AF_t = z_t + (R'(tau) - mean_g R')."""
    n = n_samples_per_prompt
    scores, rewards, mask = _prepare(process_scores, outcome_rewards, action_mask, n)
    z = _z(scores, mask, n, prior_mean, prior_std, normalization, segment_ids, eps)
    beta = outcome_shift(_prm_augmented_reward(scores, rewards, mask, segment_ids), n)
    return torch.where(mask, z + beta[:, None], 0.0)  # AF_t = z_t + (R' - mean_g R')


def _segment_table(scores, mask, starts):
    """(B,) segment index per token (B, T), per-segment score and length (B, S), valid (B, S)."""
    sid = (starts.cumsum(1) - 1).masked_fill(~mask, 0)
    count = starts.sum(1)
    S = max(int(count.max()) if count.numel() else 0, 1)
    seg_score = torch.zeros(scores.shape[0], S, device=scores.device).scatter_add_(1, sid, scores * starts)
    seg_len = torch.zeros(scores.shape[0], S, device=scores.device).scatter_add_(1, sid, mask.float())
    valid = torch.arange(S, device=scores.device) < count[:, None]
    return sid, seg_score, seg_len, valid


def _others_sum(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B,) sum of x over the other n - 1 rollouts of each group."""
    g = x.view(-1, n)
    return (g.sum(-1, keepdim=True) - g).view(-1)


def pure_advantages(process_scores, outcome_rewards, action_mask, n_samples_per_prompt: int,
                    segment_ids=None, temperature: float = 0.1, outcome_coef: float = 0.1,
                    **_unused) -> torch.Tensor:
    """(B, T) PURE (arXiv 2504.15275): min-form credit assignment, RLOO baselines.

    Per rollout with segment rewards r_i = 2 p_i - 1 (PURE's p(+) - p(-) of a two-class PRM):
        w_i = softmax_i(-r_i / temperature)              (weights concentrate on the worst step)
        q_i = w_i r_i - b * len_i                        (sum_i w_i r_i ~ min_i r_i)
        b   = leave-one-out mean over the group of sum_i w_i r_i / L  (PURE's "token" baseline)
        A_t = sum_{i >= seg(t)} q_i + outcome_coef * (v - leave-one-out mean of v)
    with v = (R + 1) / 2 the 0/1 verifiable reward (R = ±1; a length penalty passes through
    halved). The step reward sits at the segment's last token, so a token's return is the sum of
    the weighted rewards of its own and later segments; the outcome reward sits at the final
    token, so every token gets it.

    Simplifications, all relative to PURE's released code (OpenRLHF fork, PRM+VR script):
    segments are this project's split, not PURE's "\\n\\n" steps, so no separator token has its
    advantage zeroed; segment lengths cover the whole response; gamma = 1; the KL goes into the
    loss (PRPO's setting), not into the reward; outcome_coef defaults to PURE's 0.1.
    """
    n = n_samples_per_prompt
    scores, rewards, mask = _prepare(process_scores, outcome_rewards, action_mask, n)
    scores = torch.where(mask, scores, 0.0)
    starts = segment_starts(scores, mask, segment_ids)
    sid, seg_score, seg_len, valid = _segment_table(scores, mask, starts)
    r = 2.0 * seg_score - 1.0  # r_i = p(+) - p(-)
    w = torch.softmax((-r / temperature).masked_fill(~valid, float("-inf")), dim=1).nan_to_num(0.0)
    weighted = torch.where(valid, w * r, 0.0)  # w_i r_i, sum_i ~ min_i r_i
    length = seg_len.sum(1)
    others_length = _others_sum(length, n)
    per_token = torch.where(others_length > 0, _others_sum(weighted.sum(1), n) / others_length.clamp(min=1), 0.0)
    q = torch.where(valid, weighted - per_token[:, None] * seg_len, 0.0)  # q_i = w_i r_i - b len_i
    returns = q.flip(1).cumsum(1).flip(1)  # G_i = sum_{j >= i} q_j
    v = (rewards + 1.0) / 2.0
    v_loo = _others_sum(v, n) / (n - 1) if n > 1 else torch.zeros_like(v)
    outcome = outcome_coef * (v - v_loo)  # RLOO verifiable reward
    adv = returns.gather(1, sid) + outcome[:, None]  # A_t = G_seg(t) + c (v - v_loo)
    return torch.where(mask, adv, 0.0)


ESTIMATORS: dict[str, Callable[..., torch.Tensor]] = {
    "prpo": prpo_advantages,
    "prm_avg": prm_avg_advantages,
    "prm_avg_prpo": prm_avg_prpo_advantages,
    "pure": pure_advantages,
    "process_only": process_only_advantages,
}
