"""vLLM general plugin: per-token entropy with every sampled token (vLLM 0.29.0 only).

Opt in per request::

    SamplingParams(..., extra_args={"return_entropy": True})

and every ``CompletionOutput`` of that request gets ``token_entropies: list[float]`` aligned
with ``token_ids``: H_t = logsumexp(l) - sum softmax(l) * l over the whole vocabulary, in fp32,
where ``l`` are the logits the sampling distribution is computed from (after allowed-token /
bad-words / min-tokens / logit-bias masks, penalties and non-argmax-invariant logits
processors, divided by the temperature; before min-p, top-k and top-p). Greedy requests get
the entropy at temperature 1. Requests that do not opt in get no attribute and no extra work.

setup.py registers :func:`register` under ``vllm.general_plugins``; vLLM calls it in every
process it starts (frontend, engine core, workers). It patches methods of vLLM 0.29.0 classes
in place (the hook list is in ``_vllm_engine_hooks.targets`` and ``_vllm_worker_hooks.targets``;
docs/entropy.md explains each one). It never raises: on another vLLM version, or if any target
is missing, it logs why and patches nothing. patches/ holds the same change as a diff.
"""
from __future__ import annotations

import functools
import importlib
import logging

from prpo_openrlhf.rollout.entropy_request import OUTPUT_ATTR, REQUEST_KEY, wants_entropy  # noqa: F401 (this module's API)

# A child of vLLM's logger: same format and level (VLLM_LOGGING_LEVEL) as vLLM's own lines.
logger = logging.getLogger("vllm.prpo_entropy")

SUPPORTED_VLLM_VERSION = "0.29.0"
FALLBACK_HINT = "--prpo.entropy_source actor"
_MARK = "__prpo_entropy_original__"

# One record per patched method: (class, method name, original attribute).
_applied: list[tuple[type, str, object]] = []
_status = "not installed"


def version_problem(version: str | None = None) -> str | None:
    """None when ``version`` (default: installed vLLM) is supported, else the refusal message."""
    if version is None:
        try:
            import vllm

            version = vllm.__version__
        except Exception as exc:  # vLLM itself is broken: say so, do not raise
            return f"prpo entropy plugin: cannot read the vLLM version ({exc!r}); nothing patched"
    try:
        from packaging.version import Version

        v = Version(version)
        ok = v.release == (0, 29, 0) and v.pre is None and v.dev is None and v.post is None
    except Exception:
        ok = False
    if ok:
        return None
    return (f"prpo entropy plugin supports vLLM {SUPPORTED_VLLM_VERSION} only, found {version}; "
            f"nothing patched, so vLLM returns no token entropies. Use {FALLBACK_HINT} "
            "(entropy from the training-side log-prob pass) or install "
            f"vllm=={SUPPORTED_VLLM_VERSION}; patches/ has the change as a diff to port.")


def _source_patched() -> bool:
    """True when vLLM's source already carries entropies (patches/ applied by hand)."""
    from vllm.v1.engine import EngineCoreOutput

    return "new_token_entropies" in getattr(EngineCoreOutput, "__struct_fields__", ())


def _resolve(targets) -> list[tuple[type, str, object, object]]:
    """Import every target and build its wrapper; raise before anything is patched.

    Returns [] when every target is already wrapped (this module was imported afresh in a
    process that had installed the plugin already).
    """
    found = []
    for module_name, class_name, method, factory in targets:
        owner = getattr(importlib.import_module(module_name), class_name)
        original = owner.__dict__.get(method)
        if not callable(original):
            raise AttributeError(f"{module_name}.{class_name}.{method} is not a method defined there")
        found.append((owner, method, original, factory))
    wrapped = [getattr(original, _MARK, None) is not None for _, _, original, _ in found]
    if all(wrapped):
        return []
    if any(wrapped):
        raise RuntimeError("some vLLM methods are already wrapped by this plugin and some are not")
    resolved = []
    for owner, method, original, factory in found:
        wrapper = functools.wraps(original)(factory(original))
        setattr(wrapper, _MARK, original)
        resolved.append((owner, method, original, wrapper))
    return resolved


def _apply(resolved) -> None:
    """Patch all or nothing."""
    done = []
    try:
        for owner, method, original, wrapper in resolved:
            setattr(owner, method, wrapper)
            done.append((owner, method, original))
    except BaseException:
        for owner, method, original in reversed(done):
            setattr(owner, method, original)
        raise
    _applied.extend(done)


def all_targets() -> list[tuple[str, str, str, object]]:
    from prpo_openrlhf.rollout import _vllm_engine_hooks, _vllm_worker_hooks

    return _vllm_engine_hooks.targets() + _vllm_worker_hooks.targets()


def install(targets=None) -> str:
    """Patch vLLM in this process; returns the status. Idempotent, never half-patches."""
    global _status
    if _applied:
        return _status
    problem = version_problem()
    if problem:
        _status = problem
        logger.error(problem)
        return _status
    if _source_patched():
        _status = "vLLM source already returns token entropies (patches/ applied); plugin idle"
        logger.info(_status)
        return _status
    resolved = _resolve(all_targets() if targets is None else targets)
    if not resolved:
        _status = "installed (by an earlier import of this module)"
        return _status
    _apply(resolved)
    _status = f"installed ({len(resolved)} vLLM methods wrapped)"
    logger.debug("prpo entropy plugin %s", _status)
    return _status


def uninstall() -> None:
    """Restore every patched method (benchmarks compare against an untouched vLLM)."""
    global _status
    while _applied:
        owner, method, original = _applied.pop()
        setattr(owner, method, original)
    _status = "not installed"


def is_installed() -> bool:
    return bool(_applied)


def status() -> str:
    return _status


def register() -> None:
    """vLLM ``general_plugins`` entry point: install, or log why not. Never raises."""
    global _status
    try:
        install()
    except Exception as exc:
        _status = f"prpo entropy plugin not installed: {exc!r}; nothing patched. Use {FALLBACK_HINT}."
        logger.error(_status)
