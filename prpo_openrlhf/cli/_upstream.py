"""OpenRLHF 0.11.2's train_ppo_ray parser and argument checks, taken from the installed file.

OpenRLHF builds its parser inside ``if __name__ == "__main__":`` of
``openrlhf/cli/train_ppo_ray.py``, so it cannot be imported. Instead of restating its ~150
flags (and drifting from them), we compile that block from the installed source: the
statements before ``args = parser.parse_args()`` build the parser, the ones after it check and
complete the arguments and end in ``train(args)``, which we intercept. Any other OpenRLHF
version is refused, because the block's shape is only known for 0.11.2.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import importlib.metadata
import inspect

SUPPORTED_OPENRLHF = "0.11.2"


class _Captured(Exception):
    """Raised by the stand-in ``train`` to stop upstream's block once the args are final."""

    def __init__(self, args):
        super().__init__("captured")
        self.final = args


def _main_block():
    """Return (module globals, statements before parse_args, statements after it)."""
    version = importlib.metadata.version("openrlhf")
    if version != SUPPORTED_OPENRLHF:
        raise RuntimeError(
            f"prpo_openrlhf's train_prpo_ray reuses the flags of OpenRLHF {SUPPORTED_OPENRLHF}; "
            f"found openrlhf {version}. Install openrlhf=={SUPPORTED_OPENRLHF} (pip install 'prpo_openrlhf[gpu]')."
        )
    module = importlib.import_module("openrlhf.cli.train_ppo_ray")
    tree = ast.parse(inspect.getsource(module))
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            body = node.body
            split = next(
                (i for i, s in enumerate(body)
                 if isinstance(s, ast.Assign) and "parser.parse_args()" in ast.unparse(s.value)),
                None,
            )
            if split is not None:
                return vars(module), body[:split], body[split + 1:]
    raise RuntimeError("openrlhf/cli/train_ppo_ray.py has no `args = parser.parse_args()` in its __main__ block")


def _run(statements, namespace: dict) -> None:
    code = compile(ast.Module(body=list(statements), type_ignores=[]), "<openrlhf train_ppo_ray __main__>", "exec")
    exec(code, namespace)  # noqa: S102 - upstream's own code, from the installed package


def upstream_parser() -> argparse.ArgumentParser:
    """OpenRLHF 0.11.2's train_ppo_ray ArgumentParser, with every upstream flag and default."""
    module_globals, before, _ = _main_block()
    namespace = dict(module_globals)
    _run(before, namespace)
    return namespace["parser"]


def upstream_finalize(flat_args: argparse.Namespace):
    """Run upstream's checks and completions on parsed args; returns the hierarchical args."""
    module_globals, _, after = _main_block()
    namespace = dict(module_globals)

    def _capture(args):
        raise _Captured(args)

    namespace.update(args=flat_args, train=_capture)
    try:
        _run(after, namespace)
    except _Captured as done:
        return done.final
    raise RuntimeError("OpenRLHF's train_ppo_ray block ended without calling train(args)")
