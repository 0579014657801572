"""OpenRLHF's rollout path: executor -> response dict -> Experience, with real vLLM outputs.

The executor is loaded by OpenRLHF's own ``_load_agent_executor`` from ENTROPY_AGENT_PATH and
runs against the package's in-process vLLM CPU engine through ``InProcessRolloutEngine``, which
does what ``RolloutRayActor.generate`` does (a token prompt, a copy of the params, the final
RequestOutput). The same path through a real Ray ``RolloutRayActor`` is
``test_ray_rollout_actor_end_to_end`` (slow).
"""
import asyncio
import copy
from types import SimpleNamespace as NS

import pytest
import torch
from openrlhf.models import Actor
from openrlhf.trainer.ray.vllm_engine import _load_agent_executor
from openrlhf.utils.agent import AgentInstanceBase
from vllm import SamplingParams
from vllm.inputs import TokensPrompt

from prpo_openrlhf.rollout.agent_executor import (ENTROPY_AGENT_PATH, RESPONSE_KEY,
                                                  EntropyMultiTurnAgentExecutor)
from prpo_openrlhf.rollout.samples_generator import (PRPOExperience, PRPOSamplesGenerator,
                                                     actor_token_entropies,
                                                     entropies_from_actor_output)
from tests.rollout.reference import hf_entropies


class InProcessRolloutEngine:
    """``RolloutRayActor.generate`` (openrlhf/trainer/ray/vllm_engine.py) on a vllm.LLM."""

    def __init__(self, llm):
        self.llm = llm

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        prompt = TokensPrompt(prompt_token_ids=prompt_token_ids)
        return self.llm.generate([prompt], copy.deepcopy(sampling_params), use_tqdm=False)[0]


def openrlhf_params(temperature=0.7, top_p=0.9, max_new_tokens=12, min_new_tokens=1, seed=None, **extra):
    """The SamplingParams SamplesGenerator._dispatch_prompts_to_vllm builds."""
    return SamplingParams(temperature=temperature, top_p=top_p, top_k=-1, max_tokens=max_new_tokens,
                          min_tokens=min_new_tokens, skip_special_tokens=False, logprobs=None, seed=seed,
                          **extra)


def generator(entropy_source="vllm", estimator="prpo"):
    args = NS(rollout=NS(n_samples_per_prompt=2, batch_size=2), vllm=NS(enable_sleep=False),
              algo=NS(advantage=NS(is_correction_level="off", estimator=estimator), dynamic_filtering_enable=False),
              prpo=NS(entropy_source=entropy_source, split="entropy"))
    return PRPOSamplesGenerator(strategy=NS(args=args), prompts_dataloader=None,
                                eval_dataloader=None, tokenizer=None, vllm_engines=[])


def rollout(llm, tokenizer, executor, prompt, params, n=2, max_length=64):
    engine = InProcessRolloutEngine(llm)
    jobs = [executor.execute(prompt=prompt, label="7", sampling_params=params, max_length=max_length,
                             hf_tokenizer=tokenizer, llm_engine=engine) for _ in range(n)]

    async def run():
        return await asyncio.gather(*jobs)

    return asyncio.run(run())


