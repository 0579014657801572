"""Coalescing of PRM calls (prm/coalesce.py) with the real hf scorer on the tiny PRM and the exact
verifier: joint forwards give each call its own scores and stats, errors stay with their call,
and calls that arrive during a forward share the next one."""
import threading
import time

import pytest

from prpo_openrlhf.prm.coalesce import Coalescer, _Call
from prpo_openrlhf.prm.factory import make_scorer
from prpo_openrlhf.prm.scorer import PRMScoreError

from .reference import PROBLEMS, SEGMENTS

PROBLEM = "Compute (3+4)*2."
RIGHT = ["3+4=7\n", "7*2=14\n", "\\boxed{14}"]
SLIP = ["3+4=8\n", "8*2=16\n", "\\boxed{16}"]


def test_a_joint_forward_gives_each_call_its_own_scores_and_stats(hf_scorer):
    co = Coalescer(hf_scorer)
    calls = [_Call(hf_scorer.prepare(PROBLEMS[i:i + 1], SEGMENTS[i:i + 1])) for i in range(len(PROBLEMS))]
    co._run(calls)
    assert co.forwards == 1
    for i, call in enumerate(calls):
        scores, stats = call.result
        alone, alone_stats = hf_scorer.score_with_stats(PROBLEMS[i:i + 1], SEGMENTS[i:i + 1])
        assert len(scores) == 1 and len(scores[0]) == len(alone[0])
        assert scores[0] == pytest.approx(alone[0], abs=1e-5)  # padding in a larger batch moves the last bits
        assert (stats.responses, stats.segments, stats.scored_segments) == (1, alone_stats.segments,
                                                                           alone_stats.scored_segments)
        assert stats.tokens == alone_stats.tokens
        assert stats.forward_responses == len(PROBLEMS)


def test_an_error_stays_with_the_call_that_caused_it():
    verifier = make_scorer(None, "exact")
    co = Coalescer(verifier)
    good = _Call(verifier.prepare([PROBLEM, PROBLEM], [RIGHT, SLIP]))
    bad = _Call(verifier.prepare(["Prove that sqrt(2) is irrational."], [["It is."]]))
    co._run([good, bad])
    assert good.error is None and good.result[0] == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    assert isinstance(bad.error, PRMScoreError) and bad.result is None
    assert co.forwards == 3  # the joint one, then each alone


def test_calls_arriving_during_a_forward_share_the_next_one(hf_scorer):
    """One large call, then 6 small ones from other threads while it runs: they are answered,
    each with its own scores, in fewer forwards than calls."""
    co = Coalescer(hf_scorer)
    big_p, big_s = PROBLEMS * 32, SEGMENTS * 32
    results, errors = {}, []

    def call(name, problems, segments):
        try:
            results[name] = co.score_with_stats(problems, segments)
        except Exception as exc:  # recorded, so that the assertion names it
            errors.append(exc)

    threads = [threading.Thread(target=call, args=("big", big_p, big_s))]
    threads[0].start()
    time.sleep(0.05)
    for k in range(6):
        i = k % len(PROBLEMS)
        threads.append(threading.Thread(target=call, args=(k, PROBLEMS[i:i + 1], SEGMENTS[i:i + 1])))
        threads[-1].start()
    for t in threads:
        t.join(120)
    assert not errors and len(results) == 7
    assert co.forwards < 7
    assert max(stats.forward_responses for _, stats in results.values()) > 1
    for k in range(6):
        i = k % len(PROBLEMS)
        assert results[k][0][0] == pytest.approx(hf_scorer.score(PROBLEMS[i:i + 1], SEGMENTS[i:i + 1])[0], abs=1e-5)
    assert len(results["big"][0]) == len(big_p)


def test_an_actor_group_with_coalesce_scores_concurrent_groups_in_shared_forwards(ray_cluster, tiny_prm_path, hf_scorer):
    """PRMActorGroup(coalesce=True): 12 one-group calls dispatched at once to one actor come back
    right, in fewer forwards than calls (the actor's own count)."""
    from prpo_openrlhf.prm import PRMActorGroup

    group = None
    try:
        group = PRMActorGroup(tiny_prm_path, num_actors=1, backend="hf", dtype="fp32", coalesce=True,
                              ready_timeout_s=300)
        futures = [group.score_async(PROBLEMS, SEGMENTS) for _ in range(12)]
        results = [f.result(timeout=300) for f in futures]
        reference = hf_scorer.score(PROBLEMS, SEGMENTS)
        for scores, stats in results:
            assert stats.responses == len(PROBLEMS)
            for a, b in zip(scores, reference):
                assert a == pytest.approx(b, abs=1e-5)
        (info,) = group.info()
        assert info["calls"] == 12 and info["coalesced_forwards"] < 12
        assert max(stats.forward_responses for _, stats in results) > len(PROBLEMS)
    finally:
        if group is not None:
            group.shutdown()
