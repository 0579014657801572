"""PRMActorGroup on a local 2-CPU Ray cluster: sharding, async calls, actors killed mid-batch."""
import os
import signal
import time

import pytest

from .reference import PROBLEMS, SEGMENTS

ray = pytest.importorskip("ray")

# 16 responses of a few hundred tokens: each actor's shard is a real forward of tens of ms.
BIG_PROBLEMS = [PROBLEMS[i % 4] + f" (variant {i})" for i in range(16)]
BIG_SEGMENTS = [[s * (1 + i % 3) for s in SEGMENTS[i % 4]] + [f"check {i}"] for i in range(16)]


@pytest.fixture(scope="module")
def group(ray_cluster, tiny_prm_path):
    from prpo_openrlhf.prm import PRMActorGroup

    grp = PRMActorGroup(tiny_prm_path, num_actors=2, backend="hf", dtype="fp32",
                        max_failures=3, ready_timeout_s=300)
    yield grp
    grp.shutdown()


def test_group_scores_equal_the_local_scorer(group, hf_scorer):
    future = group.score_async(BIG_PROBLEMS, BIG_SEGMENTS)
    scores, stats = future.result(timeout=300)
    ref = hf_scorer.score(BIG_PROBLEMS, BIG_SEGMENTS)
    assert len(scores) == len(ref)
    for a, b in zip(scores, ref):
        assert a == pytest.approx(b, abs=1e-5)
    assert stats.responses == 16 and stats.segments == sum(len(s) for s in BIG_SEGMENTS)
    assert group.score([], []) == []


def test_actors_sit_on_their_own_cpu_bundles(group):
    table = ray.util.placement_group_table(group.placement_group)
    assert table["state"] == "CREATED"
    assert list(table["bundles"].values()) == [{"CPU": 1.0}, {"CPU": 1.0}]
    infos = group.info()
    assert len({i["pid"] for i in infos}) == 2 and all(i["device"] == "cpu" for i in infos)


def test_small_calls_go_whole_to_the_actors_in_turn(group, hf_scorer):
    # One prompt group (4 responses < min_shard_responses) is one shard; the next call takes
    # the next actor, so per-group calls keep both actors busy without one-response shards.
    first = group.score_async(PROBLEMS, SEGMENTS)
    second = group.score_async(PROBLEMS, SEGMENTS)
    (a,), (b,) = first._actor_of, second._actor_of
    assert b == (a + 1) % 2
    ref = hf_scorer.score(PROBLEMS, SEGMENTS)
    for future in (first, second):
        scores, stats = future.result(timeout=300)
        assert stats.responses == len(PROBLEMS) and stats.batches >= 1
        for x, y in zip(scores, ref):
            assert x == pytest.approx(y, abs=1e-5)
    # Two single-shard calls on two actors: the next call's first shard is actor a's again.


def test_service_over_the_group_scores_prompt_groups_side_by_side(group, hf_scorer):
    """prpo-serve-prm --num-actors: two one-group requests in flight from one client are scored
    by the two actors at the same time (a service lock would run them one after the other)."""
    from prpo_openrlhf.prm import PRMClient, PRMServer

    halves = [(BIG_PROBLEMS[:8], [s * 3 for s in BIG_SEGMENTS[:8]]),
              (BIG_PROBLEMS[8:], [s * 3 for s in BIG_SEGMENTS[8:]])]  # one shard each
    before = [i["calls"] for i in group.info()]
    server = PRMServer(group, port=0).start()
    client = PRMClient(server.url, max_in_flight=2)
    try:
        futures = [client.score_async(p, s) for p, s in halves]
        results = [f.result(timeout=300) for f in futures]
    finally:
        client.close()
        server.shutdown()
    for (problems, segments), (scores, stats) in zip(halves, results):
        assert stats.responses == len(problems)
        for x, y in zip(scores, hf_scorer.score(problems, segments)):
            assert x == pytest.approx(y, abs=1e-5)
    infos = group.info()
    assert [i["calls"] - b for i, b in zip(infos, before)] == [1, 1]  # one request per actor
    (s0, e0), (s1, e1) = (i["last_call"] for i in infos)
    assert max(s0, s1) < min(e0, e1), f"the actors scored one after the other: {infos}"


