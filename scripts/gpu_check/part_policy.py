"""Part 2: the shipped policy's PRPO training step on the device, against the CPU's.

The device image has neither vLLM nor Ray (docs/testing.md), so this part runs on the device
what OpenRLHF's DeepSpeed actor runs there, on the package's shipped policy and the embedded
task, with HF ``generate`` in place of the vLLM engine:
- held-out greedy accuracy (128 problems; smoke: 8) on the device and on CPU: the same weights
  decode alike, within 5 points;
- one PRPO experience made on CPU: 16 prompts x 8 samples (smoke: 4 x 4), graded by the
  math-verify grader, cut at entropy spikes, scored by the exact verifier, PRPO advantages;
- on those identical inputs, the first micro-batch's loss (OpenRLHF's ``PolicyLoss`` + k3 KL to
  the start policy): fp32 on the device vs CPU <= 1e-4, the policy in bf16 on the device (the
  dtype of the DeepSpeed actors) vs fp32 CPU <= 0.05;
- STEPS AdamW updates on that experience on the device (fp32): every loss finite, the policy
  changed, the median seconds per update.
"""
from __future__ import annotations

import copy
import math
import statistics
import time

from common import Part

STEPS_GPU, STEPS_SMOKE = 20, 2
LR, CLIP, KL_COEF = 2e-4, 0.2, 0.001


def experience(policy, tok, task, n_prompts: int, n: int) -> dict:
    """One step's samples from the CPU policy and everything the loss needs, on CPU."""
    import torch

    from prpo_openrlhf.algorithms.advantages import prpo_advantages
    from prpo_openrlhf.algorithms.rewards import grade_batch
    from prpo_openrlhf.algorithms.segmentation import scores_to_tokens, segment_batch
    from prpo_openrlhf.local.sampling import (HFSampler, chat_prompt_ids, decode_segments, pad_responses,
                                              response_entropies)
    from prpo_openrlhf.local.verifier import ExactProcessVerifier

    problems = task.train_batch(n_prompts, "gpu-check")
    prompts = chat_prompt_ids(tok, [p.text for p in problems])
    samples = HFSampler(policy, tok).generate(prompts, n, 1.0, 64, seed=0)
    texts = [p.text for p in problems for _ in range(n)]
    ok = grade_batch([s.text for s in samples], [str(p.answer) for p in problems for _ in range(n)])
    ent, mask = response_entropies(policy, samples, tok.pad_token_id)
    seg_ids = segment_batch(ent, mask, "entropy", 5, 10, 0)
    segs = decode_segments(tok, samples, seg_ids)
    proc = scores_to_tokens(ExactProcessVerifier("strict").score(texts, segs), seg_ids)
    rewards = torch.tensor([1.0 if x else -1.0 for x in ok])
    adv = prpo_advantages(proc, rewards, mask, n, segment_ids=seg_ids)
    batch = pad_responses(samples, tok.pad_token_id)
    with torch.no_grad():
        old = token_logprobs(policy, batch)
    return {"batch": batch, "adv": adv, "old_lp": old, "accuracy": sum(ok) / len(ok)}


def token_logprobs(model, batch):
    """(B, T) log pi(response token) of ``model`` on the padded ``batch`` (its device)."""
    from prpo_openrlhf.local.sampling import response_logits

    ids, attn, index, tokens, mask = batch
    logits = response_logits(model, ids, attn, index)
    return logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1) * mask


def loss(model, exp, device: str):
    """OpenRLHF's clipped surrogate + k3 KL to the start policy, on the whole experience."""
    from openrlhf.models.loss import PolicyLoss
    from openrlhf.models.utils import compute_approx_kl

    batch = tuple(t.to(device) for t in exp["batch"])
    mask = batch[4]
    n_tok = mask.sum().clamp(min=1)
    lp = token_logprobs(model, batch)
    old, adv = exp["old_lp"].to(device), exp["adv"].to(device)
    pg, *_ = PolicyLoss(clip_eps_low=CLIP, clip_eps_high=CLIP)(lp, old, adv, mask, batch_num_tokens=n_tok)
    kl = compute_approx_kl(lp, old, kl_estimator="k3")  # the start policy is the reference here
    return pg + KL_COEF * (kl * mask).sum() / n_tok


def body(p: Part) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prpo_openrlhf.local.sampling import HFSampler
    from prpo_openrlhf.local.task import ArithmeticTask
    from prpo_openrlhf.local.warmup import WarmupConfig, heldout_accuracy, shipped_policy

    torch.set_num_threads(1)  # the CPU side: the tiny policy's matrices are too small to split
    dev = p.device
    cfg = WarmupConfig()
    found = shipped_policy(cfg)
    if not p.check("the package ships the policy", found is not None, f"no shipped policy {cfg.key()}"):
        return
    path = found[0]
    tok = AutoTokenizer.from_pretrained(path)
    cpu = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    task = ArithmeticTask(cfg.task, seed=cfg.task_seed)
    n_eval = 8 if p.smoke else 128
    greedy = {d: heldout_accuracy(HFSampler(copy.deepcopy(cpu).to(d), tok), tok, task, n_eval, greedy=True)["accuracy"]
              for d in ("cpu", dev)}
    p.figure("cpu_heldout_greedy", greedy["cpu"])
    p.figure("device_heldout_greedy", greedy[dev])
    p.check("held-out greedy accuracy: device within 5 points of CPU", abs(greedy[dev] - greedy["cpu"]) <= 0.05,
            f"device {greedy[dev]:.3f}, cpu {greedy['cpu']:.3f} on {n_eval} problems")

    exp = experience(cpu, tok, task, *((4, 4) if p.smoke else (16, 8)))
    p.figure("experience_accuracy", exp["accuracy"])
    first = {}
    for key, device, dtype in (("cpu_fp32", "cpu", torch.float32), ("device_fp32", dev, torch.float32),
                               ("device_bf16", dev, torch.bfloat16)):
        with torch.no_grad():
            first[key] = float(loss(copy.deepcopy(cpu).to(device=device, dtype=dtype), exp, device))
        p.figure(f"same_inputs_first_loss_{key}", first[key])
    d32, d16 = abs(first["device_fp32"] - first["cpu_fp32"]), abs(first["device_bf16"] - first["cpu_fp32"])
    p.check("same inputs: first loss fp32 device vs CPU (<= 1e-4)", d32 <= 1e-4, f"{d32:.2e}")
    p.check("same inputs: first loss bf16 device vs fp32 CPU (<= 0.05)", d16 <= 0.05, f"{d16:.2e}")

    model = copy.deepcopy(cpu).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, eps=1e-8, weight_decay=0.0)
    losses, seconds = [], []
    for _ in range(STEPS_SMOKE if p.smoke else STEPS_GPU):
        p.sync()
        t0 = time.perf_counter()
        value = loss(model, exp, dev)
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        p.sync()
        seconds.append(time.perf_counter() - t0)
        losses.append(float(value))
    change = max(float((a.detach().cpu() - b).abs().max()) for a, b in zip(model.parameters(), cpu.parameters()))
    p.figure("device_losses", [round(x, 5) for x in losses])
    p.figure("device_update_seconds_median", round(statistics.median(seconds), 4))
    p.figure("device_max_weight_change", change)
    p.check("device updates: every loss finite", all(math.isfinite(x) for x in losses), f"{losses}")
    p.check("device updates: the policy changed", math.isfinite(change) and change > 0, f"max |w - w0| {change:.2e}")


if __name__ == "__main__":
    raise SystemExit(Part("policy", __doc__.splitlines()[0]).run(body))
