"""Batched entropy segmentation + PRPO advantages vs a per-sequence Python loop, side by side.

    python benchmarks/bench_algorithms.py [--batch 1024 --length 2048 --k 5 --min_gap 10]

Both paths compute, for one rollout batch, the segment of every token (Algorithm 1), the PRM
score broadcast to the tokens, and the PRPO advantage AF_t = z_t + beta. The loop calls the
per-sequence ``entropy_segments`` on each row and fills each row with torch slicing; the
batched path is ``segment_batch`` -> ``scores_to_tokens`` -> ``prpo_advantages``. Both run
on one CPU thread (wall and thread CPU time are both reported: the CPU time does not
count time spent waiting for a busy machine) and must give identical advantages.
Target: batched < 50 ms, >= 50x the loop.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from prpo_openrlhf.algorithms.advantages import prpo_advantages
from prpo_openrlhf.algorithms.segmentation import entropy_segments, scores_to_tokens, segment_batch


def make_batch(B: int, T: int, k: int, n: int, seed: int = 0):
    """Right-padded responses of random length; spiky entropies (mostly low, a few high)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(T // 16, T + 1, (B,), generator=g)
    mask = torch.arange(T) < lengths[:, None]
    entropies = torch.rand(B, T, generator=g) ** 4 * 6.0
    rewards = torch.randint(0, 2, (B,), generator=g).float() * 2 - 1
    seg_scores = torch.rand(B, k + 1, generator=g)  # at most k + 1 segments per response
    return entropies, mask, lengths, rewards, seg_scores


def batched(entropies, mask, rewards, seg_scores, k, m, n):
    ids = segment_batch(entropies, mask, method="entropy", k=k, min_gap=m)
    process = scores_to_tokens(seg_scores, ids)
    return prpo_advantages(process, rewards, mask, n)


def loop(entropies, mask, lengths, rewards, seg_scores, k, m, n, prior=(0.5, 0.289)):
    B, T = entropies.shape
    adv = torch.zeros(B, T)
    beta = [0.0] * B
    for g0 in range(0, B, n):
        group = rewards[g0:g0 + n]
        for b in range(g0, g0 + n):
            beta[b] = float(rewards[b] - group.mean())
    for b in range(B):
        L = int(lengths[b])
        process = torch.zeros(L)
        for i, (s, e) in enumerate(entropy_segments(entropies[b], 0, L, k, m)):
            process[s:e] = seg_scores[b, i]
        adv[b, :L] = (process - prior[0]) / prior[1] + beta[b]
    return adv


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this thread): CPU time is what one core spends on it,
    whatever else the machine is running."""
    w0, c0 = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - w0, time.thread_time() - c0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--length", type=int, default=2048)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--min_gap", type=int, default=10)
    ap.add_argument("--n", type=int, default=8, help="rollouts per prompt")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of 1 loop run + 5 batched runs")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    B, T, k, m, n = args.batch, args.length, args.k, args.min_gap, args.n
    ent, mask, lengths, rewards, seg_scores = make_batch(B, T, k, n)

    fast = batched(ent, mask, rewards, seg_scores, k, m, n)  # warm-up
    slow = loop(ent, mask, lengths, rewards, seg_scores, k, m, n)
    same = torch.equal(fast, slow)
    t_fast, t_slow = [], []
    for _ in range(args.rounds):  # interleaved, so both see the same machine load
        t_slow.append(timed(lambda: loop(ent, mask, lengths, rewards, seg_scores, k, m, n)))
        t_fast += [timed(lambda: batched(ent, mask, rewards, seg_scores, k, m, n)) for _ in range(5)]

    print(f"B={B} T={T} k={k} m={m} n={n}; torch {torch.__version__}, 1 thread; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"identical advantages: {same}")
    rows = [("batched (segment_batch + scores_to_tokens + prpo_advantages)", t_fast),
            ("loop    (entropy_segments per row + row-wise PRPO)", t_slow)]
    for name, t in rows:
        wall, cpu = [x[0] for x in t], [x[1] for x in t]
        print(f"{name}: wall median {statistics.median(wall) * 1e3:7.1f} ms (min {min(wall) * 1e3:7.1f}), "
              f"CPU median {statistics.median(cpu) * 1e3:7.1f} ms (min {min(cpu) * 1e3:7.1f}); {len(t)} runs")
    speed = [statistics.median([x[i] for x in t_slow]) / statistics.median([x[i] for x in t_fast]) for i in (0, 1)]
    print(f"speed-up (median/median): wall {speed[0]:.1f}x, CPU {speed[1]:.1f}x; target: batched < 50 ms, >= 50x")


if __name__ == "__main__":
    main()
