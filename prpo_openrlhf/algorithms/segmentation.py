"""Cutting responses into segments for the PRM (PRPO_SPEC §2; paper Appendix B, Algorithm 1).

Per-sequence functions return ``[(s, e), ...]`` half-open token ranges covering ``[start, end)``;
a segment opens at its cut (the entropy spike token starts the next segment). ``segment_batch``
does the same for a padded (B, T) batch and returns per-token segment ids, -1 off the response;
it equals the per-sequence functions row by row (tests/algorithms/test_segmentation.py).
"""
from __future__ import annotations

import heapq
import math
from typing import Sequence

import torch

METHODS = ("entropy", "uniform", "random", "newline")


def _check(k: int, min_gap: int) -> None:
    if k < 0 or min_gap < 0:
        raise ValueError(f"segmentation needs k >= 0 and min_gap >= 0, got k={k}, min_gap={min_gap}")


def _values(entropies, start: int, end: int) -> list[float]:
    if start < 0 or end > len(entropies):
        raise ValueError(f"segment range [{start}, {end}) outside entropies of length {len(entropies)}")
    part = entropies[start:end]
    values = part.tolist() if hasattr(part, "tolist") else [float(v) for v in part]
    if any(math.isnan(v) for v in values):
        raise ValueError(f"NaN entropy in [{start}, {end}): the logits that produced it are broken")
    return values


def _from_cuts(cuts: Sequence[int], start: int, end: int) -> list[tuple[int, int]]:
    """Alg. 1 lines 20-24: consecutive segments between the cuts."""
    segments, prev = [], start
    for c in cuts:
        segments.append((prev, c))
        prev = c
    segments.append((prev, end))
    return segments


def _sanitize(segments, start: int, end: int) -> list[tuple[int, int]]:
    """Alg. 1 lines 25-44: clip to [start, end), drop empty segments, fill gaps."""
    sanitized, cur = [], start
    for s, e in segments:
        s = max(start, min(end, s))
        e = max(start, min(end, e))
        if e <= s:
            continue
        if s > cur:
            sanitized.append((cur, s))
        sanitized.append((s, e))
        cur = e
    if cur < end:
        sanitized.append((cur, end))
    return sanitized or [(start, end)]


def entropy_segments(entropies, start: int, end: int, k: int = 5, min_gap: int = 10) -> list[tuple[int, int]]:
    """Algorithm 1 of the paper, literally. ``entropies`` is indexed like start/end.

    Top-k entropy anchors in [start, end) (ties: earlier position), then two filter passes:
    pass 1 keeps an anchor at least ``min_gap`` after the previously kept anchor; pass 2 makes a
    kept anchor a cut if it is at least ``min_gap`` after the last cut (initially ``start``).
    Example (start=0, m=10): anchors [5, 12, 30] -> pass 1 [5, 30] -> pass 2 cuts [30].
    """
    _check(k, min_gap)
    if end - start < k + 1:  # lines 2-4
        return [(start, end)]
    values = _values(entropies, start, end)
    # lines 5-7. heapq.nlargest is sorted(..., reverse=True)[:k], which is stable: ties go to
    # the earlier position.
    anchors = sorted(start + i for i in heapq.nlargest(k, range(len(values)), key=values.__getitem__))
    filtered: list[int] = []  # lines 8-13
    for a in anchors:
        if not filtered or a - filtered[-1] >= min_gap:
            filtered.append(a)
    cuts, last_cut = [], start  # lines 14-19
    for a in filtered:
        if a - last_cut >= min_gap:
            cuts.append(a)
            last_cut = a
    return _sanitize(_from_cuts(cuts, start, end), start, end)


