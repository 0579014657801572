"""TensorBoard and Weights & Biases logging of ``prpo-local`` with OpenRLHF 0.11's ``--logger.*`` flags.

Flag names and defaults are those of ``openrlhf/cli/train_ppo_ray.py``; the set-up follows its
trackers (``openrlhf/utils/logging_utils.py``: ``TensorboardLogger``, ``WandbLogger``, used by
``openrlhf/trainer/ppo_trainer.py``): TensorBoard writes to ``<tensorboard_dir>/<run_name>``;
W&B is on when ``--logger.wandb.key`` is given and logs in with that key unless credentials are
already configured (``WANDB_API_KEY``, ``~/.netrc``); under ``WANDB_MODE=offline`` it does not
log in and writes an offline run (``wandb sync`` uploads it later). Train steps go to the
trackers every ``--logger.logging_steps`` steps (OpenRLHF: ``global_step % logging_steps == 0``
with a 1-based global step), evaluations always; ``metrics.jsonl`` keeps every step.

OpenRLHF's classes are not reused: they prefix every key with ``train/`` or ``eval/`` (ours have
theirs already, and ``time/*`` has neither) and pass the whole namespace, W&B key included, as
the run's config. Here every scalar of a ``metrics.jsonl`` record is written under its own
name at the record's ``step``.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from datetime import datetime
from pathlib import Path

from prpo_openrlhf.local.config import UsageError


def default_run_name() -> str:
    return "ppo_%s" % datetime.now().strftime("%m%dT%H:%M")  # train_ppo_ray's default


@dataclasses.dataclass
class TrackingConfig:
    tensorboard_dir: str | None = None
    wandb_key: str | None = None
    wandb_org: str | None = None
    wandb_group: str | None = None
    wandb_project: str = "openrlhf_train_ppo"
    wandb_run_name: str = dataclasses.field(default_factory=default_run_name)
    logging_steps: int = 1


# field -> (flag, help); the flags of openrlhf/cli/train_ppo_ray.py
FLAGS = {
    "tensorboard_dir": ("--logger.tensorboard_dir", "TensorBoard logging path (events go to <dir>/<run_name>)"),
    "wandb_key": ("--logger.wandb.key", "W&B API key; turns W&B logging on (any value under WANDB_MODE=offline)"),
    "wandb_org": ("--logger.wandb.org", "W&B entity"),
    "wandb_group": ("--logger.wandb.group", "W&B run group"),
    "wandb_project": ("--logger.wandb.project", "W&B project"),
    "wandb_run_name": ("--logger.wandb.run_name", "W&B run name and TensorBoard sub-directory"),
    "logging_steps": ("--logger.logging_steps", "send every N-th training step to TensorBoard / W&B"),
}


def add_logger_flags(parser) -> None:
    g = parser.add_argument_group("logging (OpenRLHF's --logger.* flags; metrics.jsonl is always written)")
    defaults = TrackingConfig()
    for f in dataclasses.fields(TrackingConfig):
        flag, help_text = FLAGS[f.name]
        g.add_argument(flag, dest=f.name, type=int if f.name == "logging_steps" else str,
                       default=getattr(defaults, f.name), help=help_text)


def tracking_from_args(args: argparse.Namespace) -> TrackingConfig:
    return TrackingConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrackingConfig)})


class Trackers:
    """The run's TensorBoard writer and W&B run. The constructor checks, before anything is
    loaded, that they can start; ``open`` starts them, ``log`` sends records, ``close`` ends."""

    def __init__(self, cfg: TrackingConfig | None):
        self.cfg = cfg or TrackingConfig()
        self.writer, self.wandb = None, None
        if self.cfg.logging_steps < 1:
            raise UsageError(f"{FLAGS['logging_steps'][0]} must be >= 1")
        if self.cfg.tensorboard_dir:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: F401
            except ImportError as err:
                raise UsageError(f"{FLAGS['tensorboard_dir'][0]} needs the tensorboard package "
                                 f"(pip install tensorboard): {err}") from err
            self.log_dir = Path(self.cfg.tensorboard_dir) / self.cfg.wandb_run_name
            try:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=self.log_dir):
                    pass
            except OSError as err:
                raise UsageError(f"{FLAGS['tensorboard_dir'][0]} {self.cfg.tensorboard_dir}: cannot write to "
                                 f"{self.log_dir} ({err.strerror or err})") from err
        if self.cfg.wandb_key:
            try:
                import wandb  # noqa: F401
            except ImportError as err:
                raise UsageError(f"{FLAGS['wandb_key'][0]} needs the wandb package (pip install wandb): {err}") from err

    def open(self, config: dict, start_step: int = 0, log=print) -> None:
        cfg = self.cfg
        if cfg.tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: a resumed run hides the events written after its checkpoint, as
            # runlog.truncate_metrics drops those records from metrics.jsonl.
            self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=start_step or None)
            log(f"TensorBoard events in {self.log_dir}")
        if cfg.wandb_key:
            import wandb

            offline = os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun", "disabled")
            try:
                if not offline and not wandb.login(prompt=False, verify=False):  # OpenRLHF: if not api_key
                    wandb.login(key=cfg.wandb_key)
                secret = {"wandb_key"}
                self.wandb = wandb.init(
                    entity=cfg.wandb_org, project=cfg.wandb_project, group=cfg.wandb_group,
                    name=cfg.wandb_run_name, reinit="finish_previous",  # OpenRLHF: reinit=True
                    config={**config, **{k: v for k, v in dataclasses.asdict(cfg).items() if k not in secret}})
            except Exception as err:  # wandb's AuthenticationError, CommError, UsageError ...
                self.close()
                raise UsageError(f"W&B ({FLAGS['wandb_key'][0]}) did not start: {type(err).__name__}: {err}") from err

    def log(self, record: dict, every_step: bool = False) -> None:
        """Every scalar of a metrics.jsonl record under its own name, at its ``step``; a
        training record only every ``logging_steps``-th step, an evaluation (``every_step``) always."""
        step = record["step"]
        if not every_step and (step + 1) % self.cfg.logging_steps:
            return
        scalars = {k: v for k, v in record.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self, exit_code: int = 0) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.wandb is not None:
            self.wandb.finish(exit_code=exit_code)
            self.wandb = None
