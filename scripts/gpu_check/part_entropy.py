"""Part 5: the actor-side entropy (``--prpo.entropy_source actor``: ``logits_entropy``) in bf16.

Random final hidden states (N tokens, width 1536 as Qwen2.5-Math-1.5B) through a random output
layer of Qwen2.5's 151,936 tokens, each row's hidden state scaled so that the entropies spread
from nearly peaked to nearly flat. On the device: the logits in fp32 (TF32 off) and in bf16 (as a
bf16 actor produces them), ``logits_entropy`` of each. Figures: max |H_bf16 - H_fp32| (what bf16
logits cost the segmentation's entropies), ms per call. Checks: fp32 on the device equals an
fp64 CPU reference to 1e-3 on a subset of rows; the same bf16 logits give the same entropies on
the device and on the CPU (1e-4: the kernel, not the dtype); per row, |H_bf16 - H_fp32| stays within
twice its first-order bound max_i |dl_i| * E_p|l - E_p l| (dl = bf16 - fp32 logits) + 1e-4: the
difference is the rounding of the logits to bf16 and nothing else.
"""
from __future__ import annotations

import statistics
import time

from common import Part


def body(p: Part) -> None:
    import torch

    from prpo_openrlhf.rollout.entropy import logits_entropy

    dev = p.device
    N, d, V = (64, 128, 8192) if p.smoke else (4096, 1536, 151936)
    n_ref = min(N, 256)
    if dev == "cuda":  # fp32 means IEEE fp32 here, not TF32 (both are PyTorch's defaults; be explicit)
        torch.set_float32_matmul_precision("highest")
    g = torch.Generator().manual_seed(0)
    h = torch.randn(N, d, generator=g)
    h = h / h.norm(dim=1, keepdim=True) * torch.logspace(0, 1.3, N)[:, None]  # |h| 1..20: entropy spread
    w = torch.randn(V, d, generator=g)
    p.figure("shape", f"{N} tokens x hidden {d} -> vocabulary {V}")
    h_d, w_d = h.to(dev), w.to(dev)
    logits32 = h_d @ w_d.T
    logits16 = h_d.bfloat16() @ w_d.bfloat16().T
    e32, e16 = logits_entropy(logits32), logits_entropy(logits16)
    times = []
    for _ in range(3 if p.smoke else 10):
        p.sync()
        t0 = time.perf_counter()
        logits_entropy(logits16)
        p.sync()
        times.append(time.perf_counter() - t0)
    p.figure("ms_per_call_bf16_median", round(statistics.median(times) * 1e3, 2))
    p.figure("entropy_range_fp32", [round(float(e32.min()), 3), round(float(e32.max()), 3)])
    diff = float((e16 - e32).abs().max())
    p.figure("max_abs_diff_bf16_vs_fp32", diff)
    p.figure("mean_abs_diff_bf16_vs_fp32", float((e16 - e32).abs().mean()))
    ref = logits_entropy((h[:n_ref].double() @ w.double().T)).double()
    ref_diff = float((e32[:n_ref].double().cpu() - ref).abs().max())
    p.figure("max_abs_diff_fp32_vs_fp64_cpu", ref_diff)
    cpu16 = logits_entropy(logits16[:n_ref].cpu())
    kern_diff = float((e16[:n_ref].cpu() - cpu16).abs().max())
    p.figure("max_abs_diff_same_bf16_logits_device_vs_cpu", kern_diff)
    excess = 0.0  # max over rows of |H16 - H32| / (2 * first-order bound + 1e-4)
    for i in range(0, N, 256):
        l32, l16 = logits32[i: i + 256], logits16[i: i + 256].float()
        prob = torch.softmax(l32, -1)
        spread = (prob * (l32 - (prob * l32).sum(-1, keepdim=True)).abs()).sum(-1)
        bound = 2 * (l16 - l32).abs().amax(-1) * spread + 1e-4
        excess = max(excess, float(((e16[i: i + 256] - e32[i: i + 256]).abs() / bound).max()))
        del l32, l16, prob
    p.figure("max_diff_over_bound", round(excess, 3))
    del logits32, logits16
    p.check("finite entropies", bool(torch.isfinite(e32).all() and torch.isfinite(e16).all()))
    p.check("fp32 on the device equals fp64 on CPU (<= 1e-3)", ref_diff <= 1e-3, f"{ref_diff:.2e}")
    p.check("same bf16 logits: device equals CPU (<= 1e-4)", kern_diff <= 1e-4, f"{kern_diff:.2e}")
    p.check("bf16 vs fp32 within the rounding bound of the logits", excess <= 1.0,
            f"max |diff| {diff:.3e} nats; worst row at {excess:.2f} of its bound")


if __name__ == "__main__":
    raise SystemExit(Part("entropy", __doc__.splitlines()[0]).run(body))
