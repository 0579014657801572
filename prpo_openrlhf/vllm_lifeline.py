"""vLLM general plugin: a vLLM child process dies with the process that started it.

vLLM 0.29 starts its engine core (and, with several ranks, its workers) as child processes and
stops them from the parent's exit handlers. A parent that is killed (a Ray actor taken down by
``ray.kill``, ``ray stop`` or the OOM killer; a ``vllm serve`` sent SIGKILL) runs no handler,
and the children stay: idle, holding their memory (1.9 GB for the embedded PRM's) and never
noticed by anyone. Nothing in vLLM watches for the parent's death.

``register`` (setup.py: ``vllm.general_plugins``; vLLM calls it in every process it starts)
arms a watcher in a process started by ``multiprocessing`` (spawned: on the plugin's load;
forked: through ``os.register_at_fork``, in any child a vLLM process forks): a daemon thread that checks once a second whether
the parent is still the one it started with. When the parent is gone the process sends itself
SIGTERM, so vLLM's own handler shuts the engine down, and exits outright 10 s later if that has
not ended it. The watcher never runs in a process that no ``multiprocessing`` parent started
(a Ray worker, a user's script, ``vllm serve`` itself).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time

logger = logging.getLogger("vllm.prpo_lifeline")

POLL_S = 1.0
GRACE_S = 10.0
_armed_in: int | None = None  # pid whose watcher runs (a forked child inherits the value, not the thread)


def _watch(parent: int, poll_s: float, grace_s: float) -> None:
    while os.getppid() == parent:
        time.sleep(poll_s)
    logger.error("prpo lifeline: process %d lost its parent %d (killed?); shutting down", os.getpid(), parent)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_s)
    os._exit(1)


def arm(poll_s: float = POLL_S, grace_s: float = GRACE_S, forked: bool = False) -> bool:
    """Start the watcher in this process if a parent started it with ``multiprocessing`` (or,
    ``forked``, with ``os.fork``: the fork hook runs before multiprocessing records the parent);
    once per process."""
    global _armed_in
    if _armed_in == os.getpid() or not (forked or multiprocessing.parent_process() is not None):
        return False
    _armed_in = os.getpid()
    threading.Thread(target=_watch, args=(os.getppid(), poll_s, grace_s), name="prpo-lifeline",
                     daemon=True).start()
    return True


def register() -> None:
    """vLLM ``general_plugins`` entry point. Never raises."""
    try:
        arm()
        os.register_at_fork(after_in_child=lambda: arm(forked=True))
    except Exception as exc:  # a plugin must not stop vLLM from starting
        logger.warning("prpo lifeline not armed: %r", exc)
