"""One in-process vLLM CPU engine and one HF model for every test of tests/rollout."""
import pytest
import torch


@pytest.fixture(scope="package")
def peaked_lm_path(tmp_path_factory):
    """The tiny LM with its output layer scaled x8: peaked, varied distributions.

    The random tiny LM is close to uniform over its 260 tokens (entropy ~5.53 everywhere), which
    would hide a wrong temperature or a wrong position; scaled logits spread entropies over 1-5.
    """
    from safetensors.torch import load_file, save_file

    from prpo_openrlhf.testing.tiny_models import write_tiny_lm

    path = write_tiny_lm(tmp_path_factory.mktemp("peaked_lm"))
    weights = load_file(str(path / "model.safetensors"))
    weights["lm_head.weight"] = (weights["lm_head.weight"] * 8.0).contiguous()
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    return str(path)


@pytest.fixture(scope="package")
def llm(peaked_lm_path):
    from vllm import LLM

    from prpo_openrlhf.vllm_cpu import cpu_engine_kwargs, in_process_engine_env, shut_down

    in_process_engine_env()
    engine = LLM(model=peaked_lm_path, **cpu_engine_kwargs(max_model_len=256))
    yield engine
    shut_down(engine)


@pytest.fixture(scope="package")
def hf_model(peaked_lm_path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(peaked_lm_path, dtype=torch.float32).eval()


@pytest.fixture(scope="package")
def tokenizer(peaked_lm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(peaked_lm_path)
