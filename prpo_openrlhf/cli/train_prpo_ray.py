"""Ray training entry point: OpenRLHF 0.11.2's ``train_ppo_ray`` plus PRPO.

    ray job submit ... -- python -m prpo_openrlhf.cli.train_prpo_ray <OpenRLHF flags> --prm.* --prpo.*

Every flag of OpenRLHF 0.11.2's train_ppo_ray is accepted with its default and its checks,
taken from the installed upstream file (see ``_upstream.py``); PRPO's additions are in
``prpo_flags.py``. ``build_parser()`` returns the full parser, importable for tests and tools.
"""
from __future__ import annotations

import importlib.util
import sys

from prpo_openrlhf.cli import prpo_flags
from prpo_openrlhf.cli._upstream import upstream_finalize, upstream_parser

OUTCOME_REWARD_MODULE = "prpo_openrlhf.trainer.outcome_reward"
ENTROPY_AGENT_MODULE = "prpo_openrlhf.rollout.entropy_agent"


def build_parser():
    """OpenRLHF 0.11.2's train_ppo_ray parser + ``--prm.*`` + ``--prpo.*`` + PRPO's estimators."""
    parser = upstream_parser()
    parser.description = __doc__.splitlines()[0]
    prpo_flags.add_estimators(parser)
    prpo_flags.add_prm_args(parser)
    prpo_flags.add_prpo_args(parser)
    return parser


def _module_file(name: str) -> str:
    return importlib.util.find_spec(name).origin  # the file, without importing it here


def parse_args(argv=None):
    """Parse, run upstream's checks, then PRPO's cross-flag checks; returns hierarchical args."""
    flat = build_parser().parse_args(argv)
    reward_urls = getattr(flat, "reward.remote_url")
    if not reward_urls and not getattr(flat, "reward.model_name_or_path"):
        # Default outcome reward for every estimator, so baselines and PRPO see the same R:
        # math-verify on the final \boxed{} group, computed in the rollout workers through
        # OpenRLHF's own reward-function hook as soon as each sample finishes.
        reward_urls = _module_file(OUTCOME_REWARD_MODULE)
        setattr(flat, "reward.remote_url", reward_urls)
    if prpo_flags.needs_vllm_entropy(flat):
        if getattr(flat, "train.agent_func_path"):
            raise SystemExit("train_prpo_ray: --prpo.entropy_source vllm runs rollouts through PRPO's entropy "
                             "executor; it cannot be combined with --train.agent_func_path "
                             "(use --prpo.entropy_source actor with a custom agent)")
        # OpenRLHF then routes rewards through the executor ("agent"); the executor reads the
        # reward endpoints from PRPO_REMOTE_RM_URL, which the launcher sets from prpo.reward_urls.
        setattr(flat, "train.agent_func_path", _module_file(ENTROPY_AGENT_MODULE))
    setattr(flat, "prpo.reward_urls", reward_urls)
    args = upstream_finalize(flat)
    prpo_flags.check_prpo_args(args)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from prpo_openrlhf.trainer.launch import RunFailed, train

    try:
        train(args)
    except RunFailed as exc:
        print(f"train_prpo_ray: the run failed: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
