"""Part 4: entropy segmentation + PRPO advantages on a 1024 x 2048 batch on the device.

benchmarks/bench_algorithms.py's batch (spiky entropies, random lengths, k=5, m=10, groups of
8) through its batched path (segment_batch -> scores_to_tokens -> prpo_advantages): ms per batch
on the device (median of 20 after a warm-up, synchronised), and equality with the CPU result:
segment ids identical, advantages identical (bitwise is reported; the check allows 1e-6).
"""
from __future__ import annotations

import statistics
import time

from common import Part


def body(p: Part) -> None:
    import torch

    from prpo_openrlhf.algorithms.segmentation import segment_batch

    from common import load_benchmark

    bench = load_benchmark("bench_algorithms")
    B, T, k, m, n = (64, 256, 5, 10, 8) if p.smoke else (1024, 2048, 5, 10, 8)
    dev = p.device
    p.figure("batch", f"{B} x {T}, k={k}, min_gap={m}, n={n}")
    ent, mask, _, rewards, seg_scores = bench.make_batch(B, T, k, n)
    cpu_ids = segment_batch(ent, mask, method="entropy", k=k, min_gap=m)
    cpu_adv = bench.batched(ent, mask, rewards, seg_scores, k, m, n)
    d_ent, d_mask, d_rew, d_scores = (t.to(dev) for t in (ent, mask, rewards, seg_scores))
    d_adv = bench.batched(d_ent, d_mask, d_rew, d_scores, k, m, n)  # warm-up
    times = []
    for _ in range(5 if p.smoke else 20):
        p.sync()
        t0 = time.perf_counter()
        d_adv = bench.batched(d_ent, d_mask, d_rew, d_scores, k, m, n)
        p.sync()
        times.append(time.perf_counter() - t0)
    d_ids = segment_batch(d_ent, d_mask, method="entropy", k=k, min_gap=m)
    p.figure("ms_per_batch_device_median", round(statistics.median(times) * 1e3, 2))
    p.figure("ms_per_batch_device_min", round(min(times) * 1e3, 2))
    t0 = time.perf_counter()
    bench.batched(ent, mask, rewards, seg_scores, k, m, n)
    p.figure("ms_per_batch_cpu_once", round((time.perf_counter() - t0) * 1e3, 1))
    same_ids = torch.equal(d_ids.cpu(), cpu_ids)
    diff = float((d_adv.cpu() - cpu_adv).abs().max())
    p.figure("segment_ids_equal", same_ids)
    p.figure("advantages_bitwise_equal", torch.equal(d_adv.cpu(), cpu_adv))
    p.figure("advantages_max_abs_diff", diff)
    p.check("segment ids equal the CPU's", same_ids)
    p.check("advantages equal the CPU's (max |diff| <= 1e-6)", diff <= 1e-6, f"max |diff| {diff:.2e}")
    p.check("advantages finite and nonzero", bool(torch.isfinite(d_adv).all()) and float(d_adv.abs().sum()) > 0)


if __name__ == "__main__":
    raise SystemExit(Part("advantages", __doc__.splitlines()[0]).run(body))