def uniform_segments(start: int, end: int, k: int = 5) -> list[tuple[int, int]]:
    """Ablation: ``k + 1`` equal parts, cut i at ``start + floor(i * L / (k + 1))``."""
    _check(k, 0)
    length = end - start
    if length < k + 1:
        return [(start, end)]
    return _from_cuts([start + i * length // (k + 1) for i in range(1, k + 1)], start, end)


def _random_plan(length: int, k: int, min_gap: int) -> tuple[int, int, int]:
    """(cuts that fit, free slots N, effective gap m') for the random split of one row."""
    gap = max(min_gap, 1)
    fit = min(k, (length - 1) // gap) if length > 0 else 0
    slots = length - gap - (fit - 1) * (gap - 1) if fit > 0 else 0
    return fit, slots, gap


def random_segments(start: int, end: int, k: int, min_gap: int, keys) -> list[tuple[int, int]]:
    """Ablation: up to ``k`` random cuts, each at least ``min_gap`` after the previous (and start).

    ``keys`` are uniform random numbers for this row (``random_keys``): the ``fit`` smallest of
    ``keys[:N]`` choose the free offsets y_1 < ... < y_fit, and cut i sits at
    ``start + m + y_i + (i - 1)(m - 1)``, which spaces the cuts by at least m. ``fit`` is k, or
    fewer when the response is too short for k such cuts.
    """
    _check(k, min_gap)
    fit, slots, gap = _random_plan(end - start, k, min_gap)
    if fit == 0:
        return [(start, end)]
    chosen = sorted(sorted(range(slots), key=lambda i: (float(keys[i]), i))[:fit])
    return _from_cuts([start + gap + y + i * (gap - 1) for i, y in enumerate(chosen)], start, end)


def random_keys(batch: int, length: int, seed: int) -> torch.Tensor:
    """(B, T) float64 uniform keys of the random split; float64 so that ties never decide."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.rand(batch, length, generator=gen, dtype=torch.float64)


def newline_segments(newline_flags, start: int, end: int) -> list[tuple[int, int]]:
    """The PRM's native split: a new segment after every token flagged as ending a blank line."""
    flags = newline_flags.tolist() if hasattr(newline_flags, "tolist") else newline_flags
    cuts = [p + 1 for p in range(start, end - 1) if flags[p]]
    return _from_cuts(cuts, start, end)


# ── batched form ──


def _row_ranges(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) start and end of each row's response; raises if a row's mask is not contiguous."""
    T = mask.shape[1]
    m8 = mask.view(torch.uint8)  # same bytes, no copy
    length = m8.sum(1, dtype=torch.int32).long()  # (an int32 sum of bytes: 3x a bool sum or count_nonzero on CPU)
    # OpenRLHF's action_mask is left-aligned: rows without a 0 -> 1 step are 1..1 0..0.
    if T < 2 or not bool((m8[:, 1:] > m8[:, :-1]).any()):
        return torch.zeros_like(length), length
    start = m8.argmax(1)  # first 1 (0 for an empty row)
    end = T - m8.flip(1).argmax(1)
    bad = (length > 0) & (end - start != length)
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        raise ValueError(f"action_mask row {row} is not one contiguous block of response tokens")
    return start, torch.where(length > 0, end, start)


def _ids_from_cuts(cuts: torch.Tensor, is_cut: torch.Tensor, start: torch.Tensor, end: torch.Tensor,
                   T: int) -> torch.Tensor:
    """(B, T) segment ids from (B, k) candidate cut positions, sorted where ``is_cut``.

    Each row is [-1 before start][0 until the first cut][1 ...]...[-1 from end]: one
    repeat_interleave writes the whole batch, with no pass over (B, T) per cut.
    """
    B = start.shape[0]
    col = lambda v: torch.full((B, 1), v, dtype=torch.long, device=start.device)  # noqa: E731
    # A candidate that is not a cut sits on the previous boundary: a zero-length run.
    at = torch.where(is_cut, cuts, start[:, None]).cummax(1).values if cuts.shape[1] else cuts
    bounds = torch.cat([col(0), start[:, None], at, end[:, None], col(T)], 1)
    values = torch.cat([col(-1), col(0), is_cut.long().cumsum(1), col(-1)], 1)
    ids = torch.repeat_interleave(values.flatten(), bounds.diff(1).flatten(), output_size=B * T)
    return ids.view(B, T)


def _scatter_rows(B: int, k: int, rows: torch.Tensor, cuts: torch.Tensor, is_cut: torch.Tensor,
                  start: torch.Tensor):
    """(B, k) cuts and flags for the whole batch from those of ``rows`` (others: no cut)."""
    if rows.numel() == B:
        return cuts, is_cut
    all_cuts = start[:, None].expand(B, k).clone()
    all_flags = torch.zeros(B, k, dtype=torch.bool, device=start.device)
    all_cuts[rows], all_flags[rows] = cuts, is_cut
    return all_cuts, all_flags


def _two_passes(anchors: torch.Tensor, start: torch.Tensor, min_gap: int) -> torch.Tensor:
    """(B', k) bool: which sorted anchors become cuts (Alg. 1 lines 8-19, over the k columns)."""
    k = anchors.shape[1]
    keep = torch.ones_like(anchors, dtype=torch.bool)
    last_kept = anchors[:, 0]
    for j in range(1, k):  # pass 1: the first anchor is always kept
        keep[:, j] = anchors[:, j] - last_kept >= min_gap
        last_kept = torch.where(keep[:, j], anchors[:, j], last_kept)
    cut = torch.zeros_like(keep)
    last_cut = start
    for j in range(k):  # pass 2
        cut[:, j] = keep[:, j] & (anchors[:, j] - last_cut >= min_gap)
        last_cut = torch.where(cut[:, j], anchors[:, j], last_cut)
    # A cut at `start` (only possible with min_gap 0) opens an empty segment that the
    # sanitizer drops: it must change no id.
    return cut & (anchors > start[:, None])


def _entropy_anchors(values: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """(B', k) sorted positions of each row's k highest entropies, ties to the earlier position.

    ``values`` is -inf off the response and every row has at least k + 1 response tokens.
    """
    top, pos = values.topk(k + 1, dim=1)
    anchors = pos[:, :k].sort(1).values
    # The top k positions are unique unless the (k+1)-th value equals the k-th (a tie inside
    # the response, or a -inf k-th value tied with the padding): take such ties left to right.
    tied = (top[:, k] == top[:, k - 1]).nonzero().squeeze(1)
    if tied.numel():
        v, m, kv = values[tied], mask[tied], top[tied, k - 1:k]
        gt = (v > kv) & m
        eq = (v == kv) & m
        pick = gt | (eq & (eq.cumsum(1) <= k - gt.sum(1, keepdim=True)))
        anchors[tied] = pick.nonzero()[:, 1].view(-1, k)
    return anchors


def _entropy_ids(entropies, mask, start, end, k: int, min_gap: int) -> torch.Tensor:
    B, T = mask.shape
    ent = torch.as_tensor(entropies, device=mask.device)
    if ent.shape != mask.shape:
        raise ValueError(f"entropies {tuple(ent.shape)} and action_mask {tuple(mask.shape)} differ in shape")
    if not bool(torch.isfinite(ent.sum())):  # cheap test first; padding may hold anything
        nan = torch.isnan(ent) & mask
        if bool(nan.any()):
            row = int(nan.any(1).nonzero()[0])
            raise ValueError(f"NaN entropy in row {row}: the logits that produced it are broken")
    rows = ((end - start) >= k + 1).nonzero().squeeze(1)
    if k == 0 or rows.numel() == 0:
        empty = torch.zeros(B, 0, dtype=torch.long, device=mask.device)
        return _ids_from_cuts(empty, empty.bool(), start, end, T)
    if rows.numel() == B:
        values, row_mask = torch.where(mask, ent, -math.inf), mask
    else:
        row_mask = mask[rows]
        values = torch.where(row_mask, ent[rows], -math.inf)
    anchors = _entropy_anchors(values, row_mask, k)
    is_cut = _two_passes(anchors, start[rows], min_gap)
    cuts, is_cut = _scatter_rows(B, k, rows, anchors, is_cut, start)
    return _ids_from_cuts(cuts, is_cut, start, end, T)


def _uniform_ids(mask, start, end, k: int) -> torch.Tensor:
    B, T = mask.shape
    length = end - start
    cuts = start[:, None] + torch.arange(1, k + 1, device=mask.device) * length[:, None] // (k + 1)
    is_cut = (length >= k + 1)[:, None].expand(B, k)
    return _ids_from_cuts(cuts, is_cut, start, end, T)


def _random_ids(mask, start, end, k: int, min_gap: int, seed: int) -> torch.Tensor:
    B, T = mask.shape
    gap = max(min_gap, 1)
    length = end - start
    fit = torch.clamp((length - 1) // gap, min=0).clamp(max=k)
    slots = length - gap - (fit - 1) * (gap - 1)
    kq = min(k, T)
    if kq == 0 or not bool((fit > 0).any()):
        empty = torch.zeros(B, 0, dtype=torch.long, device=mask.device)
        return _ids_from_cuts(empty, empty.bool(), start, end, T)
    pos = torch.arange(T, device=mask.device)
    keys = random_keys(B, T, seed).to(mask.device).masked_fill(pos >= slots[:, None], math.inf)
    smallest = keys.topk(kq, dim=1, largest=False).indices  # ascending keys
    used = pos[:kq] < fit[:, None]
    y = torch.where(used, smallest, T).sort(1).values  # the used offsets, ascending, come first
    cuts = start[:, None] + gap + y + pos[:kq] * (gap - 1)
    return _ids_from_cuts(cuts, used, start, end, T)


def _newline_ids(newline_mask, mask) -> torch.Tensor:
    if newline_mask is None:
        raise ValueError("method='newline' needs newline_mask (B, T): tokens that end a blank line")
    flags = torch.as_tensor(newline_mask, device=mask.device).bool()
    if flags.shape != mask.shape:
        raise ValueError(f"newline_mask {tuple(flags.shape)} and action_mask {tuple(mask.shape)} differ in shape")
    # float cumsum: fast, and exact for counts below 2**24
    marks = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    marks[:, 1:] = (flags[:, :-1] & mask[:, :-1] & mask[:, 1:]).float()
    return torch.where(mask, marks.cumsum(1).long(), -1)


def segment_batch(entropies, action_mask, method: str = "entropy", k: int = 5, min_gap: int = 10,
                  seed: int = 0, newline_mask=None) -> torch.Tensor:
    """(B, T) long segment ids (0, 1, ... along each response; -1 where action_mask is 0).

    entropies: (B, T) per-token entropies (read only by method="entropy"); action_mask: (B, T),
    one contiguous block of 1s per row. method: "entropy" (Algorithm 1), "uniform",
    "random" (reproducible from ``seed``: row b uses ``random_keys(B, T, seed)[b]``) or
    "newline" (a new segment after each token flagged in ``newline_mask`` (B, T)).
    """
    _check(k, min_gap)
    mask = torch.as_tensor(action_mask).bool()
    if mask.dim() != 2:
        raise ValueError(f"action_mask must be (B, T), got shape {tuple(mask.shape)}")
    start, end = _row_ranges(mask)
    if method == "entropy":
        return _entropy_ids(entropies, mask, start, end, k, min_gap)
    if method == "uniform":
        return _uniform_ids(mask, start, end, k)
    if method == "random":
        return _random_ids(mask, start, end, k, min_gap, seed)
    if method == "newline":
        return _newline_ids(newline_mask, mask)
    raise ValueError(f"unknown segmentation method {method!r}; choose one of {METHODS}")


# ── helpers for the PRM side ──


def segment_ranges(segment_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Per row, the ``(s, e)`` token range of each segment id 0, 1, ... of a (B, T) id tensor."""
    out = []
    for row in torch.as_tensor(segment_ids):
        pos = (row >= 0).nonzero().squeeze(1)
        if pos.numel() == 0:
            out.append([])
            continue
        ids = row[pos]
        starts = torch.cat([pos[:1], pos[1:][ids[1:] != ids[:-1]]]).tolist()
        out.append(list(zip(starts, starts[1:] + [int(pos[-1]) + 1])))
    return out


def scores_to_tokens(segment_scores, segment_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) float: each response token gets its segment's score; 0 off the response.

    segment_scores: a list of per-row score lists, or a (B, S) tensor (extra columns ignored).
    """
    ids = torch.as_tensor(segment_ids).long()
    if isinstance(segment_scores, torch.Tensor):
        table = segment_scores.float().to(ids.device)
        counts = [table.shape[1]] * table.shape[0]
    else:
        counts = [len(s) for s in segment_scores]
        table = torch.zeros(len(segment_scores), max(counts, default=0) or 1, device=ids.device)
        for b, s in enumerate(segment_scores):
            table[b, : len(s)] = torch.as_tensor(list(s), dtype=torch.float32)
    if table.shape[0] != ids.shape[0]:
        raise ValueError(f"{table.shape[0]} rows of scores for {ids.shape[0]} rows of segment ids")
    if ids.device.type != "cpu" or min(counts, default=0) < table.shape[1]:
        # Ragged rows (the table's width checks nothing), or an accelerator, where an index out
        # of range in gather is a device-side assert, not an error one can name.
        _check_counts(ids, counts)
    # Column 0 holds the 0 of off-response tokens (id -1).
    table = torch.cat([torch.zeros(table.shape[0], 1, device=ids.device), table], 1)
    try:
        return table.gather(1, ids + 1)  # its bound check is the width check, at no extra pass
    except (RuntimeError, IndexError):
        _check_counts(ids, counts)
        raise


def _check_counts(ids: torch.Tensor, counts: list[int]) -> None:
    """Raise naming the first row with more segment ids than scores."""
    if ids.numel() == 0 or int(ids.max()) < min(counts, default=0):  # one cheap pass when all is well
        return
    need = ids.amax(1) + 1
    short = (need > torch.tensor(counts, device=ids.device)).nonzero()
    if short.numel():
        b = int(short[0])
        raise ValueError(f"row {b} has {int(need[b])} segments but {counts[b]} scores")
