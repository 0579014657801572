"""The PRM actor on vLLM's async engine (PRMActorGroup(async_engine=True)): concurrent prompt
groups are scored right and batched together by vLLM, on a local Ray cluster with the tiny PRM."""
import pytest

from prpo_openrlhf.prm import PRMScorer

from .reference import PROBLEMS, SEGMENTS

pytest.importorskip("ray")
MAX_LEN = 512


def test_the_async_backend_scores_only_through_its_async_path():
    with pytest.raises(ValueError, match="async_engine needs the vllm backend"):
        PRMScorer("unused", "hf", async_engine=True)


def test_concurrent_groups_share_the_engine_and_score_like_hf(ray_cluster, tiny_prm_path):
    from prpo_openrlhf.prm import PRMActorGroup

    hf = PRMScorer(tiny_prm_path, "hf", device="cpu", max_length=MAX_LEN)
    group = None
    try:
        group = PRMActorGroup(tiny_prm_path, num_actors=1, backend="vllm", async_engine=True, dtype="fp32",
                              max_length=MAX_LEN, ready_timeout_s=300)
        # one prompt group per call, all dispatched at once, as PRPO does while vLLM generates
        calls = [(PROBLEMS[i % 4:] + PROBLEMS[:i % 4], SEGMENTS[i % 4:] + SEGMENTS[:i % 4]) for i in range(12)]
        futures = [group.score_async(p, s) for p, s in calls]
        results = [f.result(timeout=300) for f in futures]
        for (problems, segments), (scores, stats) in zip(calls, results):
            assert stats.responses == len(problems) and stats.segments == sum(len(s) for s in segments)
            for got, want in zip(scores, hf.score(problems, segments)):
                assert got == pytest.approx(want, abs=1e-4)
        (info,) = group.info()
        assert info["calls"] == 12
        # the engine held more than one call's responses at once: the groups were batched together
        assert max(stats.forward_responses for _, stats in results) > len(PROBLEMS)
        # a response whose only segment lies past max_length needs no forward and gets the fill
        (filled,), stats = group.score_with_stats(["y" * 4 * MAX_LEN], [["s"]], timeout=300)
        assert filled == [0.5] and stats.filled_segments == 1
    finally:
        if group is not None:
            group.shutdown()
