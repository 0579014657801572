"""The flag of every ``prpo-local`` setting (a TrainConfig field) and its help: read by the flag
parser (flags.py) and by the checks of config.py, which name the flag a user typed."""
from __future__ import annotations

# field -> (flags, help)
FLAGS: dict[str, tuple[tuple[str, ...], str]] = {
    "model": (("--model", "--actor.model_name_or_path"),
              "policy: an HF path; default: the embedded tiny policy, warmed up and cached on first use"),
    "prm": (("--prm", "--prm.model_name_or_path"),
            "'synthetic' (exact process verifier of the task) or a Qwen2ForProcessRewardModel path"),
    "prm_backend": (("--prm.backend",), "PRMScorer backend for a PRM path: hf or vllm"),
    "verifier_mode": (("--prm.verifier_mode",), "synthetic verifier: strict (0/1) or graded (fraction right)"),
    "prm_noise_flip": (("--prm.noise.flip",), "simulated PRM error: probability that an exact segment score s "
                                              "becomes 1 - s (seeded, see docs/local.md)"),
    "prm_noise_jitter": (("--prm.noise.jitter",), "simulated PRM error: sigma of Gaussian noise added to each "
                                                  "segment score, then clipped to [0, 1]"),
    "prm_noise_seed": (("--prm.noise.seed",), "seed of the PRM noise (with the step and the rollout's index)"),
    "system_prompt": (("--local.system_prompt",),
                      "'auto' (none for the embedded policy, the paper's for --model), 'none', or text"),
    "estimator": (("--algo.advantage.estimator",),
                  "grpo (= group_norm), dr_grpo, prpo, prm_avg, prm_avg_prpo, pure, process_only"),
    "split": (("--prpo.split",), "segmentation: entropy, uniform, random, newline"),
    "k": (("--prpo.k",), "max entropy spikes (branches) per response"),
    "min_gap": (("--prpo.min_gap",), "min tokens between two cuts (m)"),
    "normalization": (("--prpo.normalization",), "process z-score: prior (U[0,1]) or relative (group)"),
    "prior_mean": (("--prpo.prior_mean",), "mu of the prior normalization"),
    "prior_std": (("--prpo.prior_std",), "sigma of the prior normalization"),
    "pure_temperature": (("--prpo.pure_temperature",), "PURE's min-form temperature"),
    "split_seed": (("--prpo.seed",), "seed of the random split ablation"),
    "entropy_source": (("--prpo.entropy_source",), "auto, vllm (engine plugin) or actor (log-prob pass)"),
    "length_penalty_threshold": (("--prpo.length_penalty_threshold",), "tokens before the length penalty"),
    "length_penalty_scale": (("--prpo.length_penalty_scale",), "penalty L/scale beyond the threshold"),
    "grader_timeout": (("--prpo.grader_timeout",), "seconds per answer for the math-verify grader"),
    "n_ops": (("--local.n_ops",), "operations per problem of the synthetic task, e.g. 3 or 3,4 (drawn "
                                  "uniformly); the embedded policy's warm-up trains on the same task"),
    "engine": (("--local.engine",), "rollout engine: auto, hf (generate) or vllm (in-process engine)"),
    "prompts_per_step": (("--rollout.batch_size",), "prompts per training step"),
    "n_samples_per_prompt": (("--rollout.n_samples_per_prompt",), "rollouts per prompt (group size)"),
    "max_new_tokens": (("--rollout.max_new_tokens",), "max response tokens"),
    "temperature": (("--rollout.temperature",), "sampling temperature"),
    "num_steps": (("--local.num_steps",), "training steps (one rollout batch each)"),
    "train_batch_size": (("--train.batch_size",), "rollouts per optimizer step"),
    "micro_batch_size": (("--train.micro_batch_size",), "rows per forward/backward"),
    "max_epochs": (("--train.max_epochs",), "passes over each rollout batch"),
    "lr": (("--actor.adam.lr",), "learning rate"),
    "adam_eps": (("--actor.adam.eps",), "AdamW epsilon"),
    "lr_scheduler": (("--actor.lr_scheduler",), "constant or cosine_with_min_lr (OpenRLHF's default)"),
    "lr_warmup_ratio": (("--actor.lr_warmup_ratio",), "share of the optimizer updates with linear LR warm-up "
                                                       "(OpenRLHF's default: 0.03)"),
    "min_lr_ratio": (("--actor.min_lr_ratio",), "final LR / LR of cosine_with_min_lr"),
    "eps_clip": (("--actor.eps_clip",), "PPO clip range"),
    "kl_coef": (("--algo.kl.init_coef",), "KL-loss coefficient (KL to the reference policy)"),
    "kl_estimator": (("--algo.kl.estimator",), "k1, k2 or k3"),
    "max_norm": (("--actor.max_norm",), "gradient clipping norm"),
    "eval_steps": (("--eval.steps",), "held-out evaluation every this many steps"),
    "eval_problems": (("--local.eval_problems",), "held-out problems per evaluation"),
    "eval_samples": (("--local.eval_samples",), "samples per held-out problem for the sampled accuracy (mean@k)"),
    "save_steps": (("--ckpt.save_steps",), "checkpoint every this many steps (and at the end)"),
    "output_dir": (("--ckpt.output_dir",), "run directory (default runs/prpo-local/<estimator>-<time>)"),
    "resume": (("--resume", "--ckpt.load_enable"), "continue the run in --ckpt.output_dir from its checkpoint"),
    "seed": (("--train.seed",), "seed of sampling and shuffling"),
    "task_seed": (("--local.task_seed",), "seed of the synthetic task (held-out set)"),
    "device": (("--local.device",), "auto, cpu or cuda"),
    "threads": (("--local.threads",), "torch CPU threads; 0 = auto: 1 for the embedded tiny policy "
                                      "(its matrices are too small to split), torch's default otherwise"),
    "progress": (("--local.no_progress",), "no progress bar"),
    "warmup_steps": (("--warmup.steps",), "SFT steps of the embedded policy's warm-up"),
    "warmup_p_err": (("--warmup.p_err",), "per-step slip probability of the warm-up's noisy solutions"),
    "warmup_hidden_size": (("--warmup.hidden_size",), "embedded policy width (head size 64)"),
    "warmup_num_layers": (("--warmup.num_layers",), "embedded policy depth"),
}


def flag_of(field: str) -> str:
    return FLAGS[field][0][-1] if field in FLAGS else field
