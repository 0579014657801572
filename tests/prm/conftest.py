"""Fixtures of the PRM tests: a scorer on the tiny PRM and a PRM with a 256-token limit."""
import pytest


@pytest.fixture(scope="session")
def short_prm_path(tmp_path_factory):
    """The tiny PRM with max_position_embeddings=256 (same seed, so the same weights)."""
    from prpo_openrlhf.testing.tiny_models import write_tiny_prm

    return str(write_tiny_prm(tmp_path_factory.mktemp("short_prm"), max_position_embeddings=256))


@pytest.fixture(scope="session")
def hf_scorer(tiny_prm_path):
    from prpo_openrlhf.prm import PRMScorer

    return PRMScorer(tiny_prm_path, "hf", dtype="fp32", device="cpu")


@pytest.fixture(scope="module")
def ray_cluster():
    """A local 2-CPU Ray for the module's PRM actor groups; a cluster another module left running
    is reused, and only one started here is shut down."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()
