"""PRMActorGroup: N PRM actors on Ray, each on its own bundle of a dedicated placement group.

    group = PRMActorGroup("Qwen/Qwen2.5-Math-PRM-7B", num_actors=8, dtype="bf16")
    future = group.score_async(problems, segments)   # dispatch; overlap other work
    ...
    scores = future.result()                          # list[list[float]]

The placement group is the PRM's own (separate from the policy's), one bundle per actor:
``{"GPU": g, "CPU": c}`` on GPU, ``{"CPU": c}`` on CPU. A batch is split into contiguous shards
of similar size, one per actor (calls of fewer than ``min_shard_responses`` per actor into
fewer shards, given to the actors in turn). Fault handling: actors are created with ``max_restarts`` so Ray
restarts one that dies (it keeps its bundle); the shard it was scoring is sent again. A shard
that fails ``max_failures`` times makes the call raise :class:`PRMActorGroupError` naming the
actor. Errors raised by the scorer itself (bad input, non-finite scores) are not retried.
Nothing is ever filled in for a lost shard. Every call has one deadline, ``call_timeout_s``
from its dispatch (waits for a restart included): past it ``result()`` raises TimeoutError and
the call's shards still queued on the actors are cancelled. Calls may come from several threads at once (the
PRM service does that): each actor queues its own calls, so such calls run side by side.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time

import ray
from ray.exceptions import RayActorError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from .coalesce import Coalescer
from .factory import make_scorer
from .scorer import PRMStats

logger = logging.getLogger(__name__)
COALESCE_THREADS = 32  # calls an actor holds at once with coalesce=True (the rest queue in Ray)
ASYNC_CALLS = 256  # calls an async-engine actor holds at once (each a coroutine; the rest queue in Ray)
PIN_ENV = "PRPO_PRM_CPUS"  # e.g. "1": the PRM actors' cores (benchmarks/bench_pinned.py)


class PRMActorGroupError(RuntimeError):
    """A PRM actor kept failing (or its placement group could not be scheduled)."""


def pin_process(cpus: set[int]) -> None:
    """Every thread of this process (Ray's own included) on ``cpus``; threads and processes
    started later inherit it. Linux's affinity is per thread, hence the walk over /proc."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass


class PRMActor:
    """One PRMScorer in a Ray worker process."""

    def __init__(self, model_name_or_path: str, backend: str, scorer_kwargs: dict,
                 num_threads: int | None, coalesce: bool = False):
        if os.environ.get(PIN_ENV):
            # A PRM on cores of its own, the rest of the training on the others: on one machine,
            # the cluster's split of the PRM's hardware from the policy's (benchmarks only).
            cpus = {int(c) for c in os.environ[PIN_ENV].split(",")}
            pin_process(cpus)
            num_threads = num_threads or len(cpus)
            logger.warning("PRM actor pinned to CPUs %s (%s)", sorted(cpus), PIN_ENV)
        if num_threads:
            import torch

            torch.set_num_threads(num_threads)
        self.model = make_scorer(model_name_or_path, backend, **scorer_kwargs)
        # coalesce: the actor takes calls on several threads (max_concurrency) and the calls that
        # arrive during a forward share the next one; otherwise Ray runs its calls one by one.
        self.scorer = Coalescer(self.model) if coalesce else self.model
        self._lock = threading.Lock()
        self.calls, self.last_call = 0, None  # observability: is this actor used, and when

    def score_with_stats(self, problems, segments):
        start = time.time()
        scores, stats = self.scorer.score_with_stats(problems, segments)
        self._count(start)
        return scores, stats.as_dict()

    def _count(self, start: float) -> None:
        with self._lock:
            self.calls, self.last_call = self.calls + 1, (start, time.time())

    def info(self) -> dict:
        forwards = getattr(self.scorer, "forwards", None)
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "calls": self.calls, "last_call": self.last_call, **self.model.info(),
                **({"coalesced_forwards": forwards} if forwards is not None else {})}


class AsyncPRMActor(PRMActor):
    """A PRMActor on vLLM's async engine, as an async Ray actor: it takes many calls at once
    (coroutines on one event loop), and each call's responses enter the engine as requests of
    their own, so vLLM batches every prompt group in flight (continuous batching) instead of
    scoring the groups one call after another. A cancelled call aborts its requests."""

    async def score_with_stats(self, problems, segments):
        start = time.time()
        # Tokenizing runs on the event loop: it is short next to the forward it waits for.
        scores, stats = await self.model.score_prepared_async(self.model.prepare(problems, segments))
        self._count(start)
        return scores, stats.as_dict()


