"""``prpo-local``: single-machine PRPO on CPU or one GPU (docs/local.md).

    prpo-local train   [flags]   one training run (default: PRPO on the synthetic arithmetic task)
    prpo-local compare [flags]   GRPO, PRPO and the paper's ablations on the same seeds and budget
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
    from prpo_openrlhf.local.flags import add_train_flags
    from prpo_openrlhf.local.tracking import add_logger_flags

    parser = argparse.ArgumentParser(prog="prpo-local", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="one training run", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_train_flags(train)
    add_logger_flags(train)
    compare = sub.add_parser("compare", help="GRPO vs PRPO and the ablations, same seeds and budget")
    add_compare_flags(compare)
    return parser


def main(argv=None) -> int:
    _quiet()
    from prpo_openrlhf.local.config import UsageError

    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            from prpo_openrlhf.local.flags import config_from_args
            from prpo_openrlhf.local.tracking import tracking_from_args
            from prpo_openrlhf.local.trainer import LocalTrainer

            LocalTrainer(config_from_args(args), tracking=tracking_from_args(args)).train()
        else:
            from prpo_openrlhf.local.compare import run_compare

            run_compare(args)
    except UsageError as exc:
        print(f"prpo-local {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
