"""``prpo-local``: the embedded arithmetic task on one machine, through train_prpo_ray (docs/local.md).

    prpo-local run     [flags]   `make run`: PRPO from the shipped policy, evaluated before and after
    prpo-local compare [flags]   `make compare`: GRPO, PRPO, the baselines and ablations, seeds, PRM arms
    prpo-local eval MODEL        held-out greedy and sampled accuracy of a model on the task
    prpo-local paths             POLICY_MODEL=, PRM_MODEL=, PROMPT_DATA= for a launch script
    prpo-local warmup  [flags]   the shipped policy: where it is, or --rebuild it from its recipe
    prpo-local prm     [flags]   the shipped learned PRM: where it is, or --rebuild it from its recipe

Training runs only through OpenRLHF's loop (train_prpo_ray under ``ray job submit`` on a private
Ray head); ``run``, ``eval``, ``paths`` and ``compare`` take the flags of
``python -m prpo_openrlhf.local.embedded`` and ``python -m prpo_openrlhf.local.embedded_compare``.
"""
from __future__ import annotations

import argparse
import os
import sys

PIPELINE = {"run": "evaluate, train through train_prpo_ray, evaluate again (make run)",
            "compare": "the paper's methods through train_prpo_ray, seeds and PRM arms (make compare)",
            "eval": "held-out greedy and sampled accuracy of a model",
            "paths": "print POLICY_MODEL=, PRM_MODEL=, PROMPT_DATA="}


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
    parser = argparse.ArgumentParser(prog="prpo-local", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in PIPELINE.items():  # parsed by their own modules (main() hands them over)
        sub.add_parser(name, help=text, add_help=False)
    fmt = dict(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_warmup_flags(sub.add_parser("warmup", help="the embedded policy: shipped, cached or built; --rebuild "
                                                   "checks it", **fmt))
    add_recipe_flags(sub.add_parser("prm", help="the learned PRM of the embedded task: shipped, cached or built; "
                                                "--rebuild checks it", **fmt), "PRM")
    return parser


def add_recipe_flags(parser, what: str) -> None:
    parser.add_argument("--rebuild", action="store_true",
                        help=f"train the {what}'s recipe from scratch (replacing a cached build) and report whether "
                             f"the weights match the shipped {what}'s bit for bit; exit status 1 when not")
    parser.add_argument("--ship", action="store_true",
                        help=f"maintainers: copy the (cached or built) {what} into the package "
                             "(prpo_openrlhf/local/shipped/) with its recipe, hash and report")
    parser.add_argument("--local.no_progress", "--no_progress", dest="progress", action="store_false",
                        help="no progress bar")


def add_warmup_flags(parser) -> None:
    """The recipe's settings that a user may change (a changed recipe is built and cached, not shipped)."""
    from prpo_openrlhf.local.warmup import WarmupConfig

    d = WarmupConfig()
    parser.add_argument("--warmup.n_ops", dest="n_ops", default=",".join(map(str, d.task.n_ops)),
                        help="operations per problem of the task, e.g. 3 or 3,4 (drawn uniformly)")
    parser.add_argument("--warmup.task_seed", dest="task_seed", type=int, default=d.task_seed,
                        help="seed of the task (its held-out set)")
    parser.add_argument("--warmup.steps", dest="steps", type=int, default=d.steps, help="SFT steps")
    parser.add_argument("--warmup.p_err", dest="p_err", type=float, default=d.p_err,
                        help="per-step slip probability of the SFT's noisy solutions")
    parser.add_argument("--warmup.hidden_size", dest="hidden_size", type=int, default=d.hidden_size,
                        help="policy width (head size 64)")
    parser.add_argument("--warmup.num_layers", dest="num_layers", type=int, default=d.num_layers, help="policy depth")
    add_recipe_flags(parser, "policy")


def warmup_config(args):
    from prpo_openrlhf.local.task import TaskConfig, parse_n_ops
    from prpo_openrlhf.local.warmup import WarmupConfig

    try:
        task = TaskConfig(n_ops=parse_n_ops(args.n_ops))
    except ValueError as exc:
        raise SystemExit(f"prpo-local warmup: --warmup.n_ops {args.n_ops!r}: {exc}") from None
    return WarmupConfig(task=task, task_seed=args.task_seed, steps=args.steps, p_err=args.p_err,
                        hidden_size=args.hidden_size, num_layers=args.num_layers)


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


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _quiet()
    if argv and argv[0] in ("run", "eval", "paths"):
        from prpo_openrlhf.local import embedded

        return embedded.main(argv)
    if argv and argv[0] == "compare":
        from prpo_openrlhf.local import embedded_compare

        return embedded_compare.main(argv[1:])
    args = build_parser().parse_args(argv)
    from prpo_openrlhf.fileio import DiskFullError

    try:
        if args.command == "warmup":
            from prpo_openrlhf.local.warmup import rebuild, ship, warmed_up_policy

            return rebuild_or_ship(args, warmup_config(args), rebuild, ship, warmed_up_policy)
        from prpo_openrlhf.local.prm_recipe import PRMRecipeConfig, learned_prm, rebuild_prm, ship_prm

        return rebuild_or_ship(args, PRMRecipeConfig(), rebuild_prm, ship_prm, learned_prm)
    except DiskFullError as exc:  # names the file; a traceback would add nothing
        print(f"prpo-local {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