def split_shards(costs: list[int], n: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, end)`` ranges, at most ``n``, of roughly equal total cost."""
    total = sum(costs)
    if not costs:
        return []
    bounds, acc, k = [0], 0, 1
    for i, c in enumerate(costs):
        acc += c
        # Cut after item i once the running cost passes the k-th n-quantile.
        if k < n and acc >= total * k / n and i + 1 < len(costs):
            bounds.append(i + 1)
            k += 1
    bounds.append(len(costs))
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


class PRMScoreFuture:
    """Handle of one in-flight group call; ``result()`` gathers shards and retries dead actors."""

    def __init__(self, group: "PRMActorGroup", problems, segments, max_failures: int,
                 timeout_s: float | None):
        self._group = group
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._problems, self._segments = problems, segments
        self._max_failures = max_failures
        costs = [len(p) + sum(len(s) for s in segs) + 1 for p, segs in zip(problems, segments)]
        # Small calls (one prompt group) are not cut below min_shard_responses: a one-response
        # shard per actor would waste each actor's batching. Whole small calls go to the actors
        # in turn instead.
        n_shards = min(len(group.actors), max(1, len(problems) // group.min_shard_responses))
        self._shards = split_shards(costs, n_shards)
        self._actor_of = group.take_actors(len(self._shards))  # shard -> actor index
        self.failures: dict[int, int] = {}   # shard index -> failures in this call
        self._refs = {k: self._submit(k) for k in range(len(self._shards))}
        self._results: dict[int, tuple] = {}

    def _submit(self, k: int):
        start, end = self._shards[k]
        self._group.count("calls", self._actor_of[k])
        actor = self._group.actors[self._actor_of[k]]
        return actor.score_with_stats.remote(self._problems[start:end],
                                             self._segments[start:end])

    def done(self) -> bool:
        pending = [r for k, r in self._refs.items() if k not in self._results]
        ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
        return len(ready) == len(pending)

    def _collect(self, k: int) -> None:
        try:
            self._results[k] = ray.get(self._refs[k])
        except RayActorError as err:
            n = self.failures[k] = self.failures.get(k, 0) + 1
            self._group.count("failures", self._actor_of[k])
            start, end = self._shards[k]
            if n >= self._max_failures:
                raise PRMActorGroupError(
                    f"PRM actor {self._actor_of[k]} failed {n} time(s) scoring responses [{start}, {end}) "
                    f"(max_failures={self._max_failures}); last error: "
                    f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                ) from err
            logger.warning("PRM actor %d died scoring responses [%d, %d) (failure %d of %d); "
                           "retrying its shard after Ray restarts it", self._actor_of[k], start, end, n,
                           self._max_failures)
            self._group.wait_restarted(self._actor_of[k], self.deadline)
            self._refs[k] = self._submit(k)

    def result(self, timeout: float | None = None) -> tuple[list[list[float]], PRMStats]:
        """Scores and merged stats. Raises TimeoutError at the call's deadline, or after
        ``timeout`` s if that comes first, and then cancels the shards still queued."""
        deadlines = [d for d in (self.deadline, None if timeout is None else time.monotonic() + timeout)
                     if d is not None]
        deadline = min(deadlines, default=None)
        while len(self._results) < len(self._shards):
            pending = {r: k for k, r in self._refs.items() if k not in self._results}
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=left)
            if not ready:
                self.cancel()
                raise TimeoutError(f"PRM group call not done by its deadline "
                                   f"({len(pending)} of {len(self._shards)} shards pending on "
                                   f"actor(s) {sorted({self._actor_of[k] for k in pending.values()})})")
            for ref in ready:
                self._collect(pending[ref])
        scores, parts = [], []
        for k in range(len(self._shards)):
            shard_scores, shard_stats = self._results[k]
            scores += shard_scores
            parts.append(PRMStats.from_dict(shard_stats))
        stats = PRMStats.merge(parts, [a for a, _ in self._shards])
        stats.retries = sum(self.failures.values())
        self._group.last_stats = stats
        return scores, stats

    def cancel(self) -> None:
        """Drop this call's shards that are still queued on their actors (a shard being scored
        runs to its end: a forward pass cannot be interrupted)."""
        for k, ref in self._refs.items():
            if k not in self._results:
                ray.cancel(ref)


class PRMActorGroup:
    """N PRM actors on a placement group of their own; scores batches split across them.

    Options: num_actors; min_shard_responses (8: a call is split into shards of at least this
    many responses, so that a call of one prompt group goes to one actor); num_gpus_per_actor (default 1 if the cluster has GPUs, else 0);
    num_cpus_per_actor (1); max_failures per shard and call (3); max_restarts per actor
    (-1 = unlimited: over a long training an actor may die more than a few times);
    placement_strategy ("PACK"); ready_timeout_s (600, covers model loading: the actors load in
    the background, and the first call or :meth:`ready` waits for them);
    call_timeout_s (600: the deadline of each call from its dispatch; None = no deadline);
    coalesce (False: each actor scores its calls one by one; True: the calls that reach an actor
    during a forward share its next one, see coalesce.py); async_engine (False; True, vllm
    backend only: each actor runs vLLM's async engine and takes up to ASYNC_CALLS calls at once,
    batched together by vLLM, see AsyncPRMActor); node_resource (None: anywhere; a name:
    the node(s) holding that custom resource);
    any other keyword goes to :class:`PRMScorer` (dtype, max_length, engine_kwargs, ...).
    """

    concurrent_calls = True  # several threads may call at once; the calls run side by side

    def __init__(self, model_name_or_path: str, num_actors: int = 1, backend: str = "hf", *,
                 min_shard_responses: int = 8, num_gpus_per_actor: float | None = None, num_cpus_per_actor: float = 1,
                 max_failures: int = 3, max_restarts: int = -1, placement_strategy: str = "PACK",
                 ready_timeout_s: float = 600.0, call_timeout_s: float | None = 600.0,
                 coalesce: bool = False, async_engine: bool = False, node_resource: str | None = None,
                 **scorer_kwargs):
        if num_actors < 1 or max_failures < 1:
            raise ValueError("num_actors and max_failures must be at least 1")
        if async_engine and (coalesce or backend != "vllm"):
            raise ValueError("async_engine batches concurrent calls in vLLM's engine: it needs the vllm backend "
                             f"and excludes coalesce (got backend={backend!r}, coalesce={coalesce})")
        if not ray.is_initialized():
            raise RuntimeError("PRMActorGroup needs a running Ray (call ray.init first)")
        if num_gpus_per_actor is None:
            num_gpus_per_actor = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        self.max_failures = max_failures
        self.min_shard_responses = max(1, min_shard_responses)
        self._next_actor = 0
        self._lock = threading.Lock()  # the turn and the failure count, for calls from threads
        self._ready_lock = threading.Lock()  # held while the first caller waits for the actors
        self.ready_timeout_s = ready_timeout_s
        ready_by = time.monotonic() + ready_timeout_s
        self.call_timeout_s = call_timeout_s
        self.model_name_or_path, self.backend = str(model_name_or_path), backend
        self.counts = {"calls": [0] * num_actors, "failures": [0] * num_actors}
        self.last_stats: PRMStats | None = None
        bundle = {"CPU": num_cpus_per_actor}
        if num_gpus_per_actor:
            bundle["GPU"] = num_gpus_per_actor
        if node_resource:  # --placement.prm: the node(s) started with this custom resource
            from prpo_openrlhf.trainer.placement import BUNDLE_SHARE

            bundle[node_resource] = BUNDLE_SHARE
        self.placement_group = placement_group([dict(bundle) for _ in range(num_actors)],
                                               strategy=placement_strategy)
        self._wait_ready(self.placement_group.ready(), ready_by, f"placement group of {num_actors} x {bundle}")
        remote_cls = ray.remote(AsyncPRMActor if async_engine else PRMActor)
        if async_engine:
            scorer_kwargs = {**scorer_kwargs, "async_engine": True}
        threads = max(1, int(num_cpus_per_actor)) if not num_gpus_per_actor else None
        concurrency = ASYNC_CALLS if async_engine else COALESCE_THREADS if coalesce else 1
        self.actors = [
            remote_cls.options(
                num_cpus=num_cpus_per_actor, num_gpus=num_gpus_per_actor,
                max_restarts=max_restarts, max_task_retries=0, max_concurrency=concurrency,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    self.placement_group, placement_group_bundle_index=i),
            ).remote(model_name_or_path, backend, scorer_kwargs, threads, coalesce)
            for i in range(num_actors)
        ]
        # The actors load their model while the caller goes on (the trainer starts the policy's
        # actors meanwhile, not after the PRM has loaded); the first call, ready() or describe()
        # waits for them.
        self._start = ([a.info.remote() for a in self.actors], ready_by, f"{num_actors} PRM actors ({model_name_or_path})")
        self._started: list[dict] | None = None

    def ready(self) -> list[dict]:
        """What each actor said once its model was loaded (pid, host, max_length, ...); blocks
        until then, at most ``ready_timeout_s`` from the group's creation, and raises
        :class:`PRMActorGroupError` (the group shut down) if an actor failed to start or timed out."""
        with self._ready_lock:
            if self._started is None:
                self._started = self._wait_ready(*self._start)
            return self._started

    def _wait_ready(self, refs, ready_by: float, what: str):
        try:
            return ray.get(refs, timeout=max(0.0, ready_by - time.monotonic()))
        except ray.exceptions.GetTimeoutError as err:
            self.shutdown()
            raise PRMActorGroupError(f"{what} not ready within {self.ready_timeout_s:.0f} s; cluster "
                                     f"resources: {ray.available_resources()}") from err
        except RayActorError as err:  # e.g. the checkpoint failed to load in an actor
            self.shutdown()
            raise PRMActorGroupError(f"{what} failed to start: {err}") from err

    def take_actors(self, n: int) -> list[int]:
        """Indices of the next ``n`` actors in turn (calls smaller than the group spread out)."""
        with self._lock:
            first, self._next_actor = self._next_actor, (self._next_actor + n) % len(self.actors)
        return [(first + k) % len(self.actors) for k in range(n)]

    def count(self, what: str, k: int) -> None:
        with self._lock:
            self.counts[what][k] += 1

    @property
    def total_failures(self) -> int:
        return sum(self.counts["failures"])

    def wait_restarted(self, k: int, deadline: float | None = None) -> None:
        """Block until actor ``k`` answers again after a crash.

        While Ray restarts an actor (a new process that reloads the model), calls to it fail at
        once with ActorUnavailableError; resubmitting the shard straight away would burn the
        failure budget on one crash. A permanently dead actor returns here at once, and the
        resubmitted shard then fails and counts. ``deadline`` (monotonic) is the call's.
        """
        deadline = min(time.monotonic() + self.ready_timeout_s, deadline or float("inf"))
        delay = 0.1
        while True:
            try:
                ray.get(self.actors[k].info.remote(),
                        timeout=max(0.0, deadline - time.monotonic()))
                return
            except ray.exceptions.ActorUnavailableError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(delay)
                delay = min(2.0, delay * 2)
            except ray.exceptions.GetTimeoutError:
                break
            except RayActorError:
                return
        raise PRMActorGroupError(f"PRM actor {k} did not come back from a crash before the "
                                 f"call's deadline (ready_timeout_s={self.ready_timeout_s:.0f})")

    def info(self) -> list[dict]:
        """Each actor's live state; waits behind the calls queued on it (see :meth:`describe`)."""
        return ray.get([a.info.remote() for a in self.actors])

    def describe(self) -> dict:
        """The group from the driver's own counters: once started (see :meth:`ready`), never waits
        on a busy or restarting actor."""
        started = self.ready()
        first = started[0] if started else {}
        with self._lock:
            actors = [{"pid_at_start": s.get("pid"), "host": s.get("host"), "calls": c, "failures": f}
                      for s, c, f in zip(started, self.counts["calls"], self.counts["failures"])]
        return {"model": self.model_name_or_path, "backend": self.backend,
                "max_length": first.get("max_length"), "step_tag": first.get("step_tag"),
                "call_timeout_s": self.call_timeout_s, "actors": actors}

    def score_async(self, problems: list[str], segments: list[list[str]],
                    max_failures: int | None = None, timeout_s: float | None = None) -> PRMScoreFuture:
        """Dispatch a batch now; the returned future's ``result()`` gives (scores, stats).

        ``timeout_s``: this call's deadline from now (default ``call_timeout_s``)."""
        from .inputs import validate_batch

        validate_batch(problems, segments)
        self.ready()  # the call's deadline counts from a loaded PRM
        return PRMScoreFuture(self, list(problems), [list(s) for s in segments],
                              max_failures or self.max_failures,
                              self.call_timeout_s if timeout_s is None else timeout_s)

    def score_with_stats(self, problems, segments, timeout: float | None = None):
        return self.score_async(problems, segments, timeout_s=timeout).result()

    def score(self, problems: list[str], segments: list[list[str]],
              timeout: float | None = None) -> list[list[float]]:
        return self.score_with_stats(problems, segments, timeout)[0]

    def shutdown(self) -> None:
        """Kill the actors and free their placement group."""
        for a in getattr(self, "actors", []):
            ray.kill(a, no_restart=True)
        self.actors = []
        if getattr(self, "placement_group", None) is not None:
            remove_placement_group(self.placement_group)
            self.placement_group = None
