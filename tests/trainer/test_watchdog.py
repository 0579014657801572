"""The run's watchdog on a real local Ray: a killed actor is named, the others are stopped, the
driver is told; a live but busy actor is left alone. (A killed vLLM engine core inside a real
training: test_real_pipeline.py.)"""
import os
import signal
import threading
import time

import pytest
import ray

from prpo_openrlhf.trainer.watchdog import RunWatchdog


@ray.remote
class Worker:
    def pid(self):
        return os.getpid()

    def busy(self, seconds):
        time.sleep(seconds)
        return seconds


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_busy_actors_are_alive_and_a_killed_one_is_named(local_ray):
    dog = RunWatchdog()
    a, b = Worker.remote(), Worker.remote()
    pid = ray.get(a.pid.remote())
    ray.get(b.pid.remote())
    dog.watch_group("PolicyModelActor", [a, b])
    busy = a.busy.remote(60)  # a sync actor inside a long call: the watchdog must not wait on it
    t0 = time.monotonic()
    assert dog.check() is None
    assert time.monotonic() - t0 < 5
    os.kill(pid, signal.SIGKILL)
    found = []
    assert _wait(lambda: found.append(dog.check()) or found[-1] is not None), found
    assert found[-1].startswith("PolicyModelActor actor 0 died: ") and "worker process has died" in found[-1]
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(busy)


def test_a_death_stops_the_other_actors_and_tells_the_driver(local_ray):
    told = threading.Event()
    dog = RunWatchdog(interval_s=0.5, unwind_s=0.5, on_failure=told.set)
    a, b = Worker.remote(), Worker.remote()
    pid = ray.get(a.pid.remote())
    ray.get(b.pid.remote())
    dog.watch_group("ReferenceModelActor", [a, b])
    dog.start()
    waiting = b.busy.remote(120)  # what the trainer would be blocked on
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(ray.exceptions.RayActorError):  # b was killed by the watchdog: the wait ends
        ray.get(waiting, timeout=60)
    assert time.monotonic() - t0 < 30
    assert told.wait(10)
    assert dog.failure.startswith("ReferenceModelActor actor 0 died")
    dog.join(5)
    assert not dog.is_alive()


def test_a_driver_that_leaves_the_training_is_not_interrupted(local_ray):
    told = threading.Event()
    dog = RunWatchdog(interval_s=0.2, unwind_s=5.0, on_failure=told.set)
    a = Worker.remote()
    pid = ray.get(a.pid.remote())
    dog.watch_group("PolicyModelActor", [a])
    dog.start()
    os.kill(pid, signal.SIGKILL)
    assert _wait(lambda: dog.failure is not None)
    dog.stop()  # what launch.train does once upstream's train() has returned or raised
    dog.join(10)
    assert not told.is_set()


@ray.remote
def _save_on_a_full_disk(kind):
    import errno

    if kind == "oserror":
        raise OSError(errno.ENOSPC, "No space left on device", "/ckpt/global_step4/mp_rank_00_model_states.pt")
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1280 vs 1174")


@pytest.mark.parametrize("kind", ["oserror", "torch"])
def test_a_full_disk_in_an_actor_is_found_through_rays_task_error(local_ray, kind):
    """What launch.train reads when upstream's actor runs out of space saving a checkpoint."""
    from prpo_openrlhf.fileio import no_space_in

    with pytest.raises(ray.exceptions.RayTaskError) as info:
        ray.get(_save_on_a_full_disk.remote(kind))
    found = no_space_in(info.value)
    assert found is not None
    assert ("No space left on device" if kind == "oserror" else "unexpected pos") in str(found)
    assert no_space_in(RuntimeError("CUDA out of memory")) is None


def test_a_stuck_engine_is_warned_about_as_the_wait_doubles_not_at_every_check(local_ray, caplog):
    """Before: once a probe was hang_warn_s late, the same warning came every 5 s."""
    dog = RunWatchdog(hang_warn_s=0.5)
    engine = Worker.remote()
    ray.get(engine.pid.remote())
    dog.watch("vLLM engine 0", engine, engine=True)
    busy = engine.busy.remote(4)  # the probe queues behind it for 4 s
    checks = 0
    with caplog.at_level("WARNING", logger="prpo_openrlhf.trainer.watchdog"):
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.5:
            assert dog.check() is None
            checks += 1
            time.sleep(0.1)
    warned = [r for r in caplog.records if "has not answered a health probe" in r.getMessage()]
    # Due at 0.5, 1 and 2 s of waiting (one may fall between two checks on a loaded machine).
    assert checks >= 10 and 2 <= len(warned) <= 3, (checks, [r.getMessage() for r in warned])
    ray.get(busy)
