"""Settings of a single-machine run; ``__main__`` maps OpenRLHF-style dotted flags onto them."""
from __future__ import annotations

import math

from dataclasses import dataclass, fields

from prpo_openrlhf.algorithms.segmentation import METHODS as SPLITS
from prpo_openrlhf.local.flag_names import flag_of
from prpo_openrlhf.local.task import HELDOUT_SIZE, TaskConfig, max_solution_bytes, parse_n_ops

PRM_ESTIMATORS = ("prpo", "prm_avg", "prm_avg_prpo", "pure", "process_only")
OUTCOME_ESTIMATORS = ("group_norm", "dr_grpo")
ESTIMATOR_ALIASES = {"grpo": "group_norm"}


class UsageError(ValueError):
    """Bad flags or run directory: reported as one message, without a traceback."""


@dataclass
class TrainConfig:
    # models
    model: str | None = None          # HF path; None = the embedded warmed-up tiny policy
    prm: str = "synthetic"            # "synthetic" = exact process verifier, else a PRM path
    prm_backend: str = "hf"
    verifier_mode: str = "strict"
    # Simulated PRM errors on the exact verifier's segment scores (verifier.add_score_noise).
    prm_noise_flip: float = 0.0       # probability that a segment score s becomes 1 - s
    prm_noise_jitter: float = 0.0     # sigma of the Gaussian added to each score (then clipped)
    prm_noise_seed: int = 0
    system_prompt: str = "auto"       # auto: none for the embedded policy, the paper's otherwise
    # algorithm
    estimator: str = "prpo"
    split: str = "entropy"
    k: int = 5
    min_gap: int = 10
    normalization: str = "prior"
    prior_mean: float = 0.5
    prior_std: float = 0.289
    pure_temperature: float = 0.1
    split_seed: int = 42
    entropy_source: str = "auto"      # auto: vllm when the engine returns entropies, else actor
    length_penalty_threshold: int = 1024
    length_penalty_scale: float = 1024.0
    grader_timeout: float = 5.0
    # task: operation counts per problem ("3,4": drawn uniformly); a string so that
    # config.json / checkpoints round-trip it and resume compares it as written
    n_ops: str = "3,4"
    # rollout
    engine: str = "auto"              # auto | hf | vllm
    prompts_per_step: int = 16
    n_samples_per_prompt: int = 8
    max_new_tokens: int = 48
    temperature: float = 1.0
    # update
    num_steps: int = 60               # make run in < 8 min on 2 cores (docs/local.md)
    train_batch_size: int = 64        # rollouts per optimizer step
    micro_batch_size: int = 128       # rows per forward/backward (gradient accumulation)
    max_epochs: int = 1
    lr: float = 2e-4                  # sweep in docs/local.md ("Choosing the RL defaults")
    adam_eps: float = 1e-4            # OpenRLHF's default is 1e-8; 1e-4 kept greedy accuracy better (docs/local.md)
    lr_scheduler: str = "constant"    # constant | cosine_with_min_lr (OpenRLHF's default)
    lr_warmup_ratio: float = 0.0      # OpenRLHF's default: 0.03; 0.1 did worse here (docs/local.md)
    min_lr_ratio: float = 0.1
    eps_clip: float = 0.2
    kl_coef: float = 0.001
    kl_estimator: str = "k3"
    max_norm: float = 1.0
    # evaluation, logging, checkpoints
    eval_steps: int = 10
    eval_problems: int = 128
    eval_samples: int = 4             # samples per problem for the sampled accuracy (mean@k)
    save_steps: int = 10
    output_dir: str | None = None
    resume: bool = False
    seed: int = 0
    task_seed: int = 0
    device: str = "auto"
    threads: int = 0                  # torch CPU threads; 0 = auto (1 for the embedded policy)
    progress: bool = True
    # embedded policy warm-up (used only when model is None)
    warmup_steps: int = 4000
    warmup_p_err: float = 0.1
    warmup_hidden_size: int = 128
    warmup_num_layers: int = 4

    def __post_init__(self):
        self.estimator = ESTIMATOR_ALIASES.get(self.estimator, self.estimator)
        try:  # one spelling per task ("4, 3" = "3,4"); a bad value is reported by check()
            self.n_ops = ",".join(map(str, parse_n_ops(self.n_ops)))
        except ValueError:
            pass

    @property
    def needs_process(self) -> bool:
        return self.estimator in PRM_ESTIMATORS

    @property
    def task(self) -> TaskConfig:
        """The synthetic task of the run (RL prompts, held-out set, and the warm-up's SFT data)."""
        return TaskConfig(n_ops=parse_n_ops(self.n_ops))

    @property
    def prm_noise(self) -> bool:
        return self.prm_noise_flip > 0 or self.prm_noise_jitter > 0


# Fields that may change when a run is resumed (they do not alter what was trained so far).
RESUMABLE_CHANGES = {"num_steps", "eval_steps", "save_steps", "output_dir", "resume", "progress",
                     "device", "engine", "entropy_source", "threads"}