def test_a_stuck_actor_ends_the_call_at_its_deadline_and_info_answers_meanwhile(group, hf_scorer):
    """Before: the group waited on a stuck actor without limit (ray.get without a timeout) and
    the service's /info blocked behind the actors' queues."""
    import requests

    from prpo_openrlhf.prm import PRMClient, PRMClientError, PRMServer

    pid = group.info()[0]["pid"]
    server = PRMServer(group, port=0).start()
    os.kill(pid, signal.SIGSTOP)  # a hung actor: alive to Ray, never answering
    try:
        start = time.monotonic()
        future = group.score_async(BIG_PROBLEMS, BIG_SEGMENTS, timeout_s=2.0)
        # Actor 0 is named; on a loaded machine the healthy actor 1 may be late too ([0, 1]).
        with pytest.raises(TimeoutError, match=r"pending on actor\(s\) \[0[,\]]"):
            future.result()
        assert 1.9 < time.monotonic() - start < 10
        start = time.monotonic()
        info = requests.get(server.url + "/info", timeout=10).json()
        assert time.monotonic() - start < 2 and info["actors"][0]["pid_at_start"] == pid
        assert info["actors"][0]["calls"] >= 1 and info["call_timeout_s"] == 600.0
        with pytest.raises(PRMClientError) as err:
            PRMClient(server.url, timeout_s=2.0).score(BIG_PROBLEMS, BIG_SEGMENTS)
        assert err.value.status == 504 and "deadline" in str(err.value)
        assert server.info_payload()["counts"]["timed_out"] == 1
    finally:
        os.kill(pid, signal.SIGCONT)
        server.shutdown()
    # The actor serves again once it resumes.
    for a, b in zip(group.score(BIG_PROBLEMS, BIG_SEGMENTS, timeout=300),
                    hf_scorer.score(BIG_PROBLEMS, BIG_SEGMENTS)):
        assert a == pytest.approx(b, abs=1e-5)


def test_actor_killed_mid_batch_is_restarted_and_its_share_retried(group, hf_scorer):
    pid = group.info()[0]["pid"]
    future = group.score_async(BIG_PROBLEMS, BIG_SEGMENTS)
    # SIGKILL right after dispatch: the shard is in flight (a real crash, like an OOM kill).
    os.kill(pid, signal.SIGKILL)
    scores, stats = future.result(timeout=300)
    assert future.failures == {0: 1}
    for a, b in zip(scores, hf_scorer.score(BIG_PROBLEMS, BIG_SEGMENTS)):
        assert a == pytest.approx(b, abs=1e-5)
    assert stats.responses == 16
    assert group.info()[0]["pid"] != pid  # Ray restarted it in a new process


def test_an_actor_that_stays_dead_fails_the_call_after_max_failures(group):
    """Last in the module: it leaves actor 1 dead for good (Ray will not restart it)."""
    from prpo_openrlhf.prm import PRMActorGroupError

    ray.kill(group.actors[1], no_restart=True)
    for _ in range(600):  # ray.kill is asynchronous: wait until Ray reports the actor dead
        try:
            ray.get(group.actors[1].info.remote(), timeout=60)
            time.sleep(0.1)
        except ray.exceptions.RayActorError:
            break
    future = group.score_async(BIG_PROBLEMS, BIG_SEGMENTS, max_failures=2)
    with pytest.raises(PRMActorGroupError, match=r"PRM actor 1 failed 2 time\(s\) scoring "
                                                 r"responses \[\d+, 16\)"):
        future.result(timeout=300)
    assert future.failures == {1: 2}  # the first death and the retry; no scores made up


def test_pin_process_moves_every_thread_and_what_starts_later():
    """PRPO_PRM_CPUS pins the PRM actor's whole process (benchmarks/bench_pinned.py): threads that
    were already running (Ray's) and a process started afterwards (vLLM's engine core)."""
    import subprocess
    import sys

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs 2 CPUs")
    script = (
        "import os, subprocess, sys, threading, time\n"
        "from prpo_openrlhf.prm.ray_group import pin_process\n"
        "ev = threading.Event()\n"
        "t = threading.Thread(target=ev.wait, daemon=True); t.start()\n"
        f"pin_process({{{cpus[-1]}}})\n"
        "tids = os.listdir('/proc/self/task')\n"
        "print(sorted({c for tid in tids for c in os.sched_getaffinity(int(tid))}), len(tids))\n"
        "print(subprocess.run([sys.executable, '-c', 'import os; print(sorted(os.sched_getaffinity(0)))'],\n"
        "                     capture_output=True, text=True).stdout.strip())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    threads_line, child_line = out.stdout.strip().splitlines()
    allowed, n_threads = threads_line.rsplit(" ", 1)
    assert allowed == f"[{cpus[-1]}]" and int(n_threads) >= 2  # the waiting thread and the main one at least
    assert child_line == f"[{cpus[-1]}]"
