"""The tiny warmed-up policy of the prpo-local tests: trained once per session, found by every
trainer of a module that asks for ``cache_dir`` through PRPO_CACHE_DIR.

The warm-up is a 64-wide policy with 30 SFT steps (seconds, not minutes): it has learned the
answer format but little arithmetic, which is enough for the loop to run for real. 34 new
tokens is the least 2-3 operations allow (the tests' task, shorter than the default): the longest
3-operation solution is 33 bytes, plus EOS.
"""
import pytest

from prpo_openrlhf.local.config import TrainConfig

TINY = dict(n_ops="2,3", warmup_steps=30, warmup_hidden_size=64, warmup_num_layers=2, prompts_per_step=4,
            n_samples_per_prompt=4, train_batch_size=8, max_new_tokens=34, eval_problems=8, eval_steps=2,
            save_steps=2, engine="hf", progress=False, lr=1e-3)


@pytest.fixture(scope="session")
def _tiny_warmup(tmp_path_factory):
    from prpo_openrlhf.local.trainer import warmup_config
    from prpo_openrlhf.local.warmup import warmed_up_policy

    root = tmp_path_factory.mktemp("prpo_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRPO_CACHE_DIR", str(root))
        path, _ = warmed_up_policy(warmup_config(TrainConfig(**TINY)), progress=False, log=lambda *_: None)
    return root, path


@pytest.fixture(scope="module")
def cache_dir(_tiny_warmup):
    """(cache root, warmed-up policy path); PRPO_CACHE_DIR points at the root for the module."""
    root, path = _tiny_warmup
    mp = pytest.MonkeyPatch()
    mp.setenv("PRPO_CACHE_DIR", str(root))
    yield root, path
    mp.undo()
