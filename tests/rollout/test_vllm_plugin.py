"""The plugin on a real in-process vLLM CPU engine (V1 runner), against a HF forward."""
import pytest
import torch
from vllm import SamplingParams

from prpo_openrlhf.rollout import _vllm_worker_hooks, vllm_entropy
from tests.rollout.reference import hf_entropies

PROMPTS = ["Compute (7+5)*3-4.\n", "The cat sat on"]
OPT_IN = {"return_entropy": True}


def _check(hf_model, request_output, temperature, **reference_kwargs):
    assert request_output.outputs, "no completions"
    for completion in request_output.outputs:
        got = completion.token_entropies
        assert isinstance(got, list) and len(got) == len(completion.token_ids) > 0
        ref = hf_entropies(hf_model, request_output.prompt_token_ids, completion.token_ids,
                           temperature, **reference_kwargs)
        torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), ref, atol=1e-4, rtol=0)


@pytest.fixture
def entropy_calls(monkeypatch):
    """Counts the worker's entropy computations (the engine runs in this process)."""
    calls = []
    real = _vllm_worker_hooks.token_entropy

    def counting(logits, temperature=None):
        calls.append(logits.shape[0])
        return real(logits, temperature)

    monkeypatch.setattr(_vllm_worker_hooks, "token_entropy", counting)
    return calls


def test_plugin_is_installed_by_vllm(llm):
    assert vllm_entropy.is_installed(), vllm_entropy.status()


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_entropies_match_hf_forward_with_n_samples(llm, hf_model, temperature, top_p):
    params = SamplingParams(max_tokens=16, temperature=temperature, top_p=top_p, n=3, seed=11,
                            extra_args=OPT_IN)
    outputs = llm.generate(PROMPTS, params, use_tqdm=False)
    for out in outputs:
        assert len(out.outputs) == 3
        _check(hf_model, out, temperature)


def test_no_attribute_and_no_work_without_opt_in(llm, entropy_calls):
    params = SamplingParams(max_tokens=8, temperature=1.0, n=2, seed=3)
    for out in llm.generate(PROMPTS, params, use_tqdm=False):
        for completion in out.outputs:
            assert not hasattr(completion, "token_entropies")
    assert entropy_calls == []
    llm.generate(PROMPTS[:1], SamplingParams(max_tokens=4, seed=3, extra_args=OPT_IN), use_tqdm=False)
    assert entropy_calls and all(n == 1 for n in entropy_calls)


def test_mixed_batch_computes_only_the_opted_in_rows(llm, hf_model, entropy_calls):
    asked = SamplingParams(max_tokens=12, temperature=0.8, seed=5, extra_args=OPT_IN)
    plain = SamplingParams(max_tokens=12, temperature=0.8, seed=6)
    outputs = llm.generate(PROMPTS + PROMPTS, [asked, plain, plain, asked], use_tqdm=False)
    _check(hf_model, outputs[0], 0.8)
    _check(hf_model, outputs[3], 0.8)
    for out in outputs[1:3]:
        assert not hasattr(out.outputs[0], "token_entropies")
    assert max(entropy_calls) == 2  # never more rows than the two opted-in requests


def test_greedy_requests_get_the_entropy_at_temperature_one(llm, hf_model):
    params = SamplingParams(max_tokens=10, temperature=0.0, extra_args=OPT_IN)
    _check(hf_model, llm.generate(PROMPTS[:1], params, use_tqdm=False)[0], 0.0)


def test_entropy_follows_masks_and_penalties_before_temperature(llm, hf_model, tokenizer):
    allowed = tokenizer.encode("0123456789+-*= ") + [tokenizer.eos_token_id]
    params = SamplingParams(max_tokens=12, temperature=0.9, seed=2, allowed_token_ids=allowed,
                            min_tokens=3, repetition_penalty=1.5, extra_args=OPT_IN)
    out = llm.generate(PROMPTS[:1], params, use_tqdm=False)[0]
    _check(hf_model, out, 0.9, allowed=allowed, min_tokens=3, stop_ids=[tokenizer.eos_token_id],
           repetition_penalty=1.5)


def test_install_is_idempotent(llm):
    before = vllm_entropy.status()
    assert vllm_entropy.install() == before
    from vllm.v1.sample.sampler import Sampler

    original = getattr(Sampler.sample, "__prpo_entropy_original__")
    assert not hasattr(original, "__prpo_entropy_original__")  # wrapped once, not twice


@pytest.mark.parametrize("kind", ["DELTA", "CUMULATIVE"])
def test_streamed_outputs_stay_aligned(llm, hf_model, tokenizer, kind):
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    engine = llm.llm_engine
    prompt_ids = tokenizer.encode(PROMPTS[0])
    params = SamplingParams(max_tokens=8, temperature=1.0, seed=21, extra_args=OPT_IN,
                            output_kind=RequestOutputKind[kind])
    engine.add_request(f"stream-{kind}", TokensPrompt(prompt_token_ids=prompt_ids), params)
    chunks = []
    while engine.has_unfinished_requests():
        chunks += [out.outputs[0] for out in engine.step()]
    assert len(chunks) > 1
    for chunk in chunks:  # CUMULATIVE chunks share the request's growing lists, as vLLM does
        assert len(chunk.token_entropies) == len(chunk.token_ids)
    if kind == "DELTA":
        tokens = [t for c in chunks for t in c.token_ids]
        entropies = [h for c in chunks for h in c.token_entropies]
    else:
        tokens, entropies = list(chunks[-1].token_ids), chunks[-1].token_entropies
    assert len(tokens) == 8
    torch.testing.assert_close(torch.tensor(entropies, dtype=torch.float64),
                               hf_entropies(hf_model, prompt_ids, tokens, 1.0), atol=1e-4, rtol=0)