def check_against_hf(hf_model, experience, temperature, min_tokens, stop_ids):
    mask = experience.action_mask[0].bool()
    ent = experience.entropies[0]
    assert experience.entropies.shape == experience.action_mask.shape
    assert torch.all(ent[~mask] == 0)
    seq = experience.sequences[0].tolist()
    start = int(mask.nonzero()[0]) + 1  # action_mask[j] marks token j + 1
    end = int(mask.nonzero()[-1]) + 2
    ref = hf_entropies(hf_model, seq[:start], seq[start:end], temperature, min_tokens=min_tokens,
                       stop_ids=stop_ids)
    torch.testing.assert_close(ent[mask].double(), ref, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def executor():
    return _load_agent_executor(ENTROPY_AGENT_PATH)  # exactly how RolloutRayActor loads it


def test_response_to_experience_lines_up_with_action_mask(llm, tokenizer, hf_model, executor):
    responses = rollout(llm, tokenizer, executor, "Compute 12*7.", openrlhf_params(seed=4))
    for response in responses:
        assert len(response[RESPONSE_KEY]) == len(response["observation_tokens"])
        experience = generator()._process_response_into_experience(response, max_len=64)
        assert isinstance(experience, PRPOExperience)
        check_against_hf(hf_model, experience, 0.7, min_tokens=1, stop_ids=[tokenizer.eos_token_id])


def test_truncation_cuts_entropies_like_the_action_mask(llm, tokenizer, hf_model, executor):
    response = rollout(llm, tokenizer, executor, "The cat sat on", openrlhf_params(seed=9), n=1)[0]
    short = len(response["observation_tokens"]) - 4
    experience = generator()._process_response_into_experience(response, max_len=short)
    assert experience.action_mask.shape == (1, short - 1)
    check_against_hf(hf_model, experience, 0.7, min_tokens=1, stop_ids=[tokenizer.eos_token_id])


def test_concat_keeps_entropies_aligned(llm, tokenizer, executor):
    responses = rollout(llm, tokenizer, executor, "Hi", openrlhf_params(max_new_tokens=6, seed=1), n=1)
    responses += rollout(llm, tokenizer, executor, "A longer prompt here",
                         openrlhf_params(max_new_tokens=12, seed=2), n=1)
    parts = [generator()._process_response_into_experience(r, max_len=64) for r in responses]
    merged = PRPOExperience.concat_experiences(parts, tokenizer.pad_token_id)
    assert merged.entropies.shape == merged.action_mask.shape
    for row, part in enumerate(parts):
        width = part.action_mask.shape[1]
        torch.testing.assert_close(merged.entropies[row, :width], part.entropies[0])
        assert torch.all(merged.entropies[row, width:] == 0)


def test_missing_entropies_are_an_error_unless_the_actor_provides_them(llm, tokenizer, executor):
    response = rollout(llm, tokenizer, executor, "Hi", openrlhf_params(max_new_tokens=4), n=1)[0]
    del response[RESPONSE_KEY]
    with pytest.raises(RuntimeError, match="entropy_agent.py.*--prpo.entropy_source actor"):
        generator("vllm")._process_response_into_experience(response, max_len=64)
    experience = generator("actor")._process_response_into_experience(response, max_len=64)
    assert isinstance(experience, PRPOExperience) and experience.entropies is None
    # GRPO / REINFORCE++ run OpenRLHF's own executor (no entropies) under the default source.
    for estimator in ("group_norm", "reinforce", "reinforce_baseline", "rloo", "dr_grpo"):
        experience = generator("vllm", estimator)._process_response_into_experience(response, max_len=64)
        assert experience.entropies is None


class TwoTurns(AgentInstanceBase):
    def __init__(self, *args, **kwargs):
        self.turn = 0

    async def step(self, state_dict, **kwargs):
        self.turn += 1
        return {"rewards": torch.tensor(0.0), "environment_feedback": "\nuser: go on\n",
                "done": self.turn >= 2}


def test_multi_turn_entropies_cover_each_action_and_skip_feedback(llm, tokenizer, hf_model):
    executor = EntropyMultiTurnAgentExecutor(TwoTurns)
    # The executor gives each turn the whole remaining budget; a third of the vocabulary as
    # stop tokens ends a turn after a few tokens, leaving room for the second one.
    params = openrlhf_params(seed=3, min_new_tokens=0, stop_token_ids=list(range(0, 256, 3)))
    response = rollout(llm, tokenizer, executor, "Start:", params, n=1)[0]
    ranges, obs, ent = response["action_ranges"], response["observation_tokens"], response[RESPONSE_KEY]
    assert len(ranges) == 2 and len(ent) == len(obs)
    covered = set()
    for start, end in ranges:
        covered.update(range(start, end))
        ref = hf_entropies(hf_model, obs[:start], obs[start:end], 0.7)
        torch.testing.assert_close(torch.tensor(ent[start:end], dtype=torch.float64), ref, atol=1e-4, rtol=0)
    assert all(ent[i] == 0.0 for i in range(len(obs)) if i not in covered)


def test_actor_fallback_agrees_with_vllm(llm, tokenizer, hf_model, executor):
    """--prpo.entropy_source actor: OpenRLHF Actor.forward(return_entropy=True) on the same tokens."""
    params = openrlhf_params(temperature=0.7, min_new_tokens=0, seed=5)  # no EOS mask at token 0
    experience = generator()._process_response_into_experience(
        rollout(llm, tokenizer, executor, "Compute 12*7.", params, n=1)[0], max_len=64)
    actor = Actor(hf_model, temperature=0.7).eval()  # fp32 weights, as vLLM ran them
    actor.packing_samples = False  # 0.11.2 sets it only when Actor loads a checkpoint path
    got = actor_token_entropies(actor, experience.sequences, experience.action_mask,
                                experience.attention_mask)
    assert got.shape == experience.entropies.shape
    torch.testing.assert_close(got, experience.entropies, atol=1e-4, rtol=0)
    # The log-prob pass's own output (OpenRLHF's log-prob kernel is CUDA-only; the entropy
    # comes from the same forward's logits).
    with torch.no_grad():
        output = actor(experience.sequences, attention_mask=experience.attention_mask,
                       return_output=True, return_entropy=True)
    torch.testing.assert_close(entropies_from_actor_output(output, experience.action_mask), got)


@pytest.mark.slow
def test_ray_rollout_actor_end_to_end(peaked_lm_path, tokenizer, hf_model):
    """OpenRLHF's RolloutRayActor (AsyncLLM, spawned EngineCore) + SamplesGenerator._generate_vllm."""
    import ray
    from openrlhf.trainer.ray.vllm_engine import RolloutRayActor

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        engine = RolloutRayActor.options(num_cpus=0, num_gpus=0).remote(
            model=peaked_lm_path, num_gpus=0, distributed_executor_backend="uni", dtype="float32",
            max_model_len=256, enforce_eager=True, seed=0, kv_cache_memory_bytes=64 << 20,
            agent_func_path=ENTROPY_AGENT_PATH, full_determinism=False)
        gen = generator()
        gen.tokenizer, gen.vllm_engines = tokenizer, [engine]
        batch = (None, ["Compute 12*7.", "The cat sat on"], ["84", "mat"], [None, None])
        experiences, consumed, _ = gen._generate_vllm(
            iter([batch]), num_prompts=2, dynamic_filtering=False, temperature=0.7, top_p=0.9,
            max_new_tokens=10, max_len=64, n_samples_per_prompt=2)
    finally:
        ray.shutdown()
    assert consumed == 2 and len(experiences) == 4
    for experience in experiences:
        assert isinstance(experience, PRPOExperience)
        check_against_hf(hf_model, experience, 0.7, min_tokens=1, stop_ids=[tokenizer.eos_token_id])
