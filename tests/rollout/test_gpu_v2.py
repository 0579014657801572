"""The plugin on vLLM's CUDA default, the V2 model runner (needs a GPU: `make test-gpu`).

Not run in CI and not run in this project's CPU environment; it is the check of the V2 hooks.
"""
import importlib.util

import pytest
import torch

from tests.rollout.reference import hf_entropies

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="needs vLLM (absent from the GPU check's image: scripts/gpu_check.sh)"),
]


@pytest.fixture(scope="module")
def gpu_llm(peaked_lm_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from vllm import LLM

    llm = LLM(model=peaked_lm_path, dtype="float32", max_model_len=256, seed=0,
              gpu_memory_utilization=0.2, enforce_eager=True)
    yield llm
    del llm


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9), (0.0, 1.0)])
def test_v2_runner_entropies_match_hf(gpu_llm, hf_model, temperature, top_p):
    from vllm import SamplingParams

    assert gpu_llm.llm_engine.vllm_config.use_v2_model_runner, "expected the V2 runner on CUDA"
    params = SamplingParams(max_tokens=16, temperature=temperature, top_p=top_p, n=3, seed=11,
                            extra_args={"return_entropy": True})
    plain = SamplingParams(max_tokens=8, temperature=0.8, seed=2)
    outputs = gpu_llm.generate(["Compute (7+5)*3-4.\n", "The cat"], [params, plain], use_tqdm=False)
    assert not hasattr(outputs[1].outputs[0], "token_entropies")
    for completion in outputs[0].outputs:
        ref = hf_entropies(hf_model, outputs[0].prompt_token_ids, completion.token_ids, temperature)
        torch.testing.assert_close(torch.tensor(completion.token_entropies, dtype=torch.float64), ref,
                                   atol=1e-3, rtol=0)
