"""OpenRLHF 0.11.2 agent executors whose rollouts carry vLLM's per-token entropies.

OpenRLHF's rollout actor (``RolloutRayActor``) runs an agent executor that calls
``llm_engine.generate(...)`` and turns the returned vLLM ``RequestOutput`` into a plain dict
(``observation_tokens``, ``action_ranges``, ``rollout_log_probs``, ...). The dict is what
reaches the trainer, so the entropies have to be put in it here, on the rollout side.

What changes, and nothing else: ``execute`` hands the parent's ``execute`` an engine proxy
whose ``generate`` adds ``extra_args={"return_entropy": True}`` to the SamplingParams and keeps
each RequestOutput; afterwards the response gets ``rollout_entropies``: one float per
observation token (0 on prompt / environment tokens, vLLM's ``token_entropies`` on each action
range), aligned like ``rollout_log_probs``.

OpenRLHF loads a custom executor from ``--agent_func_path``; ``entropy_agent.py`` next to this
file is that file for the single-turn executor (:data:`ENTROPY_AGENT_PATH`).
"""
from __future__ import annotations

import copy
import os

from openrlhf.utils.agent import MultiTurnAgentExecutor, SingleTurnAgentExecutor

from prpo_openrlhf.rollout.vllm_entropy import FALLBACK_HINT, OUTPUT_ATTR, REQUEST_KEY, status

RESPONSE_KEY = "rollout_entropies"  # key in the executor's response dict
ENTROPY_AGENT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "entropy_agent.py")


class EntropyRecordingEngine:
    """Stands in for the rollout actor inside ``execute``: opts in, records the outputs."""

    def __init__(self, engine):
        self._engine = engine
        self.outputs = []

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        params = copy.copy(sampling_params)
        params.extra_args = {**(sampling_params.extra_args or {}), REQUEST_KEY: True}
        output = await self._engine.generate(prompt_token_ids, params, multi_modal_data=multi_modal_data)
        self.outputs.append(output)
        return output

    def __getattr__(self, name):
        return getattr(self._engine, name)


def align_entropies(response: dict, outputs: list) -> list[float]:
    """One entropy per observation token: vLLM's values on each action range, 0 elsewhere."""
    ranges = response["action_ranges"]
    if len(ranges) != len(outputs):
        raise RuntimeError(f"{len(ranges)} action ranges but {len(outputs)} vLLM generate calls")
    entropies = [0.0] * len(response["observation_tokens"])
    for (start, end), request_output in zip(ranges, outputs):
        values = getattr(request_output.outputs[0], OUTPUT_ATTR, None)
        if values is None:
            raise RuntimeError(
                "vLLM returned no token_entropies: the prpo entropy plugin is not active in the "
                f"rollout engine (plugin status here: {status()!r}). Use {FALLBACK_HINT}.")
        if len(values) != end - start:
            raise RuntimeError(f"{len(values)} token entropies for an action of {end - start} tokens")
        entropies[start:end] = values
    return entropies


class EntropyExecutorMixin:
    """Put before an OpenRLHF executor class; overrides ``execute`` only (see module doc)."""

    async def execute(self, prompt, label, sampling_params, max_length: int, hf_tokenizer,
                      llm_engine, images=None):
        engine = EntropyRecordingEngine(llm_engine)
        response = await super().execute(prompt, label, sampling_params, max_length, hf_tokenizer,
                                         engine, images=images)
        response[RESPONSE_KEY] = align_entropies(response, engine.outputs)
        return response


class EntropySingleTurnAgentExecutor(EntropyExecutorMixin, SingleTurnAgentExecutor):
    """OpenRLHF's default single-turn executor, plus ``rollout_entropies``."""


class EntropyMultiTurnAgentExecutor(EntropyExecutorMixin, MultiTurnAgentExecutor):
    """OpenRLHF's multi-turn executor, plus ``rollout_entropies`` (one range per turn)."""
