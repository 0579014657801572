"""The run's watchdog: a dead vLLM engine or model actor ends the training, naming what died.

Upstream's trainer waits on its actors with ``ray.get`` and no deadline. When a vLLM engine's
core process dies, the engine's Ray actor lives on: vLLM marks the engine dead, but the
trainer is then blocked in a wait that no dead engine will ever end (the weight broadcast to the
engines, measured: about 230 s, then the run ended "successfully" with no model saved).

The watchdog, a thread of the driver, looks every ``interval_s`` at:
- each watched actor's state in Ray's GCS (no call into the actor, which may be busy for
  minutes inside a training step): DEAD is a death, with Ray's cause;
- each vLLM engine's ``errored`` flag (vLLM's AsyncLLM sets it when its engine core process
  dies), read by a call that runs beside the engine's own coroutines. A probe left unanswered
  for ``hang_warn_s`` is logged (an event loop that long blocked is a hang in the making) but
  ends nothing: only a certain death does.

On a death it logs what died and kills every watched actor (their vLLM processes go with them:
see vllm_lifeline.py), so that the trainer's waits on them raise at once; if the driver is
still inside the training ``unwind_s`` later, it interrupts the driver's main thread.
``failure`` then holds the message; ``launch.train`` raises RunFailed with it.
"""
from __future__ import annotations

import _thread
import logging
import threading
import time

import ray
from openrlhf.trainer.ray.launcher import RayActorGroup

logger = logging.getLogger(__name__)


def _engine_errored(engine) -> bool:
    """Runs inside an OpenRLHF RolloutRayActor (``__ray_call__``): vLLM's AsyncLLM dead flag."""
    return bool(engine.llm.errored)


def _actor_state(actor) -> tuple[str, str]:
    """(state, cause) from Ray's GCS, without a call into the actor."""
    from ray._private import state  # the public ray.util.state needs the dashboard, absent on ray.init()

    info = state.actors(actor._actor_id.hex()) or {}
    cause = info.get("DeathCause")
    if cause is not None and hasattr(cause, "actor_died_error_context"):
        cause = cause.actor_died_error_context.error_message or str(cause)
    return info.get("State", "UNKNOWN"), str(cause or "")


class RunWatchdog(threading.Thread):
    active: "RunWatchdog | None" = None  # the driver's, from start() to stop(): WatchedActorGroup reports to it

    def __init__(self, interval_s: float = 5.0, hang_warn_s: float = 120.0, unwind_s: float = 60.0,
                 on_failure=None):
        super().__init__(name="prpo-run-watchdog", daemon=True)
        self.interval_s, self.hang_warn_s, self.unwind_s = interval_s, hang_warn_s, unwind_s
        self.on_failure = on_failure or _thread.interrupt_main
        self.failure: str | None = None
        self._actors: dict[str, object] = {}  # name -> handle
        self._engines: set[str] = set()  # names of the vLLM engines among them
        # engine name -> (pending probe, sent at, seconds of waiting at which the next warning is due)
        self._probes: dict[str, tuple[object, float, float]] = {}
        self._lock, self._ended = threading.Lock(), threading.Event()

    def watch(self, name: str, actor, engine: bool = False) -> None:
        with self._lock:
            self._actors[name] = actor
            if engine:
                self._engines.add(name)

    def watch_engines(self, engines) -> None:
        for i, engine in enumerate(engines):
            self.watch(f"vLLM engine {i}", engine, engine=True)

    def watch_group(self, group_name: str, handles) -> None:
        for i, actor in enumerate(handles):
            self.watch(f"{group_name} actor {i}", actor)

    def start(self) -> None:
        RunWatchdog.active = self
        super().start()

    def stop(self) -> None:
        self._ended.set()
        if RunWatchdog.active is self:
            RunWatchdog.active = None

    def run(self) -> None:
        while not self._ended.wait(self.interval_s):
            death = self.check()
            if death:
                self._fail(death)
                return

    def check(self) -> str | None:
        """One look at every watched actor; the first death found, or None."""
        with self._lock:
            actors = dict(self._actors)
        for name, actor in actors.items():
            try:
                state, cause = _actor_state(actor)
            except Exception as exc:  # the GCS itself unreachable: Ray's own errors will follow
                logger.warning("run watchdog: cannot read the state of %s: %r", name, exc)
                continue
            if state == "DEAD":
                return f"{name} died" + (f": {cause}" if cause else "")
            if name in self._engines:
                death = self._probe_engine(name, actor)
                if death:
                    return death
        return None

    def _probe_engine(self, name: str, engine) -> str | None:
        ref, sent, warn_at = self._probes.get(name) or (None, 0.0, 0.0)
        if ref is None:
            self._probes[name] = (engine.__ray_call__.remote(_engine_errored), time.monotonic(), self.hang_warn_s)
            return None
        ready, _ = ray.wait([ref], timeout=0)
        if not ready:
            waited = time.monotonic() - sent
            if waited > warn_at:  # then again each time the wait doubles, not at every check
                logger.warning("run watchdog: %s has not answered a health probe for %.0f s", name, waited)
                self._probes[name] = (ref, sent, 2 * warn_at)
            return None
        del self._probes[name]
        try:
            errored = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            return f"{name} died: {exc}"
        return f"{name}: its vLLM engine core died (vLLM reports the engine dead)" if errored else None

    def _fail(self, message: str) -> None:
        self.failure = message
        logger.error("run watchdog: %s; stopping the run", message)
        with self._lock:
            actors = list(self._actors.values())
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already dead
                pass
        if not self._ended.wait(self.unwind_s):  # the driver did not leave the training: make it
            self.on_failure()


class WatchedActorGroup(RayActorGroup):
    """Upstream's actor group, reporting its actors to the driver's watchdog once started. A class
    of this module, not of a closure: the trainer actor receives the groups pickled by reference.
    ``node_resource`` (--placement.actor, swapped in for a run by placement.py) fills upstream's
    own ``resources`` argument, so the group's actors and bundles go to the node holding it."""

    node_resource: str | None = None

    def __init__(self, *args, resources=None, num_resources_per_node=None, **kwargs):
        if resources is None and self.node_resource:
            from prpo_openrlhf.trainer.placement import ACTOR_SHARE, BUNDLE_SHARE

            resources, num_resources_per_node = {self.node_resource: ACTOR_SHARE}, BUNDLE_SHARE
        super().__init__(*args, resources=resources, num_resources_per_node=num_resources_per_node, **kwargs)

    def _initiate_actors(self, pg, num_gpus_per_actor):
        super()._initiate_actors(pg, num_gpus_per_actor)
        if RunWatchdog.active is not None:
            RunWatchdog.active.watch_group(self.ray_actor_type.__ray_metadata__.class_name, self._actor_handlers)
