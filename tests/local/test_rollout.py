"""The two rollout engines agree: the in-process vLLM engine follows the policy's weights."""
import gc

import pytest
import torch

from prpo_openrlhf.local import experience as X
from prpo_openrlhf.local.rollout import HFRollout, VLLMRollout, chat_prompt_ids
from prpo_openrlhf.local.task import ArithmeticTask


@pytest.fixture(scope="module")
def policy(tiny_lm_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_lm_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_path, dtype=torch.float32)
    prompts = chat_prompt_ids(tok, [p.text for p in ArithmeticTask(n_heldout=6).heldout], None)
    return tok, model, prompts


def test_hf_rollout_groups_samples_and_stops_at_eos(policy):
    tok, model, prompts = policy
    samples = HFRollout(model, tok).generate(prompts[:2], n=3, temperature=1.0, max_new_tokens=12, seed=0)
    assert len(samples) == 6
    assert all(s.prompt_ids == prompts[i // 3] for i, s in enumerate(samples))
    for s in samples:
        assert 1 <= len(s.response_ids) <= 12
        assert tok.eos_token_id not in s.response_ids[:-1]
    again = HFRollout(model, tok).generate(prompts[:2], n=3, temperature=1.0, max_new_tokens=12, seed=0)
    assert [s.response_ids for s in again] == [s.response_ids for s in samples]  # seeded


def test_vllm_engine_takes_new_weights_and_reports_actor_entropies(policy, tiny_lm_path):
    tok, model, prompts = policy
    model = type(model).from_pretrained(tiny_lm_path, dtype=torch.float32)  # a copy we may perturb
    hf = HFRollout(model, tok)
    eng = VLLMRollout(tiny_lm_path, tok, max_model_len=256, seed=0, want_entropy=True, kv_cache_mib=32)
    try:
        greedy = dict(n=1, temperature=1.0, max_new_tokens=16, seed=0, greedy=True)
        assert [s.response_ids for s in eng.generate(prompts, **greedy)] == \
               [s.response_ids for s in hf.generate(prompts, **greedy)]
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
        stale = [s.response_ids for s in eng.generate(prompts, **greedy)]
        fresh = [s.response_ids for s in hf.generate(prompts, **greedy)]
        assert stale != fresh  # the perturbation matters, so the next check means something
        eng.sync(model)
        assert [s.response_ids for s in eng.generate(prompts, **greedy)] == fresh

        samples = eng.generate(prompts, n=2, temperature=0.7, max_new_tokens=16, seed=1)
        batch = X.make_batch(samples, tok.pad_token_id)
        _, actor = X.batched_logprobs(model, batch, 0.7, 64, with_entropy=True)
        engine = X.entropies_from_samples(samples, batch.tokens.shape[1])
        assert engine is not None, "vLLM entropy plugin returned no token_entropies"
        assert torch.allclose(engine * batch.action_mask, actor * batch.action_mask, atol=1e-4)
    finally:
        del eng
        gc.collect()
