"""Algorithm 1 by hand, the ablation splits, and the batched form against the per-row functions."""
import pytest
import torch

from prpo_openrlhf.algorithms.segmentation import (
    entropy_segments,
    newline_segments,
    random_keys,
    random_segments,
    scores_to_tokens,
    segment_batch,
    segment_ranges,
    uniform_segments,
)


def spikes(length, at, base=0.1):
    """Entropies of `base` everywhere except {position: value}."""
    h = [base] * length
    for pos, value in at.items():
        h[pos] = value
    return h


# ── Algorithm 1, by hand ──


def test_spec_two_pass_example():
    # k=3 anchors are the spikes [5, 12, 30]; m=10.
    # pass 1: keep 5; 12-5=7 < 10 drop; 30-5=25 keep -> [5, 30]
    # pass 2: last=0; 5-0=5 < 10 drop; 30-0=30 cut -> cuts [30]
    # (one greedy pass from start=0 would give [12, 30]: 5 dropped, 12-0 >= 10, 30-12 >= 10)
    h = spikes(45, {5: 3.0, 12: 2.0, 30: 1.0})
    assert entropy_segments(h, 0, 45, k=3, min_gap=10) == [(0, 30), (30, 45)]


def test_defaults_k5_m10_hand_worked():
    # spikes at 3, 20, 24, 41, 55 (top 5 of 60 tokens)
    # pass 1: 3 kept; 20-3=17 kept; 24-20=4 drop; 41-20=21 kept; 55-41=14 kept -> [3, 20, 41, 55]
    # pass 2: 3-0 < 10 drop; 20-0 cut; 41-20 cut; 55-41 cut -> cuts [20, 41, 55]
    h = spikes(60, {3: 5.0, 20: 4.0, 24: 3.5, 41: 3.0, 55: 2.5})
    assert entropy_segments(h, 0, 60) == [(0, 20), (20, 41), (41, 55), (55, 60)]


def test_coordinates_are_absolute():
    # The same response placed at [100, 160) of a longer entropy array: cuts shift by 100,
    # and spikes outside [start, end) are ignored.
    h = [9.0] * 100 + spikes(60, {3: 5.0, 20: 4.0, 24: 3.5, 41: 3.0, 55: 2.5}) + [9.0] * 7
    assert entropy_segments(h, 100, 160) == [(100, 120), (120, 141), (141, 155), (155, 160)]
    assert entropy_segments(torch.tensor(h), 100, 160) == entropy_segments(h, 100, 160)


def test_short_response_is_one_segment():
    # end - start < k + 1 -> [(start, end)] (lines 2-4), including an empty range.
    assert entropy_segments([5.0, 1, 9, 2, 7], 0, 5, k=5) == [(0, 5)]
    assert entropy_segments([1.0] * 10, 4, 4) == [(4, 4)]


def test_ties_go_to_the_earlier_position():
    # All equal: anchors are the first k positions 0..4; pass 1 keeps 0 only; pass 2 drops it
    # (0 - 0 < m): one segment.
    assert entropy_segments([1.0] * 40, 0, 40) == [(0, 40)]
    # Three equal spikes at 12, 25, 38 with k=2: the two earlier ones (12, 25) are anchors.
    h = spikes(50, {12: 2.0, 25: 2.0, 38: 2.0})
    assert entropy_segments(h, 0, 50, k=2, min_gap=10) == [(0, 12), (12, 25), (25, 50)]


def test_min_gap_zero_drops_the_empty_first_segment():
    # m=0: the spike at start becomes a cut; the (start, start) segment is sanitized away.
    h = spikes(10, {0: 5.0, 4: 4.0})
    assert entropy_segments(h, 0, 10, k=2, min_gap=0) == [(0, 4), (4, 10)]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="NaN"):
        entropy_segments([0.1] * 5 + [float("nan")] + [0.1] * 10, 0, 16)
    with pytest.raises(ValueError, match="k >= 0"):
        entropy_segments([0.1] * 20, 0, 20, k=-1)
    with pytest.raises(ValueError, match="outside"):
        entropy_segments([0.1] * 20, 0, 30)


# ── ablation splits ──


def test_uniform_split():
    # L=12, k=5: cuts at floor(i * 12 / 6) = 2, 4, 6, 8, 10
    assert uniform_segments(0, 12, k=5) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 12)]
    assert uniform_segments(3, 8, k=5) == [(3, 8)]


def test_random_split_spacing_and_seed():
    keys = random_keys(1, 500, seed=7)[0]
    segs = random_segments(10, 510, 5, 10, keys)
    cuts = [s for s, _ in segs[1:]]
    assert len(cuts) == 5
    assert cuts[0] - 10 >= 10 and all(b - a >= 10 for a, b in zip(cuts, cuts[1:])) and cuts[-1] < 510
    assert segs == random_segments(10, 510, 5, 10, random_keys(1, 500, seed=7)[0])
    assert segs != random_segments(10, 510, 5, 10, random_keys(1, 500, seed=8)[0])
    # 25 tokens fit only two cuts 10 apart after start (at >= 10 and >= 20).
    assert len(random_segments(0, 25, 5, 10, random_keys(1, 25, seed=0)[0])) == 3


