"""Part 2: ``prpo-local train`` with the HF rollout engine on the device and on CPU, 20 steps each.

Both runs: PRPO on the embedded arithmetic task (the warmed-up tiny policy, exact process
verifier), ``--local.engine hf``, 20 steps of 16 prompts x 8 rollouts, held-out evaluation at
steps 0, 10 and 20; they run side by side (the warm-up is built or copied first). Checks per run:
exit 0, a finite train record for every step, the held-out evaluation at the first and last step,
the learning curve and the saved policy, and the policy changed (max |w - w_warmup| > 0).

Across devices: prpo-local trains in fp32 on either device and samples with each device's own
generator, so the CLI runs' rollouts differ; their first-step losses are reported side by side
(both finite), and the step-0 greedy held-out accuracy, where both runs decode the same weights
greedily, must agree within 5 points. The loss path itself is compared on identical inputs: step
0's experience (rollouts, old/ref log-probs, advantages) made once on CPU, then the first
micro-batch's loss (OpenRLHF's PolicyLoss + k3 KL, as LocalTrainer.update) in fp32 on CPU, fp32
on the device (<= 1e-4 apart) and with the policy in bf16 on the device (the dtype of OpenRLHF's
DeepSpeed actors: <= 0.05 apart).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

from common import ROOT, Part

STEPS_GPU, STEPS_SMOKE = 20, 1


def train_flags(p: Part) -> list[str]:
    flags = ["--local.engine", "hf", "--local.no_progress", "--algo.advantage.estimator", "prpo"]
    if p.smoke:  # tiny policy, tiny steps: the same code path in seconds
        flags += ["--local.num_steps", str(STEPS_SMOKE), "--rollout.batch_size", "4",
                  "--rollout.n_samples_per_prompt", "4", "--train.batch_size", "16",
                  "--train.micro_batch_size", "16", "--rollout.max_new_tokens", "40", "--local.n_ops", "2,3",
                  "--local.eval_problems", "8", "--local.eval_samples", "2", "--eval.steps", str(STEPS_SMOKE),
                  "--ckpt.save_steps", "0", "--warmup.steps", "5", "--warmup.hidden_size", "64",
                  "--warmup.num_layers", "1"]
    else:
        flags += ["--local.num_steps", str(STEPS_GPU)]
    return flags


def config(p: Part, device: str, out: Path):
    from prpo_openrlhf.local.__main__ import build_parser
    from prpo_openrlhf.local.flags import config_from_args

    args = build_parser().parse_args(["train", *train_flags(p), "--local.device", device,
                                      "--ckpt.output_dir", str(out)])
    return config_from_args(args)


def prepare_warmup(p: Part) -> Path:
    """The warmed-up policy: shipped with the package (the default recipe), else in this part's
    PRPO_CACHE_DIR, carried or built here (CPU)."""
    from prpo_openrlhf.local.trainer import warmup_config
    from prpo_openrlhf.local.warmup import shipped_policy, warmed_up_policy

    cache = p.out / "prpo_cache"
    os.environ["PRPO_CACHE_DIR"] = str(cache)
    wcfg = warmup_config(config(p, "cpu", p.out / "unused"))
    carried = os.environ.get("GPU_CHECK_WARMUP_CACHE")
    src = Path(carried) / "warmup" / wcfg.key() if carried else None
    if shipped_policy(wcfg) is not None:
        p.figure("warmup", "shipped with the package")
    elif src is not None and (src / "warmup.json").exists():
        shutil.copytree(src, cache / "warmup" / wcfg.key(), dirs_exist_ok=True)
        p.figure("warmup", f"carried ({src})")
    else:
        p.figure("warmup", "built here (CPU)")
    path, info = warmed_up_policy(wcfg, progress=False)
    p.figure("warmup_heldout_greedy", info["heldout_greedy"]["accuracy"])
    return Path(path)


def launch(p: Part, device: str, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "prpo_openrlhf.local", "train", *train_flags(p), "--local.device", device,
           "--ckpt.output_dir", str(out)]
    log = open(p.out / f"train_{out.name}.log", "w")
    print(f"[local] {' '.join(cmd)}  (log: {log.name})", flush=True)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def max_weight_change(policy_dir: Path, warmup_dir: Path) -> float:
    from safetensors.torch import load_file

    a, b = load_file(str(policy_dir / "model.safetensors")), load_file(str(warmup_dir / "model.safetensors"))
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in b if k in a)


def check_run(p: Part, tag: str, out: Path, rc: int, warmup: Path, steps: int) -> dict:
    p.check(f"{tag}: prpo-local exited 0", rc == 0, f"exit {rc}; log train_{out.name}.log")
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] \
        if (out / "metrics.jsonl").exists() else []
    train = {r["step"]: r for r in recs if "train/loss" in r}
    evals = {r["step"]: r for r in recs if "eval/accuracy" in r}
    finite = all(math.isfinite(r["train/loss"]) for r in train.values())
    p.check(f"{tag}: a finite train record for each of {steps} steps", sorted(train) == list(range(steps)) and finite,
            f"steps {sorted(train)}")
    p.check(f"{tag}: held-out evaluation at steps 0 and {steps}", 0 in evals and steps in evals,
            f"evaluated at {sorted(evals)}")
    p.check(f"{tag}: learning curve and policy written",
            (out / "learning_curve.png").exists() and (out / "policy" / "model.safetensors").exists())
    change = max_weight_change(out / "policy", warmup) if (out / "policy" / "model.safetensors").exists() else 0.0
    p.check(f"{tag}: the policy changed", math.isfinite(change) and change > 0, f"max |w - w_warmup| {change:.2e}")
    first = train.get(0, {})
    summary = {"first_step_loss": first.get("train/loss"), "step_seconds_median": None,
               "max_weight_change": change}
    times = sorted(r["time/step"] for r in train.values() if "time/step" in r)
    if times:
        summary["step_seconds_median"] = round(times[len(times) // 2], 3)
    for s in (0, steps):
        if s in evals:
            summary[f"eval_greedy_step{s}"] = evals[s]["eval/accuracy"]
            summary[f"eval_sampled_step{s}"] = evals[s]["eval/sampled_accuracy"]
    for k, v in summary.items():
        p.figure(f"{tag}_{k}", v)
    return summary


def first_loss_same_inputs(p: Part, dev: str) -> None:
    """Step 0's experience made once on CPU; the first micro-batch's loss on CPU / device / bf16."""
    import copy

    import torch
    from openrlhf.models.utils import compute_approx_kl

    from prpo_openrlhf.local import experience as X
    from prpo_openrlhf.local.trainer import LocalTrainer

    cfg = config(p, "cpu", p.out / "same_inputs")
    trainer = LocalTrainer(cfg, log=lambda *a: None)
    exp, _ = trainer.make_experience(0)
    B = exp["batch"].tokens.shape[0]
    perm = torch.randperm(B, generator=torch.Generator().manual_seed(cfg.seed * 7919))
    rows = perm[: cfg.train_batch_size]
    mb = rows[: cfg.micro_batch_size]

    def loss_on(device: str, dtype) -> float:
        policy = copy.deepcopy(trainer.policy).to(device=device, dtype=dtype)
        batch = exp["batch"].to(device)
        n_tok = batch.action_mask[rows.to(device)].sum().clamp(min=1)
        part = batch.rows(mb.to(device))
        with torch.no_grad():
            lp, _ = X.token_logprobs(policy, part, cfg.temperature)
        lp = lp.float()
        idx = mb.to(device)
        pg, *_ = trainer.policy_loss(lp, exp["old_lp"].to(device)[idx], exp["adv"].to(device)[idx],
                                     part.action_mask, batch_num_tokens=n_tok)
        kl = compute_approx_kl(lp, exp["ref_lp"].to(device)[idx], kl_estimator=cfg.kl_estimator)
        return float(pg + cfg.kl_coef * (kl * part.action_mask).sum() / n_tok)

    cpu32 = loss_on("cpu", torch.float32)
    dev32 = loss_on(dev, torch.float32)
    dev16 = loss_on(dev, torch.bfloat16)
    p.figure("same_inputs_first_loss_cpu_fp32", cpu32)
    p.figure("same_inputs_first_loss_device_fp32", dev32)
    p.figure("same_inputs_first_loss_device_bf16", dev16)
    p.check("same inputs: first loss fp32 device vs CPU (<= 1e-4)", abs(dev32 - cpu32) <= 1e-4,
            f"{abs(dev32 - cpu32):.2e}")
    p.check("same inputs: first loss bf16 device vs fp32 CPU (<= 0.05)", abs(dev16 - cpu32) <= 0.05,
            f"{abs(dev16 - cpu32):.2e}")


def body(p: Part) -> None:
    if p.smoke:  # four processes grade here (warm-up, two runs, same inputs): one worker each on 2 cores
        os.environ.setdefault("PRPO_GRADER_WORKERS", "1")
    dev = p.device
    steps = STEPS_SMOKE if p.smoke else STEPS_GPU
    warmup = prepare_warmup(p)
    runs = {"device": p.out / "run_device", "cpu": p.out / "run_cpu"}
    for d in runs.values():
        shutil.rmtree(d, ignore_errors=True)
    procs = {"device": launch(p, dev, runs["device"]), "cpu": launch(p, "cpu", runs["cpu"])}
    try:
        first_loss_same_inputs(p, dev)  # while the two runs go on
    finally:
        rcs = {tag: proc.wait() for tag, proc in procs.items()}
    got = {tag: check_run(p, tag, runs[tag], rcs[tag], warmup, steps) for tag in runs}
    l_dev, l_cpu = got["device"]["first_step_loss"], got["cpu"]["first_step_loss"]
    p.check("first-step losses of both runs finite",
            l_dev is not None and l_cpu is not None and math.isfinite(l_dev) and math.isfinite(l_cpu),
            f"device {l_dev}, cpu {l_cpu} (different rollouts: each device samples with its own generator)")
    g_dev, g_cpu = got["device"].get("eval_greedy_step0"), got["cpu"].get("eval_greedy_step0")
    if g_dev is not None and g_cpu is not None:
        p.check("step-0 greedy held-out accuracy: device within 5 points of CPU", abs(g_dev - g_cpu) <= 0.05,
                f"device {g_dev:.3f}, cpu {g_cpu:.3f}")


if __name__ == "__main__":
    raise SystemExit(Part("local", __doc__.splitlines()[0]).run(body))
