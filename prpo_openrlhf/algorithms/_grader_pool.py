"""A pool of grader worker processes that are killed and replaced when an answer overruns.

Why processes started with ``subprocess`` (fork + exec of a fresh interpreter) rather than
``multiprocessing``: the parent may be a Ray actor or a vLLM process with many threads, so
forking it without exec is unsafe, and multiprocessing's spawn/forkserver re-import the
parent's ``__main__`` (the training CLI, with ray and deepspeed) in every worker. A fresh
``python -m prpo_openrlhf.algorithms._grader_worker`` imports only math-verify and SymPy.

The parent feeds each worker one answer at a time and owns the deadline: a worker that has
not answered ``timeout_s`` after it was handed an answer is SIGKILLed and replaced; a worker
that dies for any reason is replaced. Either way the answer's verdict is False.
"""
from __future__ import annotations

import json
import logging
import os
import selectors
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Sequence

logger = logging.getLogger(__name__)

_WORKER_MODULE = "prpo_openrlhf.algorithms._grader_worker"
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Outcome:
    """Verdict of one answer. status: ok | error | timeout (worker's own deadline) |
    killed (parent's deadline) | crashed (worker died)."""

    ok: bool
    status: str
    latency_s: float


class _Worker:
    def __init__(self, memory_mb: int):
        env = dict(os.environ)
        if os.path.basename(_PACKAGE_ROOT) not in ("site-packages", "dist-packages"):
            # A source checkout, perhaps not pip-installed: make the package importable. (An
            # installed package needs nothing, and site-packages must not go before the stdlib.)
            env["PYTHONPATH"] = _PACKAGE_ROOT + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", _WORKER_MODULE, str(memory_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
            start_new_session=True,  # a Ctrl-C meant for the trainer does not hit the workers
        )
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.buf = b""
        self.ready = False
        self.started = time.monotonic()
        self.job: int | None = None
        self.dispatched = 0.0

    def send(self, msg: dict) -> bool:
        try:
            self.proc.stdin.write((json.dumps(msg) + "\n").encode("ascii"))
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def read(self) -> list[dict] | None:
        """Complete messages available now; None once the worker's stdout is closed."""
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        except OSError:
            return None
        if not data:
            return None
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        msgs = []
        for line in lines:
            try:
                msgs.append(json.loads(line))
            except ValueError:
                logger.warning("grader worker %d wrote a malformed line; ignored", self.proc.pid)
        return msgs

    def kill(self) -> None:
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            logger.warning("grader worker %d did not exit after SIGKILL", self.proc.pid)


