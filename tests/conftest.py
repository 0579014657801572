"""Session fixtures: tiny real checkpoints written at test time, shared by every test."""
import os

import pytest

# Tests run on CPU; keep thread pools small on 2-core machines and Ray/vLLM quiet.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_lm_path(tmp_path_factory):
    """A random 2-layer Qwen2ForCausalLM (hidden 128, head 64) with a byte-level BPE tokenizer."""
    from prpo_openrlhf.testing.tiny_models import write_tiny_lm

    return str(write_tiny_lm(tmp_path_factory.mktemp("tiny_lm")))


@pytest.fixture(scope="session")
def tiny_prm_path(tmp_path_factory):
    """A random checkpoint in the Qwen2ForProcessRewardModel layout (step tag <extra_0>)."""
    from prpo_openrlhf.testing.tiny_models import write_tiny_prm

    return str(write_tiny_prm(tmp_path_factory.mktemp("tiny_prm")))
