"""PRMActorGroup's start-up: the actors load their model while the caller goes on; the first
call (or ready()) waits for them, and an actor that cannot start is named there."""
import pytest

from .reference import PROBLEMS, SEGMENTS

pytest.importorskip("ray")


def test_the_group_returns_before_its_actors_have_loaded(ray_cluster, tiny_prm_path, hf_scorer):
    from prpo_openrlhf.prm import PRMActorGroup

    group = PRMActorGroup(tiny_prm_path, num_actors=1, backend="hf", dtype="fp32", ready_timeout_s=300)
    try:
        assert group._started is None  # nothing waited on the actor's start-up yet
        scores = group.score(PROBLEMS, SEGMENTS)  # waits for it, then scores
        assert scores == [pytest.approx(ref, abs=1e-5) for ref in hf_scorer.score(PROBLEMS, SEGMENTS)]
        (info,) = group.ready()
        assert info["pid"] > 0 and group.describe()["actors"][0]["pid_at_start"] == info["pid"]
    finally:
        group.shutdown()


def test_an_actor_that_cannot_load_its_model_fails_the_first_call_by_name(ray_cluster, tmp_path):
    from prpo_openrlhf.prm import PRMActorGroup, PRMActorGroupError

    missing = tmp_path / "no-such-prm"
    group = PRMActorGroup(str(missing), num_actors=1, backend="hf", dtype="fp32", ready_timeout_s=300)
    with pytest.raises(PRMActorGroupError, match=r"1 PRM actors \(.*no-such-prm\) failed to start"):
        group.score(PROBLEMS, SEGMENTS)
    assert group.actors == [] and group.placement_group is None  # shut down: its bundle is free again
    with pytest.raises(PRMActorGroupError, match="failed to start"):  # and stays failed
        group.ready()
