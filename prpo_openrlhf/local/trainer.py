"""The single-machine PRPO loop: one process, CPU or one GPU.

Per step: prompts -> rollouts (HF generate or in-process vLLM, given the newest weights) ->
outcome rewards (math-verify grader) -> per-token entropies (vLLM plugin or the log-prob pass)
-> segments -> process scores (exact verifier or a PRM) -> advantages (any estimator) ->
OpenRLHF's clipped surrogate (``PolicyLoss``) + KL loss to the reference (``compute_approx_kl``,
k3) -> AdamW step. Writes ``metrics.jsonl``, ``learning_curve.png`` and a resumable checkpoint
into the run directory, and the same metrics to TensorBoard / W&B when asked (``tracking.py``).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import random
import time
from pathlib import Path

import torch

from prpo_openrlhf.fileio import naming_a_full_disk, replace_atomically
from prpo_openrlhf.local import experience as X
from prpo_openrlhf.local import runlog
from prpo_openrlhf.local.config import TrainConfig, UsageError, check, diff, lr_factor
from prpo_openrlhf.local.flags import flag_of
from prpo_openrlhf.local.rollout import PAPER_SYSTEM_PROMPT, HFRollout, VLLMRollout, chat_prompt_ids
from prpo_openrlhf.local.task import ArithmeticTask
from prpo_openrlhf.local.tracking import Trackers, TrackingConfig
from prpo_openrlhf.local.warmup import WarmupConfig, heldout_accuracy, warmed_up_policy


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def warmup_config(cfg: TrainConfig) -> WarmupConfig:
    """The embedded policy's warm-up for a run's --warmup.* settings, on the run's task
    (--local.n_ops): the held-out set is a function of the task, so a warm-up on another task
    would neither be kept off the RL held-out problems nor report a comparable start."""
    return WarmupConfig(task=cfg.task, steps=cfg.warmup_steps, p_err=cfg.warmup_p_err,
                        hidden_size=cfg.warmup_hidden_size, num_layers=cfg.warmup_num_layers,
                        task_seed=cfg.task_seed)


def set_threads(cfg: TrainConfig, device: torch.device) -> None:
    """One thread for the embedded policy on CPU: its 128-wide matrices are too small to split,
    and with two threads a step runs ~10x slower as soon as another process holds one core."""
    if device.type != "cpu":
        return
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    elif cfg.model is None:
        torch.set_num_threads(1)


def default_engine(device: torch.device) -> str:
    """The faster engine where it was measured (docs/local.md, benchmarks/bench_local.py)."""
    return "hf" if device.type == "cpu" else "vllm"


class LocalTrainer:
    def __init__(self, cfg: TrainConfig, log=print, tracking: TrackingConfig | None = None):
        check(cfg)
        self.cfg, self.log = cfg, log
        self.trackers = Trackers(tracking)  # fails here, before any loading, if they cannot start
        self.device = resolve_device(cfg.device)
        set_threads(cfg, self.device)
        self.engine_name = cfg.engine if cfg.engine != "auto" else default_engine(self.device)
        if cfg.entropy_source == "vllm" and self.engine_name != "vllm":
            raise UsageError(f"{flag_of('entropy_source')} vllm needs vLLM rollouts: add {flag_of('engine')} vllm "
                             f"(auto picks {self.engine_name} on {self.device.type})")
        self.out = Path(cfg.output_dir or f"runs/prpo-local/{cfg.estimator}-{time.strftime('%Y%m%d-%H%M%S')}")
        self._check_output_dir()
        from prpo_openrlhf.algorithms.rewards import start_pool

        start_pool()  # grader workers import SymPy in the background while models load
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.task = ArithmeticTask(cfg.task, seed=cfg.task_seed)
        self.model_path, self.warmup_info = self._policy_path()
        self._load_models()
        self.scorer = self._scorer()
        self.engine = self._engine()
        self.entropy_source = self._entropy_source()
        from openrlhf.models.loss import PolicyLoss

        self.policy_loss = PolicyLoss(clip_eps_low=cfg.eps_clip, clip_eps_high=cfg.eps_clip)
        self.start_step = 0
        if cfg.resume:
            self._load_checkpoint()

    # ---- set-up ---------------------------------------------------------------------------

    def _check_output_dir(self) -> None:
        ckpt = self.out / runlog.CKPT
        if self.cfg.resume and not ckpt.exists():
            raise UsageError(f"{flag_of('resume')}: no checkpoint at {ckpt}; "
                                    f"point {flag_of('output_dir')} at a run directory")
        if not self.cfg.resume and (ckpt.exists() or (self.out / "metrics.jsonl").exists()):
            raise UsageError(f"{self.out} already holds a run; pass {flag_of('resume')} to continue it "
                                  f"or choose another {flag_of('output_dir')}")
        self.out.mkdir(parents=True, exist_ok=True)

    def _policy_path(self):
        if self.cfg.model is not None:
            return self.cfg.model, None
        return warmed_up_policy(warmup_config(self.cfg), progress=self.cfg.progress, log=self.log)

    def _load_models(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(self.model_path)
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.policy = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32).to(self.device)
        self.ref = copy.deepcopy(self.policy).eval().requires_grad_(False)
        self.policy.train()
        # OpenRLHF's actor defaults: AdamW, betas (0.9, 0.95), no weight decay.
        self.opt = torch.optim.AdamW(self.policy.parameters(), lr=self.cfg.lr, betas=(0.9, 0.95),
                                     eps=self.cfg.adam_eps, weight_decay=0.0)
        sp = self.cfg.system_prompt
        self.system_prompt = (None if self.cfg.model is None else PAPER_SYSTEM_PROMPT) if sp == "auto" else \
            (None if sp == "none" else sp)

    def _scorer(self):
        if self.cfg.prm == "synthetic":
            from prpo_openrlhf.local.verifier import ExactProcessVerifier

            return ExactProcessVerifier(self.cfg.verifier_mode)
        from prpo_openrlhf.prm.scorer import PRMScorer

        return PRMScorer(self.cfg.prm, backend=self.cfg.prm_backend)

    def _engine(self):
        if self.engine_name == "hf":
            return HFRollout(self.policy, self.tok)
        max_len = self.policy.config.max_position_embeddings
        want = self.cfg.entropy_source in ("auto", "vllm")
        eng = VLLMRollout(self.model_path, self.tok, max_model_len=min(max_len, 4096), seed=self.cfg.seed,
                          want_entropy=want, device=self.device.type)
        self.log(f"vLLM engine started in {eng.start_seconds:.1f} s")
        return eng

    def _entropy_source(self) -> str:
        src = self.cfg.entropy_source
        if src == "auto":
            src = "vllm" if self.engine.name == "vllm" else "actor"
        return src

    # ---- one step -------------------------------------------------------------------------

    def _rollouts(self, step: int):
        problems = self.task.train_batch(self.cfg.prompts_per_step, stream=f"rl-{step}")
        prompts = chat_prompt_ids(self.tok, [p.text for p in problems], self.system_prompt)
        self.engine.sync(self.policy)
        samples = self.engine.generate(prompts, self.cfg.n_samples_per_prompt, self.cfg.temperature,
                                       self.cfg.max_new_tokens, seed=self.cfg.seed * 1_000_003 + step)
        n = self.cfg.n_samples_per_prompt
        return [p for p in problems for _ in range(n)], samples

    def _process_scores(self, problems, samples, entropies, mask, step):
        """Per-token scores (B, T) for the estimator (with --prm.noise.*: the noisy ones), segment
        ids (B, T), the exact per-segment scores of the batch, and the noise's stats (or None)."""
        from prpo_openrlhf.algorithms.segmentation import scores_to_tokens, segment_batch, segment_ranges

        cfg = self.cfg
        nl = X.newline_mask(self.tok, samples, mask.shape[1]) if cfg.split == "newline" else None
        seg_ids = segment_batch(entropies, mask, cfg.split, cfg.k, cfg.min_gap, cfg.split_seed + step, nl)
        texts = X.segment_texts(self.tok, samples, segment_ranges(seg_ids))
        scores = self.scorer.score([p.text for p in problems], texts)
        if not cfg.prm_noise:
            return scores_to_tokens(scores, seg_ids), seg_ids, scores, None
        from prpo_openrlhf.local.verifier import add_score_noise

        noisy, noise = add_score_noise(scores, flip=cfg.prm_noise_flip, jitter=cfg.prm_noise_jitter,
                                       seed=cfg.prm_noise_seed, step=step)
        return scores_to_tokens(noisy, seg_ids), seg_ids, scores, noise

    def make_experience(self, step: int) -> tuple[dict, dict]:
        from prpo_openrlhf.algorithms.rewards import outcome_rewards

        cfg, t0 = self.cfg, time.monotonic()
        problems, samples = self._rollouts(step)
        t_roll = time.monotonic() - t0
        batch = X.make_batch(samples, self.tok.pad_token_id).to(self.device)
        mask = batch.action_mask
        want_ent = self.entropy_source == "actor" or X.entropies_from_samples(samples, 1) is None
        if want_ent and self.entropy_source == "vllm":  # plugin not active: say so once, go on
            self.log("vLLM returned no token entropies (is the prpo entropy plugin installed for this vLLM?); "
                     f"using the log-prob pass instead ({flag_of('entropy_source')} actor)")
            self.entropy_source = "actor"
        old_lp, ent = X.batched_logprobs(self.policy, batch, cfg.temperature, cfg.micro_batch_size, want_ent)
        ref_lp, _ = X.batched_logprobs(self.ref, batch, cfg.temperature, cfg.micro_batch_size, False)
        if not want_ent:
            ent = X.entropies_from_samples(samples, mask.shape[1]).to(self.device)
        lengths = [len(s.response_ids) for s in samples]
        rewards, grades = outcome_rewards([s.text for s in samples], [str(p.answer) for p in problems], lengths,
                                          timeout_s=cfg.grader_timeout, length_threshold=cfg.length_penalty_threshold,
                                          length_scale=cfg.length_penalty_scale)
        t1 = time.monotonic()
        proc, seg_ids, seg_scores, noise = None, None, None, None
        if cfg.needs_process or cfg.prm == "synthetic":  # the verifier is cheap: log it for every method
            proc, seg_ids, seg_scores, noise = self._process_scores(problems, samples, ent.cpu(), mask.cpu(), step)
        t_score = time.monotonic() - t1
        adv = X.advantages(cfg.estimator, proc.to(self.device) if proc is not None else None,
                           rewards.to(self.device), mask, cfg.n_samples_per_prompt,
                           seg_ids.to(self.device) if seg_ids is not None else None, prior_mean=cfg.prior_mean,
                           prior_std=cfg.prior_std, normalization=cfg.normalization,
                           pure_temperature=cfg.pure_temperature)
        exp = {"batch": batch, "old_lp": old_lp, "ref_lp": ref_lp, "adv": adv}
        stats = {
            "train/accuracy": sum(grades) / len(grades), "train/reward": rewards.mean().item(),
            "train/response_length": sum(lengths) / len(lengths),
            "train/entropy": X.masked_mean(ent, mask), "train/advantage_mean": X.masked_mean(adv, mask),
            "train/advantage_abs": X.masked_mean(adv.abs(), mask), "time/rollout": t_roll, "time/score": t_score,
        }
        if seg_scores is not None:
            flat = [s for row in seg_scores for s in row]
            stats["train/process_score"] = sum(flat) / max(len(flat), 1)
            stats["train/segments"] = len(flat) / len(seg_scores)
        if noise is not None:  # train/process_score stays the exact one: the policy's real step accuracy
            stats.update({"train/process_score_noisy": noise["mean"], "train/prm_noise_flipped": noise["flipped"],
                          "train/prm_noise_jitter": noise["jitter_abs"]})
        return exp, stats

    def update(self, exp: dict, step: int) -> dict:
        """PPO epochs over the rollout batch in mini-batches of ``train_batch_size`` rollouts."""
        from openrlhf.models.utils import compute_approx_kl

        cfg, batch = self.cfg, exp["batch"]
        B = batch.tokens.shape[0]
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + step)
        acc = {"loss": 0.0, "kl": 0.0, "clip_ratio": 0.0, "grad_norm": 0.0}
        n_updates = 0
        updates_per_step = cfg.max_epochs * -(-B // cfg.train_batch_size)
        for _ in range(cfg.max_epochs):
            perm = torch.randperm(B, generator=gen)
            for i in range(0, B, cfg.train_batch_size):
                rows = perm[i: i + cfg.train_batch_size].to(self.device)
                n_tok = batch.action_mask[rows].sum().clamp(min=1)
                for j in range(0, len(rows), cfg.micro_batch_size):
                    mb = rows[j: j + cfg.micro_batch_size]
                    part = batch.rows(mb)
                    lp, _ = X.token_logprobs(self.policy, part, cfg.temperature)
                    # Token-level mean over the whole mini-batch (OpenRLHF's token_level_loss),
                    # split across micro-batches by passing the mini-batch's token count.
                    pg, clip, _, _, _ = self.policy_loss(lp, exp["old_lp"][mb], exp["adv"][mb], part.action_mask,
                                                         batch_num_tokens=n_tok)
                    kl = compute_approx_kl(lp, exp["ref_lp"][mb], kl_estimator=cfg.kl_estimator)
                    kl_loss = (kl * part.action_mask).sum() / n_tok
                    loss = pg + cfg.kl_coef * kl_loss
                    loss.backward()
                    share = part.action_mask.sum() / n_tok
                    acc["loss"] += loss.item()
                    acc["kl"] += kl_loss.item()
                    acc["clip_ratio"] += (clip * share).item()
                acc["grad_norm"] += float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_norm))
                for group in self.opt.param_groups:
                    group["lr"] = cfg.lr * lr_factor(cfg, step * updates_per_step + n_updates,
                                                     cfg.num_steps * updates_per_step)
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
                n_updates += 1
        return {**{f"train/{k}": v / n_updates for k, v in acc.items()}, "train/lr": self.opt.param_groups[0]["lr"]}

    def evaluate(self, step: int) -> dict:
        """Held-out accuracy: greedy (pass@1, as MATH500 in the paper) and mean@k at the rollout
        temperature (as AMC/AIME); RL on a small policy moves the sampled one first."""
        t0 = time.monotonic()
        self.engine.sync(self.policy)
        kw = dict(max_new_tokens=self.cfg.max_new_tokens, system_prompt=self.system_prompt)
        g = heldout_accuracy(self.engine, self.tok, self.task, self.cfg.eval_problems, greedy=True, **kw)
        s = heldout_accuracy(self.engine, self.tok, self.task, self.cfg.eval_problems, greedy=False,
                             temperature=self.cfg.temperature, seed=self.cfg.seed + 17,
                             n_samples=self.cfg.eval_samples, **kw)
        return {"step": step, "eval/accuracy": g["accuracy"], "eval/response_length": g["response_length"],
                "eval/sampled_accuracy": s["accuracy"], "eval/sampled_response_length": s["response_length"],
                "time/eval": time.monotonic() - t0}

    # ---- the loop -------------------------------------------------------------------------

    def _load_checkpoint(self) -> None:
        state = runlog.load_checkpoint(self.out, policy=self.policy, optimizer=self.opt)
        changed = diff(state["config"], self.cfg)
        if changed:
            why = ""
            if "num_steps" in changed:  # allowed for a constant LR: say why not here
                why = (f"; {flag_of('lr_scheduler')} {self.cfg.lr_scheduler} with {flag_of('lr_warmup_ratio')} "
                       f"{self.cfg.lr_warmup_ratio} depends on the run's length, so the LR of the steps already "
                       "trained would not match the new schedule: resume with the old length or start a new run")
            raise UsageError(f"{flag_of('resume')}: the checkpoint in {self.out} was trained with other settings: "
                             + ", ".join(f"{flag_of(c)} {state['config'][c]!r} (now {getattr(self.cfg, c)!r})"
                                         for c in changed) + why)
        if state["next_step"] > self.cfg.num_steps:
            # Resuming would drop the metrics past num_steps and overwrite the checkpoint and the
            # final policy with a later policy labelled as step num_steps.
            raise UsageError(f"{flag_of('resume')}: {self.out} has trained {state['next_step']} steps, more than "
                             f"{flag_of('num_steps')} {self.cfg.num_steps}; the number of steps may only grow")
        self.start_step = state["next_step"]
        runlog.truncate_metrics(self.out, self.start_step)
        self.log(f"resumed {self.out} at step {self.start_step}")

    def _save(self, next_step: int) -> None:
        runlog.save_checkpoint(self.out, policy=self.policy, optimizer=self.opt, next_step=next_step,
                               config=dataclasses.asdict(self.cfg))

    def _record(self, record: dict, every_step: bool = False) -> None:
        runlog.append_metrics(self.out, record)
        self.trackers.log(record, every_step)

    def train(self) -> list[dict]:
        """Run steps [start, num_steps); returns the metrics records of this run directory."""
        self.trackers.open(dataclasses.asdict(self.cfg), self.start_step, self.log)
        try:
            records = self._train()
        except BaseException:
            self.trackers.close(exit_code=1)
            raise
        self.trackers.close()
        return records

    def _train(self) -> list[dict]:
        from tqdm import tqdm

        cfg = self.cfg
        text = json.dumps(dataclasses.asdict(self.cfg), indent=2)
        replace_atomically(self.out / "config.json", lambda tmp: tmp.write_text(text))
        self.log(f"run directory {self.out}; engine {self.engine.name}, entropy from {self.entropy_source}, "
                 f"estimator {cfg.estimator}, split {cfg.split}, PRM {cfg.prm}")
        bar = tqdm(range(self.start_step, cfg.num_steps), desc=cfg.estimator, disable=not cfg.progress,
                   dynamic_ncols=True, initial=self.start_step, total=cfg.num_steps)
        last_eval = None
        for step in bar:
            if cfg.eval_steps > 0 and step % cfg.eval_steps == 0:
                last_eval = self.evaluate(step)
                self._record(last_eval, every_step=True)
            t0 = time.monotonic()
            exp, stats = self.make_experience(step)
            stats.update(self.update(exp, step))
            stats["time/step"] = time.monotonic() - t0
            self._record({"step": step, **stats})
            bar.set_postfix(acc=f"{stats['train/accuracy']:.2f}", len=f"{stats['train/response_length']:.0f}",
                            heldout=f"{last_eval['eval/accuracy']:.2f}" if last_eval else "-")
            if cfg.save_steps > 0 and (step + 1) % cfg.save_steps == 0:
                self._save(step + 1)
        final = self.evaluate(cfg.num_steps)
        self._record(final, every_step=True)
        self._save(cfg.num_steps)
        with naming_a_full_disk(self.out / "policy", f"the final checkpoint {self.out / runlog.CKPT} is kept"):
            self.policy.save_pretrained(self.out / "policy")
            self.tok.save_pretrained(self.out / "policy")
            runlog.plot_learning_curve(self.out, f"prpo-local: {cfg.estimator}, split {cfg.split}, PRM {cfg.prm}")
        self.log(f"held-out accuracy {final['eval/accuracy']:.1%} greedy, {final['eval/sampled_accuracy']:.1%} "
                 f"sampled (mean response {final['eval/response_length']:.1f} tokens); "
                 f"metrics {self.out / runlog.METRICS}, plot {self.out / runlog.CURVE}")
        return runlog.read_metrics(self.out)
