"""Experiences with per-token entropies (OpenRLHF 0.11.2 subclasses) and the actor fallback.

- :class:`PRPOExperience`: OpenRLHF's ``Experience`` plus ``entropies`` (B, A), aligned with
  ``action_mask`` and zero where it is 0.
- :class:`PRPOSamplesGenerator`: OpenRLHF's ``SamplesGenerator``; only
  ``_process_response_into_experience`` changes: the executor's ``rollout_entropies`` (see
  agent_executor.py) are cut exactly like ``rollout_log_probs``, the result is a
  PRPOExperience, and during ``generate_samples`` each completed prompt group goes to
  ``group_sink`` (the PRM dispatcher, trainer/prm_dispatch.py) while the others generate
  (not groups upstream's dynamic filter is about to drop; evaluation rollouts never).
- :func:`entropies_from_actor_output` / :func:`actor_token_entropies`: ``--prpo.entropy_source
  actor``, the entropy from the training-side forward (OpenRLHF
  ``Actor.forward(return_entropy=True)``), for vLLM versions the plugin does not support.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields

import torch
from openrlhf.trainer.ppo_utils.experience import Experience, tensor_field
from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator

from prpo_openrlhf.rollout.agent_executor import ENTROPY_AGENT_PATH, RESPONSE_KEY
from prpo_openrlhf.rollout.vllm_entropy import FALLBACK_HINT, SUPPORTED_VLLM_VERSION, version_problem
from prpo_openrlhf.run_options import needs_vllm_entropy

# Values of --prpo.entropy_source (the flag lives in prpo_openrlhf.cli.prpo_flags).
ENTROPY_SOURCE_VLLM = "vllm"
ENTROPY_SOURCE_ACTOR = "actor"
ENTROPY_SOURCES = (ENTROPY_SOURCE_VLLM, ENTROPY_SOURCE_ACTOR)


def check_entropy_source(source: str, vllm_version: str | None = None) -> None:
    """Start-up check of ``--prpo.entropy_source``: vllm needs the plugin's vLLM version."""
    if source not in ENTROPY_SOURCES:
        raise ValueError(f"--prpo.entropy_source {source!r}: choose one of {ENTROPY_SOURCES}")
    if source == ENTROPY_SOURCE_VLLM:
        problem = version_problem(vllm_version)
        if problem:
            raise ValueError(f"--prpo.entropy_source vllm needs vLLM {SUPPORTED_VLLM_VERSION}: "
                             f"{problem}")


@dataclass
class PRPOExperience(Experience):
    """OpenRLHF ``Experience`` + ``entropies`` (B, A): H_t of each action token, 0 off the mask.

    OpenRLHF's batching helpers (``split_experience_batch``, ``make_experience_batch``,
    ``Experience.concat_experiences``) rebuild plain Experiences from ``fields(Experience)``
    and drop ``entropies``; PRPO reads them from the rollout samples before those run, and
    :meth:`concat_experiences` here keeps them.
    """

    entropies: torch.Tensor = tensor_field("step", default=None)  # (B, A)

    @classmethod
    def from_experience(cls, experience: Experience, **extra) -> "PRPOExperience":
        values = {f.name: getattr(experience, f.name) for f in fields(Experience)}
        values.update(extra)
        return cls(**values)

    @staticmethod
    def concat_experiences(experiences_list, pad_token_id) -> "PRPOExperience":
        """``Experience.concat_experiences``, keeping ``entropies`` (right-padded with 0)."""
        merged = Experience.concat_experiences(experiences_list, pad_token_id)
        rows = [getattr(e, "entropies", None) for e in experiences_list]
        entropies = None if not rows or any(r is None for r in rows) else Experience._merge_item(rows, 0)
        return PRPOExperience.from_experience(merged, entropies=entropies)


def entropies_for_action_mask(rollout_entropies, action_mask: torch.Tensor, truncate_length: int):
    """Per-observation-token entropies -> (1, A) aligned with OpenRLHF's action_mask.

    OpenRLHF builds ``action_mask = mask[1:truncate_length]`` (position j marks token j + 1)
    and cuts ``rollout_log_probs`` the same way; the entropies follow suit.
    """
    values = torch.tensor(rollout_entropies[1:truncate_length], dtype=torch.float32).unsqueeze(0)
    if values.shape != action_mask.shape:
        raise ValueError(f"entropies {tuple(values.shape)} vs action_mask {tuple(action_mask.shape)}")
    return values * action_mask.to(values.dtype)


