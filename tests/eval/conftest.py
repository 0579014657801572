"""One vLLM CPU engine on the tiny LM, shared by every evaluation test that generates."""
import pytest


@pytest.fixture(scope="session")
def vllm_backend(tiny_lm_path):
    # Built by the same factory prpo-eval uses; long enough for 5-problem prompts + 16 tokens.
    from prpo_openrlhf.eval.generate import BackendOptions, make_backend

    backend = make_backend("vllm", BackendOptions(model=tiny_lm_path, cpu_kv_cache_mib=64),
                           needed_len=2048)
    yield backend
    del backend
