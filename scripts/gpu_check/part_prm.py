"""Part 3: the PRM scorer (hf backend) on the device, and bench_prm's 7B-shaped bf16 throughput.

(a) A tiny random PRM (Qwen2ForProcessRewardModel layout, prpo_openrlhf.testing.tiny_models)
scores bench_prm's random workload (problems + 6 segments per response) through ``PRMScorer``:
bf16 on the device vs fp32 on CPU (max |score diff|, bounded by 0.02), and fp32 on the device vs
fp32 on CPU (1e-4: the same model, only the device differs).
(b) ``benchmarks/bench_prm.py``'s GPU part (``measure_shape``): a random-weight model of
Qwen2.5-Math-PRM-7B's shape in bf16 scoring one training step's responses per PRM GPU (the paper's
step: 128 prompts x 8 = 1024 responses over 8 PRM GPUs = 128 responses, 256..4096 tokens,
log-uniform): tokens/s and TFLOP/s against the H200's bf16 peak. The smoke uses a tiny shape.
"""
from __future__ import annotations

import argparse
import tempfile

from common import ISSUE_H200_BF16_PEAK_TFLOPS, Part, load_benchmark

TINY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, vocab_size=1024, max_position_embeddings=512,
                  rope_theta=10000.0, rms_norm_eps=1e-6)


def scorer_vs_cpu(p: Part, bench) -> None:
    import torch

    from prpo_openrlhf.prm import PRMScorer
    from prpo_openrlhf.testing.tiny_models import write_tiny_prm

    dev = p.device
    with tempfile.TemporaryDirectory(prefix="gpu_check_prm_") as tmp:
        path = str(write_tiny_prm(tmp, max_position_embeddings=2048))
        n = 8 if p.smoke else 64
        problems, segments = bench.make_workload(n, 6, 64, 256 if p.smoke else 1024, seed=0)
        ref = PRMScorer(path, "hf", dtype="fp32", device="cpu").score(problems, segments)
        s16 = PRMScorer(path, "hf", dtype="bf16", device=dev)
        got16, stats = s16.score_with_stats(problems, segments)
        got32 = PRMScorer(path, "hf", dtype="fp32", device=dev).score(problems, segments)
    flat = lambda rows: torch.tensor([x for r in rows for x in r], dtype=torch.float64)  # noqa: E731
    d16 = float((flat(got16) - flat(ref)).abs().max())
    d32 = float((flat(got32) - flat(ref)).abs().max())
    p.figure("tiny_prm_responses", n)
    p.figure("tiny_prm_segments", stats.segments)
    p.figure("tiny_prm_max_abs_diff_bf16_device_vs_fp32_cpu", d16)
    p.figure("tiny_prm_max_abs_diff_fp32_device_vs_fp32_cpu", d32)
    p.check("every segment scored", stats.scored_segments == stats.segments == 6 * n,
            f"{stats.scored_segments}/{stats.segments}")
    p.check("bf16 on the device within 0.02 of fp32 on CPU", d16 <= 0.02, f"{d16:.2e}")
    p.check("fp32 on the device equals fp32 on CPU (<= 1e-4)", d32 <= 1e-4, f"{d32:.2e}")


def throughput(p: Part, bench) -> None:
    import torch

    shape = TINY_SHAPE if p.smoke else bench.QWEN25_MATH_PRM_7B
    args = argparse.Namespace(seed=0, gpu_responses=4 if p.smoke else 128, gpu_token_budget=32768,
                              repeats=1 if p.smoke else 2)
    r = bench.measure_shape(args, shape, p.device)
    name = torch.cuda.get_device_name() if torch.cuda.is_available() and not p.smoke else "cpu"
    p.figure("prm_shape", "tiny" if p.smoke else "Qwen2.5-Math-PRM-7B (random weights, bf16)")
    p.figure("prm_params_billion", round(r["total"] / 1e9, 3))
    p.figure("prm_responses", r["responses"])
    p.figure("prm_tokens", r["tokens"])
    p.figure("prm_seconds", round(r["seconds"], 3))
    p.figure("prm_tokens_per_s", round(r["tokens"] / r["seconds"]))
    p.figure("prm_tflops", round(r["tflops"], 2))
    if not p.smoke:
        peak = bench.gpu_peak(name)
        p.figure("prm_share_of_790_tflops_peak", round(r["tflops"] / ISSUE_H200_BF16_PEAK_TFLOPS, 3))
        if peak:
            p.figure("prm_share_of_bench_prm_table_peak", f"{r['tflops'] / peak:.3f} of {peak} ({name})")
        torch.cuda.synchronize()
        p.figure("prm_peak_memory_gib", round(torch.cuda.max_memory_allocated() / 2**30, 1))
    p.check("7B-shaped scoring completed with finite scores" if not p.smoke else "tiny-shape scoring completed",
            r["tflops"] > 0)


def body(p: Part) -> None:
    bench = load_benchmark("bench_prm")
    scorer_vs_cpu(p, bench)
    throughput(p, bench)


if __name__ == "__main__":
    raise SystemExit(Part("prm", __doc__.splitlines()[0]).run(body))
