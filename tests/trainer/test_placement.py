"""--placement.{actor,vllm,prm}: the flags, the refusals before anything is placed, and, on a real
local Ray, what a group of the run asks for. (Three nodes, one group on each, through a real
training: test_real_pipeline.py::test_three_nodes_one_group_on_each.)"""
import pytest
import ray
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

from prpo_openrlhf.cli.train_prpo_ray import parse_args
from prpo_openrlhf.trainer.placement import ACTOR_SHARE, BUNDLE_SHARE, _with_resource, check_placement
from prpo_openrlhf.trainer.swap import swapped
from prpo_openrlhf.trainer.watchdog import WatchedActorGroup


def _args(*extra):
    return parse_args(["--actor.model_name_or_path", "m", "--algo.advantage.estimator", "prpo",
                       "--prm.model_name_or_path", "p", "--rollout.n_samples_per_prompt", "4", "--algo.kl.use_loss",
                       "--vllm.num_engines", "1", *extra])


def test_the_flags_reach_the_args():
    args = _args("--placement.actor", "trainer_node", "--placement.vllm", "rollout_node", "--placement.prm", "prm_node")
    assert (args.placement.actor, args.placement.vllm, args.placement.prm) == ("trainer_node", "rollout_node", "prm_node")
    assert _args().placement.prm is None


def test_a_resource_no_node_has_is_refused_by_name():
    with pytest.raises(SystemExit, match=r"--placement.prm prm_node: no node .*custom resources here: \['trainer_node'\]"):
        check_placement(_args("--placement.prm", "prm_node", "--placement.actor", "trainer_node"),
                        {"CPU": 8, "GPU": 4, "trainer_node": 1.0, "node:10.0.0.1": 1.0})
    check_placement(_args("--placement.actor", "trainer_node"), {"CPU": 8, "trainer_node": 1.0})  # present: passes


def test_vllm_apart_from_the_actors_it_is_colocated_with_is_refused():
    with pytest.raises(SystemExit, match="--train.colocate_all"):
        check_placement(_args("--train.colocate_all", "--placement.actor", "a", "--placement.vllm", "b"),
                        {"a": 1.0, "b": 1.0})


@ray.remote(num_cpus=0)
class _Member:
    """A stand-in model actor for upstream's RayActorGroup: only the constructor it calls."""

    def __init__(self, world_size, rank, master_addr, master_port):
        self.rank = rank

    def get_master_addr_port(self):
        return "127.0.0.1", 0


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=4, num_gpus=2, resources={"trainer_node": 1}, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_bundles_and_actors_ask_for_the_node_resource(local_ray):
    pg = _with_resource(placement_group, "trainer_node")([{"CPU": 0.1}, {"CPU": 0.1}])
    ray.get(pg.ready(), timeout=60)
    bundles = placement_group_table(pg)["bundles"]
    assert [b["trainer_node"] for b in bundles.values()] == [BUNDLE_SHARE] * 2
    remove_placement_group(pg)

    with swapped(WatchedActorGroup, "node_resource", "trainer_node"):
        group = WatchedActorGroup(1, 2, _Member, num_gpus_per_actor=0.1)  # 2 "GPUs" per node: upstream's own bundles
    assert group._resources == {"trainer_node": ACTOR_SHARE}
    # Each actor asks for the resource inside its bundle: it starts only because the bundle holds it.
    ray.get([a.get_master_addr_port.remote() for a in group._actor_handlers], timeout=60)
    assert ray.available_resources()["trainer_node"] == pytest.approx(1 - 2 * BUNDLE_SHARE)  # upstream's 2 bundles
    assert WatchedActorGroup.node_resource is None  # swapped back
    assert WatchedActorGroup(1, 1, _Member, num_gpus_per_actor=0.1)._resources is None  # no flag: anywhere
