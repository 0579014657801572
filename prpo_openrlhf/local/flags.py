"""Command-line flags of ``prpo-local``: OpenRLHF 0.11's dotted names where OpenRLHF has the
setting (``--actor.adam.lr``, ``--rollout.n_samples_per_prompt``, ``--algo.advantage.estimator``),
the distributed CLI's ``--prm.*`` / ``--prpo.*`` names for PRPO's, ``--local.*`` for what only
the single-machine trainer has. ``--model``, ``--prm`` and ``--resume`` are short aliases.
"""
from __future__ import annotations

import argparse
import dataclasses

from prpo_openrlhf.local.config import TrainConfig
from prpo_openrlhf.local.flag_names import FLAGS, flag_of  # noqa: F401 (flag_of: this module's API too)

class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except an on/off switch's: "--local.no_progress ... (default:
    True)" reads as if the bar were off by default, and a switch's help already says what it does."""

    def _get_help_string(self, action):
        return action.help if action.nargs == 0 else super()._get_help_string(action)


def add_train_flags(parser, defaults: TrainConfig | None = None, skip: tuple[str, ...] = ()) -> None:
    """Add a flag per TrainConfig field (except ``skip``) with ``defaults``' values."""
    defaults = defaults or TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name in skip:
            continue
        names, help_text = FLAGS[f.name]
        default = getattr(defaults, f.name)
        if f.name == "resume":
            parser.add_argument(*names, dest=f.name, action="store_true", help=help_text)
        elif f.name == "progress":
            parser.add_argument(*names, dest=f.name, action="store_false", help=help_text)
        else:
            kind = type(default) if default is not None else str
            parser.add_argument(*names, dest=f.name, type=kind, default=default, help=help_text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A TrainConfig from parsed flags; fields without a flag (skipped) keep their defaults."""
    names = [f.name for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)]
    return TrainConfig(**{n: getattr(args, n) for n in names})
