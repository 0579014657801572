"""The recipes' HF sampler and entropy pass, checked against vLLM's engine and entropy plugin."""
import pytest
import torch

from prpo_openrlhf.local.sampling import HFSampler, Sample, chat_prompt_ids, response_entropies
from prpo_openrlhf.local.task import ArithmeticTask


@pytest.fixture(scope="module")
def policy(tiny_lm_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_path, dtype=torch.float32).eval()
    prompts = chat_prompt_ids(tok, [p.text for p in ArithmeticTask(n_heldout=6).heldout])
    return tok, model, prompts


def test_hf_sampler_groups_samples_and_stops_at_eos(policy):
    tok, model, prompts = policy
    samples = HFSampler(model, tok).generate(prompts[:2], n=3, temperature=1.0, max_new_tokens=12, seed=0)
    assert len(samples) == 6
    assert all(s.prompt_ids == prompts[i // 3] for i, s in enumerate(samples))
    for s in samples:
        assert 1 <= len(s.response_ids) <= 12
        assert tok.eos_token_id not in s.response_ids[:-1]
        assert s.text == tok.decode(s.response_ids, skip_special_tokens=True)
    again = HFSampler(model, tok).generate(prompts[:2], n=3, temperature=1.0, max_new_tokens=12, seed=0)
    assert [s.response_ids for s in again] == [s.response_ids for s in samples]  # seeded


def test_greedy_and_entropies_agree_with_vllm_and_its_entropy_plugin(policy, tiny_lm_path):
    """vLLM decodes the same greedy tokens, and the entropies its plugin reports for sampled tokens
    are those of the HF forward pass over prompt + response (an independent implementation)."""
    from vllm import LLM, SamplingParams

    from prpo_openrlhf.vllm_cpu import cpu_engine_kwargs, shut_down

    tok, model, prompts = policy
    llm = LLM(model=tiny_lm_path, **cpu_engine_kwargs(max_model_len=256, kv_cache_mib=32, seed=0))
    try:
        tokens = [{"prompt_token_ids": p} for p in prompts]
        outs = llm.generate(tokens, SamplingParams(n=1, temperature=0.0, max_tokens=16), use_tqdm=False)
        hf = HFSampler(model, tok).generate(prompts, 1, 1.0, 16, seed=0, greedy=True)
        assert [list(o.outputs[0].token_ids) for o in outs] == [s.response_ids for s in hf]
        params = SamplingParams(n=2, temperature=1.0, top_p=1.0, top_k=0, max_tokens=16, seed=1,
                                extra_args={"return_entropy": True})
        outs = llm.generate(tokens, params, use_tqdm=False)
    finally:
        shut_down(llm)
    samples = [Sample(list(o.prompt_token_ids), list(c.token_ids), c.text) for o in outs for c in o.outputs]
    engine = [list(c.token_entropies) for o in outs for c in o.outputs]
    ent, mask = response_entropies(model, samples, tok.pad_token_id, micro=5)  # 3 micro-batches
    assert ent.shape == mask.shape == (12, max(len(s.response_ids) for s in samples))
    for i, (s, e) in enumerate(zip(samples, engine)):
        assert len(e) == len(s.response_ids) == int(mask[i].sum())
        assert torch.allclose(ent[i, : len(e)], torch.tensor(e), atol=1e-4), i
