"""The tests' tiny warm-up recipe: trained once per session, found through PRPO_CACHE_DIR by every
module that asks for ``cache_dir``.

A 64-wide, 2-layer policy with 30 SFT steps on 2-3 operation problems (seconds, not minutes): it
has learned the answer format but little arithmetic.
"""
import pytest

from prpo_openrlhf.local.task import TaskConfig
from prpo_openrlhf.local.warmup import WarmupConfig

TINY = WarmupConfig(task=TaskConfig(n_ops=(2, 3)), steps=30, hidden_size=64, num_layers=2)
# The same recipe as `prpo-local warmup` flags.
TINY_FLAGS = ["--warmup.steps", str(TINY.steps), "--warmup.hidden_size", str(TINY.hidden_size),
              "--warmup.num_layers", str(TINY.num_layers), "--warmup.n_ops", "2,3"]


@pytest.fixture(scope="session")
def _tiny_warmup(tmp_path_factory):
    from prpo_openrlhf.local.warmup import warmed_up_policy

    root = tmp_path_factory.mktemp("prpo_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRPO_CACHE_DIR", str(root))
        path, _ = warmed_up_policy(TINY, progress=False, log=lambda *_: None)
    return root, path


@pytest.fixture(scope="module")
def cache_dir(_tiny_warmup):
    """(cache root, warmed-up policy path); PRPO_CACHE_DIR points at the root for the module."""
    root, path = _tiny_warmup
    mp = pytest.MonkeyPatch()
    mp.setenv("PRPO_CACHE_DIR", str(root))
    yield root, path
    mp.undo()