class PRPOSamplesGenerator(SamplesGenerator):
    """OpenRLHF's SamplesGenerator whose Experiences carry the rollout's entropies.

    When the run splits at vLLM's entropy spikes (``needs_vllm_entropy``: a PRM estimator,
    ``--prpo.split entropy``, ``--prpo.entropy_source vllm``) the vLLM engines run the executor
    of ``ENTROPY_AGENT_PATH`` and a response without entropies is an error. Every other run
    (GRPO, REINFORCE++, other splits, the actor source) gets Experiences without entropies.
    """

    group_sink = None  # callable(list of one prompt's n experiences), set by PRPOTrainer
    _group: list | None = None  # the group being collected, while generate_samples runs

    def generate_samples(self, **generate_kwargs):
        with self.dispatching_groups():
            return super().generate_samples(**generate_kwargs)

    @contextlib.contextmanager
    def dispatching_groups(self):
        """Hand every completed prompt group to ``group_sink`` (training rollouts only)."""
        self._group = [] if self.group_sink is not None else None
        try:
            yield
        finally:
            self._group = None

    def _to_sink(self, experience, n: int) -> None:
        # Upstream turns one prompt's n responses (one Ray call) into Experiences back to back.
        self._group.append(experience)
        if len(self._group) == n:
            group, self._group = self._group, []
            if self._kept_by_dynamic_filter(group):
                self.group_sink(group)

    def _kept_by_dynamic_filter(self, group) -> bool:
        """Whether upstream's ``_generate_vllm`` keeps this group under ``--algo.dynamic_filtering_enable``.

        It drops a group whose mean score lies outside the range only after the sink has seen
        it; scoring such a group would waste PRM time (and queue behind it on a PRM service).
        Should upstream's rule ever differ, nothing breaks: a dropped group's submission is
        never collected, and a kept group not submitted here is submitted by the experience maker.
        """
        algo = self.args.algo
        if not algo.dynamic_filtering_enable or any(e.scores is None for e in group):
            return True
        low, high = algo.dynamic_filtering_range
        mean = sum(e.scores[0].item() for e in group) / len(group)
        return low < mean < high

    def _process_response_into_experience(self, response, **generate_kwargs) -> PRPOExperience:
        experience = super()._process_response_into_experience(response, **generate_kwargs)
        rollout_entropies = response.get(RESPONSE_KEY)
        if rollout_entropies is None:
            if needs_vllm_entropy(self.args):
                raise RuntimeError(
                    "rollout response has no entropies: start the vLLM engines with "
                    f"--agent_func_path {ENTROPY_AGENT_PATH}, or use {FALLBACK_HINT}")
            result = PRPOExperience.from_experience(experience)
        else:
            entropies = entropies_for_action_mask(rollout_entropies, experience.action_mask,
                                                  generate_kwargs.get("max_len", 2048))
            result = PRPOExperience.from_experience(experience, entropies=entropies)
        if self._group is not None:
            self._to_sink(result, generate_kwargs.get("n_samples_per_prompt", self.args.rollout.n_samples_per_prompt))
        return result


def entropies_from_actor_output(output, action_mask: torch.Tensor) -> torch.Tensor:
    """(B, A) entropies from the output of ``Actor.forward(..., return_output=True, return_entropy=True)``.

    For the log-prob pass itself: the same forward gives the action log probs and, here, the
    entropies (the actor divides its logits by its ``temperature``, set to the rollout
    temperature as OpenRLHF does, then applies ``compute_entropy``). The columns are cut like
    the action log probs and zeroed off ``action_mask``.
    """
    entropy = output.entropy[:, -action_mask.shape[1]:].float()
    return entropy * action_mask.to(entropy.dtype)


@torch.no_grad()
def actor_token_entropies(actor, sequences: torch.Tensor, action_mask: torch.Tensor,
                          attention_mask: torch.Tensor, **forward_kwargs) -> torch.Tensor:
    """(B, A) entropies from a forward of OpenRLHF's ``Actor`` (no log probs computed)."""
    output = actor(sequences, attention_mask=attention_mask, return_output=True,
                   return_entropy=True, **forward_kwargs)
    return entropies_from_actor_output(output, action_mask)