def check(cfg: TrainConfig) -> None:
    """Cross-field checks; raise ValueError naming the flags."""
    errors = []
    if cfg.estimator not in PRM_ESTIMATORS + OUTCOME_ESTIMATORS:
        errors.append(f"{flag_of('estimator')} {cfg.estimator!r}: choose one of "
                      f"{', '.join(OUTCOME_ESTIMATORS + PRM_ESTIMATORS)} (or 'grpo' for group_norm)")
    if cfg.split not in SPLITS:
        errors.append(f"{flag_of('split')} {cfg.split!r}: choose one of {', '.join(SPLITS)}")
    if cfg.n_samples_per_prompt < 2 and cfg.estimator != "process_only":
        errors.append(f"{flag_of('estimator')} {cfg.estimator} is group-relative: "
                      f"{flag_of('n_samples_per_prompt')} must be > 1")
    total = cfg.prompts_per_step * cfg.n_samples_per_prompt
    if cfg.train_batch_size < 1 or total % cfg.train_batch_size:
        errors.append(f"{flag_of('train_batch_size')} {cfg.train_batch_size} must divide "
                      f"{flag_of('prompts_per_step')} x {flag_of('n_samples_per_prompt')} = {total}")
    if cfg.k < 1 or cfg.min_gap < 1:
        errors.append(f"{flag_of('k')} and {flag_of('min_gap')} must be >= 1")
    if cfg.engine not in ("auto", "hf", "vllm"):
        errors.append(f"{flag_of('engine')} must be auto, hf or vllm")
    if cfg.entropy_source not in ("auto", "actor", "vllm"):
        errors.append(f"{flag_of('entropy_source')} must be auto, actor or vllm")
    if cfg.entropy_source == "vllm" and cfg.engine == "hf":
        errors.append(f"{flag_of('entropy_source')} vllm needs {flag_of('engine')} vllm")
    if cfg.normalization not in ("prior", "relative"):
        errors.append(f"{flag_of('normalization')} must be prior or relative")
    if not 1 <= cfg.eval_problems <= HELDOUT_SIZE:
        errors.append(f"{flag_of('eval_problems')} must lie in [1, {HELDOUT_SIZE}] (the held-out set's size)")
    if cfg.prior_std <= 0:
        errors.append(f"{flag_of('prior_std')} must be > 0")
    if cfg.lr_scheduler not in ("constant", "cosine_with_min_lr"):
        errors.append(f"{flag_of('lr_scheduler')} must be constant or cosine_with_min_lr")
    if not (0 <= cfg.lr_warmup_ratio < 1 and 0 <= cfg.min_lr_ratio <= 1):
        errors.append(f"{flag_of('lr_warmup_ratio')} must lie in [0, 1) and {flag_of('min_lr_ratio')} in [0, 1]")
    errors += _task_errors(cfg) + _noise_errors(cfg)
    if errors:
        raise UsageError("invalid arguments:\n  - " + "\n  - ".join(errors))


def _task_errors(cfg: TrainConfig) -> list[str]:
    """--local.n_ops must parse, and the embedded policy's longest solution must fit."""
    try:
        task = cfg.task
    except ValueError as exc:
        return [f"{flag_of('n_ops')} {cfg.n_ops!r}: {exc}"]
    # Only the embedded policy writes exactly the solution format with a byte-level tokenizer;
    # an HF model writes prose around it in its own tokens, so its budget is the user's call.
    need = max_solution_bytes(task) + 1  # + EOS: a response that cannot stop is cut off
    if cfg.model is None and cfg.max_new_tokens < need:
        return [f"{flag_of('max_new_tokens')} {cfg.max_new_tokens} is too small for {flag_of('n_ops')} "
                f"{cfg.n_ops}: the longest {max(task.n_ops)}-operation solution is {need - 1} tokens plus EOS; "
                f"use {flag_of('max_new_tokens')} {need} or more"]
    return []


def _noise_errors(cfg: TrainConfig) -> list[str]:
    errors = []
    if not 0 <= cfg.prm_noise_flip <= 1:
        errors.append(f"{flag_of('prm_noise_flip')} {cfg.prm_noise_flip} must lie in [0, 1]")
    if cfg.prm_noise_jitter < 0:
        errors.append(f"{flag_of('prm_noise_jitter')} {cfg.prm_noise_jitter} must be >= 0")
    if cfg.prm_noise and cfg.prm != "synthetic":
        errors.append(f"{flag_of('prm_noise_flip')} / {flag_of('prm_noise_jitter')} simulate an imperfect PRM "
                      f"on the exact verifier: they need --prm synthetic (the default), not {cfg.prm!r}")
    return errors


def lr_factor(cfg: TrainConfig, update: int, total: int) -> float:
    """Learning-rate multiplier of optimizer update ``update`` (0-based) out of ``total``.

    Linear warm-up over ``lr_warmup_ratio`` of the updates, then constant, or cosine decay to
    ``min_lr_ratio`` (OpenRLHF's ``cosine_with_min_lr``). A function of the update index
    only, so a resumed run needs no scheduler state.
    """
    warm = int(cfg.lr_warmup_ratio * total)
    if update < warm:
        return (update + 1) / warm
    if cfg.lr_scheduler == "constant":
        return 1.0
    progress = (update - warm) / max(1, total - warm)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_depends_on_length(cfg: TrainConfig) -> bool:
    """Whether ``lr_factor`` depends on the run's total length: with it, the first N steps of a
    longer run are not an N-step run."""
    return cfg.lr_scheduler != "constant" or cfg.lr_warmup_ratio > 0


def diff(saved: dict, cfg: TrainConfig) -> list[str]:
    """Fields whose value differs from a checkpoint's config and may not change on resume.

    ``num_steps`` may change, except under a length-dependent LR schedule: there the steps
    already trained followed another schedule, so a resume (``train --resume``) or a reuse
    (``compare``) would mix two schedules in one run.
    """
    changed = [f.name for f in fields(cfg)
               if f.name not in RESUMABLE_CHANGES and f.name in saved and saved[f.name] != getattr(cfg, f.name)]
    if saved.get("num_steps", cfg.num_steps) != cfg.num_steps and lr_depends_on_length(cfg):
        changed.append("num_steps")
    return changed
