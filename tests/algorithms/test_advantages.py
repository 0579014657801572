"""Advantage estimators: hand-worked groups, exact reductions, and per-row loop references."""
import math
import random

import pytest
import torch

from prpo_openrlhf.algorithms.advantages import (
    ESTIMATORS,
    prm_avg_advantages,
    prm_avg_prpo_advantages,
    process_only_advantages,
    process_z,
    prpo_advantages,
    pure_advantages,
)

Z = 0.3 / 0.289  # (0.8 - 0.5) / 0.289 = 1.0380622837...


def small_group():
    """n=2, T=4. Row 0: segments 0.8 (tokens 0-1) and 0.2 (token 2), R=+1.
    Row 1: one segment 0.9 (tokens 0-1), R=-1. Padding holds garbage, even NaN."""
    scores = torch.tensor([[0.8, 0.8, 0.2, float("nan")], [0.9, 0.9, 7.0, 7.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    ids = torch.tensor([[0, 0, 1, -1], [0, 0, -1, -1]])
    return scores, torch.tensor([1.0, -1.0]), mask, ids


def test_prpo_hand_worked():
    # beta = R - mean(R) = (+1, -1). z = (r - 0.5) / 0.289: 0.8 -> +Z, 0.2 -> -Z, 0.9 -> 0.4/0.289.
    scores, R, mask, _ = small_group()
    z9 = 0.4 / 0.289
    want = torch.tensor([[Z + 1, Z + 1, -Z + 1, 0.0], [z9 - 1, z9 - 1, 0.0, 0.0]])
    got = prpo_advantages(scores, R, mask, n_samples_per_prompt=2)
    torch.testing.assert_close(got, want)
    assert bool((got[mask == 0] == 0).all())


def test_prpo_relative_normalisation_counts_segments_once():
    # Group segment scores 0.8, 0.2, 0.9 (each once, whatever its length): mean 19/30,
    # unbiased var = ((1/6)^2 + (13/30)^2 + (4/15)^2) / 2 = 0.1433..., std 0.37859...
    scores, R, mask, ids = small_group()
    mu = 1.9 / 3
    std = math.sqrt(((0.8 - mu) ** 2 + (0.2 - mu) ** 2 + (0.9 - mu) ** 2) / 2)
    z = lambda r: (r - mu) / std  # noqa: E731
    want = torch.tensor([[z(0.8) + 1, z(0.8) + 1, z(0.2) + 1, 0], [z(0.9) - 1, z(0.9) - 1, 0, 0]])
    got = prpo_advantages(scores, R, mask, 2, normalization="relative", segment_ids=ids)
    torch.testing.assert_close(got, want)
    # Without ids the segments are recovered from runs of equal score: the same here.
    torch.testing.assert_close(prpo_advantages(scores, R, mask, 2, normalization="relative"), want)


def test_constant_half_reduces_exactly_to_dr_grpo():
    # PRM score 0.5 everywhere: z == 0 exactly, so AF_t == R - mean_group(R) bit for bit, which
    # is OpenRLHF 0.11.2's dr_grpo / reinforce_baseline shaping broadcast to the tokens.
    gen = torch.Generator().manual_seed(0)
    n, B, T = 8, 64, 50
    R = torch.randint(0, 2, (B,), generator=gen).float() * 2 - 1 - torch.rand(B, generator=gen)
    mask = torch.arange(T) < torch.randint(1, T + 1, (B,), generator=gen)[:, None]
    got = prpo_advantages(torch.full((B, T), 0.5), R, mask, n)
    grouped = R.reshape(-1, n)
    dr_grpo = (grouped - grouped.mean(-1, keepdim=True)).reshape(-1)  # OpenRLHF's formula
    assert torch.equal(got, torch.where(mask, dr_grpo[:, None], 0.0))


def test_prm_avg_hand_worked():
    # R' = R + plain mean of segment scores, n=3. Row 0: 1 + (0.8 + 0.2)/2 = 1.5 (a token
    # average would give 1.6); row 1: -1 + 0.9 = -0.1; row 2: -0.45 + (0.6 + 0.5)/2 = 0.1.
    scores = torch.tensor([[0.8, 0.8, 0.2], [0.9, 0.9, 0.0], [0.6, 0.5, 0.5]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1]])
    R = torch.tensor([1.0, -1.0, -0.45])
    # R' = (1.5, -0.1, 0.1): mean 0.5, unbiased var (1 + 0.36 + 0.16)/2 = 0.76, std 0.87178
    std = math.sqrt(0.76)
    want = torch.tensor([1.0, -0.6, -0.4]) / (std + 1e-9)
    got = prm_avg_advantages(scores, R, mask, 3)
    torch.testing.assert_close(got, torch.where(mask.bool(), want[:, None], 0.0))


def test_prm_avg_equals_group_norm_of_augmented_reward():
    # OpenRLHF 0.11.2 group_norm, re-implemented: (r - mean) / (std + 1e-9), unbiased std.
    gen = torch.Generator().manual_seed(1)
    B, T, n = 32, 20, 4
    seg_scores = torch.rand(B, generator=gen)
    mask = torch.ones(B, T)
    R = torch.randint(0, 2, (B,), generator=gen).float() * 2 - 1
    r = (R + seg_scores).reshape(-1, n)
    group_norm = ((r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + 1e-9)).reshape(-1)
    got = prm_avg_advantages(seg_scores[:, None].expand(B, T), R, mask, n)
    torch.testing.assert_close(got, group_norm[:, None].expand(B, T))


def test_prm_avg_prpo_and_process_only_hand_worked():
    # R' = (1.5, -0.1), mean 0.7 -> shift (+0.8, -0.8); z as in test_prpo_hand_worked.
    scores, R, mask, _ = small_group()
    z9 = 0.4 / 0.289
    want = torch.tensor([[Z + 0.8, Z + 0.8, -Z + 0.8, 0], [z9 - 0.8, z9 - 0.8, 0, 0]])
    torch.testing.assert_close(prm_avg_prpo_advantages(scores, R, mask, 2), want)
    only = torch.tensor([[Z, Z, -Z, 0], [z9, z9, 0, 0]])
    torch.testing.assert_close(process_only_advantages(scores, R, mask, 2), only)
    torch.testing.assert_close(process_z(scores, mask, 2), only)


def test_pure_hand_worked():
    # r = 2p - 1: row 0 has steps p = 0.9, 0.4 -> r = 0.8, -0.2; row 1 one step p = 0.7 -> 0.4.
    # w = softmax(-r / 0.1) per rollout; A_t = sum of (w_i r_i - b len_i) over t's step and later.
    scores = torch.tensor([[0.9, 0.9, 0.4], [0.7, 0.7, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    R = torch.tensor([1.0, -1.0])
    w1 = 1 / (1 + math.exp(-10))  # softmax(-8, 2)[1]: the worst step takes almost all weight
    w0 = 1 - w1
    s0 = w0 * 0.8 + w1 * -0.2  # ~ min(0.8, -0.2)
    s1 = 0.4
    b0, b1 = s1 / 2, s0 / 3  # leave-one-out reward per token (the other rollout's sum / length)
    q00, q01 = w0 * 0.8 - b0 * 2, w1 * -0.2 - b0 * 1
    q10 = 0.4 - b1 * 2
    # verifiable reward v = (R + 1)/2 = (1, 0); RLOO: (+1, -1); times outcome_coef 0.1
    want = torch.tensor([[q00 + q01 + 0.1, q00 + q01 + 0.1, q01 + 0.1], [q10 - 0.1, q10 - 0.1, 0.0]])
    torch.testing.assert_close(pure_advantages(scores, R, mask, 2), want)


def test_estimators_share_one_signature():
    scores, R, mask, ids = small_group()
    options = dict(prior_mean=0.5, prior_std=0.289, normalization="prior", temperature=0.1, segment_ids=ids)
    assert set(ESTIMATORS) == {"prpo", "prm_avg", "prm_avg_prpo", "pure", "process_only"}
    for name, fn in ESTIMATORS.items():
        out = fn(process_scores=scores, outcome_rewards=R, action_mask=mask, n_samples_per_prompt=2, **options)
        assert out.shape == (2, 4) and bool(torch.isfinite(out).all()), name
        assert bool((out[mask == 0] == 0).all()), name


def test_bad_input_is_named():
    scores, R, mask, _ = small_group()
    with pytest.raises(ValueError, match="whole groups"):
        prpo_advantages(scores, R, mask, 3)
    with pytest.raises(ValueError, match="normalization"):
        prpo_advantages(scores, R, mask, 2, normalization="batch")
    with pytest.raises(ValueError, match="n_samples_per_prompt >= 2"):
        prm_avg_advantages(scores, R, mask, 1)
    with pytest.raises(ValueError, match="outcome rewards"):
        prpo_advantages(scores, R[:1], mask, 1)


# ── loop references over random batches ──


def random_batch(rng, G, n, T):
    """Rows as lists of (start, end, score) segments, plus the padded tensors."""
    B = G * n
    rows, scores, ids, mask = [], torch.zeros(B, T), torch.full((B, T), -1), torch.zeros(B, T)
    for b in range(B):
        length = rng.choice([0, 1, rng.randint(1, T), T])
        cuts = sorted(rng.sample(range(1, length), min(rng.randint(0, 4), max(length - 1, 0))))
        bounds = [0] + cuts + [length]
        segs = [(s, e, rng.random()) for s, e in zip(bounds, bounds[1:]) if e > s]
        for i, (s, e, r) in enumerate(segs):
            scores[b, s:e], ids[b, s:e], mask[b, s:e] = r, i, 1
        rows.append(segs)
    R = [rng.choice([1.0, -1.0]) - rng.choice([0.0, rng.random()]) for _ in range(B)]
    return rows, scores, ids, mask, torch.tensor(R)


def ref_prpo(rows, R, n, T, normalization="prior", combine="prpo"):
    out = torch.zeros(len(rows), T)
    for g in range(0, len(rows), n):
        group = range(g, g + n)
        seg = [r for b in group for _, _, r in rows[b]]
        if normalization == "prior":
            mu, sd = 0.5, 0.289
        else:
            mu = sum(seg) / len(seg) if seg else 0.0
            var = sum((x - mu) ** 2 for x in seg) / (len(seg) - 1) if len(seg) > 1 else 0.0
            sd = math.sqrt(var) + 1e-9
        outcome = [float(R[b]) + (sum(r for *_, r in rows[b]) / len(rows[b]) if rows[b] else 0.0)
                   if combine == "prm_avg_prpo" else float(R[b]) for b in group]
        for b in group:
            beta = 0.0 if combine == "process_only" else outcome[b - g] - sum(outcome) / n
            for s, e, r in rows[b]:
                out[b, s:e] = (r - mu) / sd + beta
    return out


def ref_prm_avg(rows, R, n, T):
    out = torch.zeros(len(rows), T)
    for g in range(0, len(rows), n):
        rp = [float(R[b]) + (sum(r for *_, r in rows[b]) / len(rows[b]) if rows[b] else 0.0)
              for b in range(g, g + n)]
        mean = sum(rp) / n
        std = math.sqrt(sum((x - mean) ** 2 for x in rp) / (n - 1))
        for b in range(g, g + n):
            for s, e, _ in rows[b]:
                out[b, s:e] = (rp[b - g] - mean) / (std + 1e-9)
    return out


def ref_pure(rows, R, n, T, temperature=0.1, coef=0.1):
    out = torch.zeros(len(rows), T)
    for g in range(0, len(rows), n):
        group = range(g, g + n)
        weighted, length = {}, {}
        for b in group:
            rs = [2 * p - 1 for *_, p in rows[b]]
            ws = [math.exp(-x / temperature) for x in rs]
            weighted[b] = [w / sum(ws) * x for w, x in zip(ws, rs)]
            length[b] = sum(e - s for s, e, _ in rows[b])
        v = {b: (float(R[b]) + 1) / 2 for b in group}
        for b in group:
            others_len = sum(length[o] for o in group if o != b)
            per_tok = sum(sum(weighted[o]) for o in group if o != b) / others_len if others_len else 0.0
            q = [wr - per_tok * (e - s) for wr, (s, e, _) in zip(weighted[b], rows[b])]
            loo = sum(v[o] for o in group if o != b) / (n - 1) if n > 1 else 0.0
            for i, (s, e, _) in enumerate(rows[b]):
                out[b, s:e] = sum(q[i:]) + coef * (v[b] - loo)
    return out


@pytest.mark.parametrize("seed", range(10))
def test_vectorised_equals_loop_reference(seed):
    rng = random.Random(seed)
    n = [1, 2, 4, 8][seed % 4]
    T = 30
    rows, scores, ids, mask, R = random_batch(rng, G=6, n=n, T=T)
    for with_ids in (ids, None):  # random scores: adjacent segments never tie
        kw = dict(segment_ids=with_ids)
        torch.testing.assert_close(prpo_advantages(scores, R, mask, n, **kw), ref_prpo(rows, R, n, T))
        torch.testing.assert_close(prpo_advantages(scores, R, mask, n, normalization="relative", **kw),
                                   ref_prpo(rows, R, n, T, "relative"))
        torch.testing.assert_close(prm_avg_prpo_advantages(scores, R, mask, n, **kw),
                                   ref_prpo(rows, R, n, T, combine="prm_avg_prpo"))
        torch.testing.assert_close(process_only_advantages(scores, R, mask, n, **kw),
                                   ref_prpo(rows, R, n, T, combine="process_only"))
        torch.testing.assert_close(pure_advantages(scores, R, mask, n, **kw), ref_pure(rows, R, n, T))
        if n > 1:
            torch.testing.assert_close(prm_avg_advantages(scores, R, mask, n, **kw), ref_prm_avg(rows, R, n, T))
