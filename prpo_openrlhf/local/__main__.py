"""``prpo-local``: single-machine PRPO on CPU or one GPU (docs/local.md).

    prpo-local train   [flags]   one training run (default: PRPO on the synthetic arithmetic task)
    prpo-local compare [flags]   GRPO, PRPO and the paper's ablations on the same seeds and budget
    prpo-local warmup  [flags]   the embedded policy: where it is, or --rebuild it from its recipe
    prpo-local prm     [flags]   the learned PRM of the embedded task: where it is, or --rebuild it
"""
from __future__ import annotations

import argparse
import os
import sys


def _quiet() -> None:
    """Keep the console to the progress bar and results: libraries log a lot on CPU."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def build_parser() -> argparse.ArgumentParser:
    from prpo_openrlhf.local.compare import add_compare_flags
    from prpo_openrlhf.local.flags import DefaultsHelpFormatter, add_train_flags
    from prpo_openrlhf.local.tracking import add_logger_flags

    parser = argparse.ArgumentParser(prog="prpo-local", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    # Every --help shows the defaults (argparse adds them; the help texts do not repeat them).
    fmt = dict(formatter_class=DefaultsHelpFormatter)
    train = sub.add_parser("train", help="one training run", **fmt)
    add_train_flags(train)
    add_logger_flags(train)
    compare = sub.add_parser("compare", help="GRPO vs PRPO and the ablations, same seeds and budget", **fmt)
    add_compare_flags(compare)
    warmup = sub.add_parser("warmup", help="the embedded policy: shipped, cached or built; --rebuild checks it",
                            **fmt)
    add_warmup_flags(warmup)
    prm = sub.add_parser("prm", help="the learned PRM of the embedded task: shipped, cached or built; "
                                     "--rebuild checks it", **fmt)
    add_prm_flags(prm)
    return parser


def add_prm_flags(parser) -> None:
    parser.add_argument("--rebuild", action="store_true",
                        help="train the default PRM recipe from scratch (replacing a cached build) and report "
                             "whether the weights match the shipped PRM's bit for bit; exit status 1 when not")
    parser.add_argument("--ship", action="store_true",
                        help="maintainers: copy the (cached or built) PRM into the package "
                             "(prpo_openrlhf/local/shipped/prm-<key>/) with its report")
    parser.add_argument("--local.no_progress", "--no_progress", dest="progress", action="store_false",
                        help="no progress bar")


def run_prm(args) -> int:
    from prpo_openrlhf.local.prm_recipe import PRMRecipeConfig, learned_prm, rebuild_prm, ship_prm

    return rebuild_or_ship(args, PRMRecipeConfig(), rebuild_prm, ship_prm, learned_prm)


def rebuild_or_ship(args, cfg, rebuild, ship, get) -> int:
    """``--rebuild`` / ``--ship`` / neither for a shipped model's recipe ``cfg`` (the policy's warm-up,
    the learned PRM): exit status 1 when a rebuild differs from the shipped model bit for bit."""
    if args.rebuild:
        report = rebuild(cfg, progress=args.progress)
        if args.ship:
            ship(report["path"], cfg)
        return 1 if report["bitwise"] is False and not args.ship else 0  # None: nothing shipped to compare
    path, _ = get(cfg, progress=args.progress, use_shipped=not args.ship)
    if args.ship:
        ship(path, cfg)
    print(path)
    return 0


WARMUP_FIELDS = ("n_ops", "task_seed", "warmup_steps", "warmup_p_err", "warmup_hidden_size", "warmup_num_layers",
                 "progress")


def add_warmup_flags(parser) -> None:
    import dataclasses

    from prpo_openrlhf.local.config import TrainConfig
    from prpo_openrlhf.local.flags import add_train_flags

    add_train_flags(parser, skip=tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in WARMUP_FIELDS))
    parser.add_argument("--rebuild", action="store_true",
                        help="train the recipe from scratch (replacing a cached build) and report whether the "
                             "result matches the shipped policy (weights hash, else held-out accuracy); "
                             "exit status 1 when it is not the same bit for bit")
    parser.add_argument("--ship", action="store_true",
                        help="maintainers: copy the (cached or built) policy of these settings into the package "
                             "(prpo_openrlhf/local/shipped/<key>/) with its recipe, hash and accuracies")


def run_warmup(args) -> int:
    from prpo_openrlhf.local.flags import config_from_args
    from prpo_openrlhf.local.trainer import warmup_config
    from prpo_openrlhf.local.warmup import rebuild, ship, warmed_up_policy

    from prpo_openrlhf.local.config import UsageError

    try:
        cfg = warmup_config(config_from_args(args))
    except ValueError as exc:
        raise UsageError(f"--local.n_ops {args.n_ops!r}: {exc}") from None
    return rebuild_or_ship(args, cfg, rebuild, ship, warmed_up_policy)


def main(argv=None) -> int:
    _quiet()
    from prpo_openrlhf.fileio import DiskFullError
    from prpo_openrlhf.local.config import UsageError

    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            from prpo_openrlhf.local.flags import config_from_args
            from prpo_openrlhf.local.tracking import tracking_from_args
            from prpo_openrlhf.local.trainer import LocalTrainer

            LocalTrainer(config_from_args(args), tracking=tracking_from_args(args)).train()
        elif args.command == "warmup":
            return run_warmup(args)
        elif args.command == "prm":
            return run_prm(args)
        else:
            from prpo_openrlhf.local.compare import run_compare

            run_compare(args)
    except UsageError as exc:
        print(f"prpo-local {args.command}: {exc}", file=sys.stderr)
        return 2
    except DiskFullError as exc:  # names the file; a traceback would add nothing
        print(f"prpo-local {args.command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
