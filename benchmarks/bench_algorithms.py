"""Batched entropy segmentation + PRPO advantages vs a per-sequence Python loop, side by side.

    python benchmarks/bench_algorithms.py [--batch 1024 --length 2048 --k 5 --min_gap 10]

Both paths compute, for one rollout batch, the segment of every token (Algorithm 1), the PRM
score broadcast to the tokens, and the PRPO advantage AF_t = z_t + beta. The loop calls the
per-sequence ``entropy_segments`` on each row and fills each row with torch slicing; the
batched path is ``segment_batch`` -> ``scores_to_tokens`` -> ``prpo_advantages``. Both run
on one CPU thread (wall and thread CPU time are both reported: the CPU time does not
count time spent waiting for a busy machine) and must give identical advantages.
Target: batched < 50 ms, >= 50x the loop.

A third line times the least any batched path must do with these outputs: write the (B, T)
int64 segment ids, gather the (B, T) token scores from them, and one masked elementwise pass
for the advantages. loop / floor bounds the speed-up that any batched path can reach.
"""
from __future__ import annotations

import argparse
import ctypes
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


def floor(mask, seg_scores):
    """The three (B, T) passes every batched path makes: ids out, scores gathered, masked result."""
    ids = torch.zeros(mask.shape, dtype=torch.long)
    process = seg_scores.gather(1, ids)
    return torch.where(mask, process, 0.0)


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
    ap.add_argument("--rounds", type=int, default=5, help="rounds of 1 loop run + 5 runs of each other path")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    B, T, k, m, n = args.batch, args.length, args.k, args.min_gap, args.n
    ent, mask, lengths, rewards, seg_scores = make_batch(B, T, k, n)

    fast = batched(ent, mask, rewards, seg_scores, k, m, n)  # warm-up
    slow = loop(ent, mask, lengths, rewards, seg_scores, k, m, n)
    print(f"B={B} T={T} k={k} m={m} n={n}; torch {torch.__version__}, 1 thread; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"identical advantages: {torch.equal(fast, slow)}")
    paths = {"batched (segment_batch + scores_to_tokens + prpo_advantages)":
             lambda: batched(ent, mask, rewards, seg_scores, k, m, n),
             "loop    (entropy_segments per row + row-wise PRPO)":
             lambda: loop(ent, mask, lengths, rewards, seg_scores, k, m, n),
             "floor   (ids written, scores gathered, one masked pass)": lambda: floor(mask, seg_scores)}
    report(paths, args.rounds, "default allocator")
    if keep_freed_memory():
        report(paths, args.rounds, "freed memory kept for reuse (no page faults on fresh tensors)")


def keep_freed_memory() -> bool:
    """Tell glibc malloc to keep freed blocks instead of returning them to the OS.

    By default every (B, T) tensor above the mmap threshold is fresh memory whose pages fault
    in on first touch; on this machine that is ~12k faults and ~20 ms per batched run, more
    than its arithmetic. The second report shows the arithmetic alone.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, (1 << 31) - 1))
    except (OSError, AttributeError):
        print("(not glibc: the allocator-reuse report is skipped)")
        return False


def report(paths: dict, rounds: int, allocator: str) -> None:
    """Interleaved rounds (1 loop run, 5 of each other path), so all see the same machine load."""
    times = {name: [] for name in paths}
    for _ in range(rounds):
        for name, fn in paths.items():
            times[name] += [timed(fn) for _ in range(1 if name.startswith("loop") else 5)]
    print(f"-- {allocator}")
    for name, t in times.items():
        wall, cpu = [x[0] for x in t], [x[1] for x in t]
        print(f"{name}: wall median {statistics.median(wall) * 1e3:7.1f} ms (min {min(wall) * 1e3:7.1f}), "
              f"CPU median {statistics.median(cpu) * 1e3:7.1f} ms (min {min(cpu) * 1e3:7.1f}); {len(t)} runs")
    fast, slow, least = times.values()
    ratio = lambda a, b, i: statistics.median([x[i] for x in a]) / statistics.median([x[i] for x in b])  # noqa: E731
    print(f"speed-up (median/median): wall {ratio(slow, fast, 0):.1f}x, CPU {ratio(slow, fast, 1):.1f}x; "
          "target: batched < 50 ms, >= 50x")
    print(f"loop / floor: wall {ratio(slow, least, 0):.1f}x, CPU {ratio(slow, least, 1):.1f}x "
          "(no batched path producing these outputs can beat this ratio)")


if __name__ == "__main__":
    main()