def test_newline_split():
    flags = [0, 0, 1, 0, 0, 1, 0, 1]  # blank line ends at tokens 2, 5 and the last one
    assert newline_segments(flags, 0, 8) == [(0, 3), (3, 6), (6, 8)]


# ── batched form == per-row functions ──


def _random_case(gen, B, T, ties, left_aligned):
    lengths = torch.randint(0, T + 1, (B,), generator=gen)
    starts = torch.zeros(B, dtype=torch.long) if left_aligned else torch.randint(0, T + 1, (B,), generator=gen)
    starts = torch.minimum(starts, T - lengths)
    pos = torch.arange(T)
    mask = (pos >= starts[:, None]) & (pos < (starts + lengths)[:, None])
    if ties:  # few distinct values: many ties at the k-th place
        ent = torch.randint(0, 3, (B, T), generator=gen).float()
    else:
        ent = torch.rand(B, T, generator=gen) ** 3
    ent[~mask] = torch.randn(int((~mask).sum()), generator=gen)  # padding holds anything
    newline = torch.rand(B, T, generator=gen) < 0.04
    return ent, mask, starts, starts + lengths, newline


@pytest.mark.parametrize("method", ["entropy", "uniform", "random", "newline"])
def test_batched_equals_per_row(method):
    for seed in range(12):
        gen = torch.Generator().manual_seed(seed)
        T = [37, 200, 1024][seed % 3]
        k = [5, 1, 3, 0, 7][seed % 5]
        m = [10, 0, 1, 25][seed % 4]
        ent, mask, starts, ends, newline = _random_case(gen, 24, T, ties=seed % 2 == 1, left_aligned=seed % 3 == 0)
        ids = segment_batch(ent, mask, method=method, k=k, min_gap=m, seed=seed, newline_mask=newline)
        assert ids.dtype == torch.long and ids.shape == mask.shape
        assert bool((ids[~mask] == -1).all())
        keys = random_keys(24, T, seed)
        for b, got in enumerate(segment_ranges(ids)):
            s, e = int(starts[b]), int(ends[b])
            if method == "entropy":
                want = entropy_segments(ent[b], s, e, k, m)
            elif method == "uniform":
                want = uniform_segments(s, e, k)
            elif method == "random":
                want = random_segments(s, e, k, m, keys[b])
            else:
                want = newline_segments(newline[b], s, e)
            assert got == ([] if e == s else want), (method, seed, b)


def test_batched_rejects_bad_masks_and_methods():
    mask = torch.tensor([[1, 1, 0, 1, 0]]).bool()
    with pytest.raises(ValueError, match="row 0 is not one contiguous"):
        segment_batch(torch.rand(1, 5), mask)
    with pytest.raises(ValueError, match="unknown segmentation method"):
        segment_batch(torch.rand(1, 5), torch.ones(1, 5), method="sentences")
    with pytest.raises(ValueError, match="newline_mask"):
        segment_batch(torch.rand(1, 5), torch.ones(1, 5), method="newline")
    with pytest.raises(ValueError, match="NaN entropy in row 1"):
        bad = torch.rand(2, 30)
        bad[1, 7] = float("nan")
        segment_batch(bad, torch.ones(2, 30))


def test_scores_to_tokens_and_ranges():
    ids = torch.tensor([[0, 0, 1, 1, 1, -1], [-1, 0, 1, 2, -1, -1]])
    assert segment_ranges(ids) == [[(0, 2), (2, 5)], [(1, 2), (2, 3), (3, 4)]]
    want = torch.tensor([[0.2, 0.2, 0.9, 0.9, 0.9, 0.0], [0.0, 0.5, 0.6, 0.7, 0.0, 0.0]])
    assert torch.equal(scores_to_tokens([[0.2, 0.9], [0.5, 0.6, 0.7]], ids), want)
    padded = torch.tensor([[0.2, 0.9, 0.0], [0.5, 0.6, 0.7]])
    assert torch.equal(scores_to_tokens(padded, ids), want)
    with pytest.raises(ValueError, match="row 1 has 3 segments but 2 scores"):
        scores_to_tokens([[0.2, 0.9], [0.5, 0.6]], ids)


def test_scores_to_tokens_names_the_short_row_of_a_score_tensor():
    ids = torch.tensor([[0, 1, -1], [0, 1, 2]])
    with pytest.raises(ValueError, match="row 1 has 3 segments but 2 scores"):
        scores_to_tokens(torch.tensor([[0.1, 0.2], [0.3, 0.4]]), ids)