class GraderPool:
    """``num_workers`` answers graded at a time; ``grade`` runs one batch of (response, reference),
    ``response`` being the part around its final answer (``_answer.answer_context``).

    ``spares`` extra warm processes stand by, so that a killed worker's place is taken at once
    instead of after the seconds a fresh interpreter needs to import SymPy. Not thread-safe by
    itself: ``rewards.grade_batch`` serialises calls with a lock.
    """

    def __init__(self, num_workers: int, memory_mb: int = 2048, startup_timeout_s: float = 120.0,
                 spares: int = 1):
        if num_workers < 1:
            raise ValueError(f"grader pool needs at least one worker, got num_workers={num_workers}")
        self.num_workers = num_workers
        self.spares = spares
        self.memory_mb = memory_mb
        self.startup_timeout_s = startup_timeout_s
        self.pid = os.getpid()
        self.replaced = 0
        self._workers: list[_Worker] = []
        self._sel = selectors.DefaultSelector()
        self._failed_starts = 0

    # ── worker lifecycle ──

    def _spawn(self) -> None:
        w = _Worker(self.memory_mb)
        self._sel.register(w.fd, selectors.EVENT_READ, w)
        self._workers.append(w)

    def _retire(self, w: _Worker) -> None:
        try:
            self._sel.unregister(w.fd)
        except (KeyError, ValueError):
            pass
        w.kill()
        if w in self._workers:
            self._workers.remove(w)

    def _replace(self, w: _Worker) -> None:
        self._retire(w)
        self.replaced += 1
        self._spawn()

    def start(self) -> None:
        """Start the missing workers (they warm up in the background)."""
        while len(self._workers) < self.num_workers + self.spares:
            self._spawn()

    def close(self) -> None:
        for w in list(self._workers):
            self._retire(w)
        self._sel.close()

    def _startup_failed(self, w: _Worker, why: str) -> None:
        self._failed_starts += 1
        logger.error("grader worker %d %s before it was ready (see its stderr)", w.proc.pid, why)
        if self._failed_starts >= 3 * self.num_workers and not any(x.ready for x in self._workers):
            self.close()
            raise RuntimeError(
                f"grader workers keep failing at start-up ({self._failed_starts} times): "
                f"`{sys.executable} -m {_WORKER_MODULE}` must import math_verify; see stderr above")
        self._replace(w)

    # ── one batch ──

    def grade(self, jobs: Sequence[tuple[str, str]], timeout_s: float, soft: bool = True) -> list[Outcome]:
        """Outcome per (response, reference); each gets ``timeout_s`` seconds of a worker.

        ``soft``: the worker also stops itself a little before the deadline when the work is
        interruptible (no restart needed); False leaves only the kill.
        """
        if os.getpid() != self.pid:
            raise RuntimeError("GraderPool used in a forked child; create a new pool there")
        soft_s = timeout_s - min(0.25 * timeout_s, 0.5) if soft else None
        outcomes: list[Outcome | None] = [None] * len(jobs)
        queue = deque(range(len(jobs)))
        self.start()
        while queue or any(w.job is not None for w in self._workers):
            self._dispatch(queue, jobs, soft_s, timeout_s)
            now = time.monotonic()
            deadlines = [w.dispatched + timeout_s for w in self._workers if w.job is not None]
            wait = min(deadlines) - now if deadlines else 0.5
            for key, _ in self._sel.select(max(wait, 0.0)):
                self._collect(key.data, outcomes, jobs)
            self._enforce(outcomes, jobs, timeout_s)
        return outcomes  # type: ignore[return-value]

    def _dispatch(self, queue: deque, jobs, soft_s: float | None, timeout_s: float) -> None:
        busy = sum(w.job is not None for w in self._workers)
        for w in list(self._workers):
            if not queue or busy >= self.num_workers:
                return
            if not w.ready or w.job is not None:
                continue
            i = queue[0]
            response, reference = jobs[i]
            msg = {"id": i, "response": response, "reference": reference, "soft_s": soft_s, "hard_s": timeout_s}
            w.dispatched = time.monotonic()
            if w.send(msg):
                queue.popleft()
                w.job = i
                busy += 1
            else:  # died while idle: not the answer's fault, it stays queued
                self._replace(w)

    def _collect(self, w: _Worker, outcomes: list, jobs) -> None:
        if w not in self._workers:  # replaced earlier in this round; its fd may be reused
            return
        msgs = w.read()
        now = time.monotonic()
        if msgs is None:
            if w.job is not None:
                outcomes[w.job] = Outcome(False, "crashed", now - w.dispatched)
                logger.warning("grader worker %d died on answer %d (%s); counted False",
                               w.proc.pid, w.job, _preview(jobs[w.job][0]))
                self._replace(w)
            elif not w.ready:
                self._startup_failed(w, "exited")
            else:
                self._replace(w)
            return
        for msg in msgs:
            if msg.get("ready"):
                w.ready = True
                self._failed_starts = 0
            elif w.job is not None and msg.get("id") == w.job:
                outcomes[w.job] = Outcome(bool(msg["ok"]), str(msg["status"]), now - w.dispatched)
                if msg["status"] == "timeout":
                    logger.warning("grader: answer %d stopped at its soft deadline after %.2fs: %s",
                                   w.job, now - w.dispatched, _preview(jobs[w.job][0]))
                w.job = None

    def _enforce(self, outcomes: list, jobs, timeout_s: float) -> None:
        now = time.monotonic()
        for w in list(self._workers):
            if w.job is not None and now >= w.dispatched + timeout_s:
                outcomes[w.job] = Outcome(False, "killed", now - w.dispatched)
                logger.warning("grader: answer %d overran its %.1fs budget; worker %d killed: %s",
                               w.job, timeout_s, w.proc.pid, _preview(jobs[w.job][0]))
                self._replace(w)
            elif not w.ready and now - w.started > self.startup_timeout_s:
                self._startup_failed(w, f"took over {self.startup_timeout_s:.0f}s to start")


def _preview(text: str, limit: int = 120) -> str:
    """``text`` cut to about ``limit`` characters: its start and its end (where the answer is)."""
    text = str(text)
    if len(text) <= limit:
        return repr(text)
    half = limit // 2
    return repr(text[:half]) + f" ... ({len(text)} chars) ... " + repr(text[-half:])
