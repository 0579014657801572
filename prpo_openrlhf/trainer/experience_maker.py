"""PRPOExperienceMaker: OpenRLHF 0.11.2's RemoteExperienceMaker with process rewards.

What changes, and nothing else:
- ``make_experience_batch``: every prompt group of rollouts is cut into segments (entropy
  spikes by default) and sent to the PRM as soon as it exists: while vLLM generates the
  other groups when PRPOSamplesGenerator dispatches it (see prm_dispatch.py), otherwise here,
  before the actor / reference log-prob passes are dispatched (with ``--prpo.entropy_source
  actor``, after the actor pass, whose entropies the split needs: ``_dispatch_forward`` then
  hands its log probs to upstream instead of running it again). The PRM works on its own GPUs
  while the log-prob passes run, and its scores are collected afterwards. The time spent
  waiting for them is logged (``prm/wait_s``).
- ``compute_advantages_and_returns``: the outcome length penalty (for every estimator, so all
  methods see the same R), then PRPO-family advantages for the estimators PRPO adds; every
  upstream estimator is handed to ``super()`` unchanged.
"""
from __future__ import annotations

import time
from typing import List

import ray
import torch
from openrlhf.trainer.ppo_utils.experience import Experience
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
from openrlhf.utils.logging_utils import init_logger

from prpo_openrlhf.algorithms.advantages import ESTIMATORS, outcome_shift, process_z
from prpo_openrlhf.algorithms.rewards import length_penalty
from prpo_openrlhf.algorithms.segmentation import scores_to_tokens
from prpo_openrlhf.cli.prpo_flags import PRM_ESTIMATORS
from prpo_openrlhf.trainer.prm_dispatch import PRMDispatcher, pad_rows

logger = init_logger(__name__)


class PRPOExperienceMaker(RemoteExperienceMaker):
    """RemoteExperienceMaker whose advantages can fuse PRM scores with group-relative outcomes.

    ``prm`` is any object with ``score_async(problems, segments)`` whose ``.result()``
    returns, by the call's own deadline, ``(scores, stats)``: one list of floats in [0, 1] per response (one per segment) and
    a PRMStats. PRMActorGroup and PRMClient provide it.
    """

    def __init__(self, *args, prm=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.prpo = self.args.prpo
        if self.advantage_estimator in PRM_ESTIMATORS and prm is None:
            raise ValueError(f"--algo.advantage.estimator {self.advantage_estimator} needs a PRM (--prm.*)")
        self.dispatcher = None if prm is None else PRMDispatcher(
            prm, self.tokenizer, self.prpo, self.args.rollout.n_samples_per_prompt)
        self.entropy_from_actor = self.prpo.split == "entropy" and self.prpo.entropy_source == "actor"
        self._actor_log_probs = None  # from forward_with_entropy, for make_experience to reuse

    @torch.no_grad()
    def make_experience_batch(self, rollout_samples) -> List[Experience]:
        if self.advantage_estimator not in PRM_ESTIMATORS:
            return super().make_experience_batch(rollout_samples)
        samples_list = self.split_rollout_samples(rollout_samples)
        try:
            if self.entropy_from_actor:
                self._actor_pass_with_entropies(rollout_samples, samples_list)
            late = self.dispatcher.submit_missing(rollout_samples)  # before the (other) log-prob passes
            experiences = self.make_experience(samples_list)
        finally:
            self._actor_log_probs = None  # never hand one step's log probs to the next

        t0 = time.time()
        per_sample, stats = self.dispatcher.collect(rollout_samples)
        waited = time.time() - t0
        process = {s.index[0]: (scores_to_tokens([scores], ids[None])[0], ids)
                   for s, (scores, ids) in zip(rollout_samples, per_sample)}
        prm_info = {
            "wait_s": waited, "score_s": stats.seconds, "segments_per_response": stats.segments / len(per_sample),
            "filled_segments": stats.filled_segments, "truncated_responses": stats.truncated_responses,
            "submitted_late": late, "retries": stats.retries, "forward_responses": stats.forward_responses,
        }
        logger.info(f"PRM: waited {waited:.2f}s after the log-prob passes; {late} rollouts submitted after "
                    f"generation; {stats.as_dict()}")
        return self.compute_advantages_and_returns(experiences, process, prm_info)

    def _actor_pass_with_entropies(self, rollout_samples, samples_list) -> None:
        """``--prpo.entropy_source actor``: the actor's log-prob pass runs first, and its
        entropies go onto the rollouts for the split (trainer/policy_actor.py)."""
        args = self.strategy.args
        kwargs = dict(sequences=[s.sequences for s in samples_list], action_mask=[s.action_mask for s in samples_list],
                      attention_mask=[s.attention_mask for s in samples_list])
        if any(s.mm_train_inputs for s in samples_list):  # as upstream's make_experience passes them
            kwargs["mm_train_inputs_list"] = [s.mm_train_inputs for s in samples_list]
        refs = self.actor_model_group.async_run_method_batch(method_name="forward_with_entropy", **kwargs)
        results = self._flatten_results(refs, args.ds.ring_attn_size * args.ds.tensor_parallel_size)
        if args.train.colocate_all or args.train.colocate_actor_ref:
            ray.get(self.actor_model_group.async_run_method(method_name="empty_cache"))
        for batch, (_, entropies) in zip(samples_list, results):
            for row, i in enumerate(batch.index):
                sample = rollout_samples[i]
                sample.entropies = entropies[row: row + 1, : sample.action_mask.shape[1]]
        self._actor_log_probs = [log_probs for log_probs, _ in results]

    def _dispatch_forward(self, group, sync_condition, **kwargs):
        if group is self.actor_model_group and self._actor_log_probs is not None:
            log_probs, self._actor_log_probs = self._actor_log_probs, None
            return [ray.put(log_probs)]  # that pass already ran, with the entropies
        return super()._dispatch_forward(group, sync_condition, **kwargs)

    # ── advantages ──

    def _length_penalty(self, experiences: List[Experience]) -> None:
        """R -= L / scale when L > threshold (PRPO_SPEC §4), for every estimator alike."""
        for exp in experiences:
            penalty = length_penalty(exp.response_length, self.prpo.length_penalty_threshold,
                                     self.prpo.length_penalty_scale)
            exp.rewards = exp.rewards.float() - penalty
            exp.info["length_penalty"] = penalty

    @torch.no_grad()
    def compute_advantages_and_returns(self, experiences: List[Experience], process: dict | None = None,
                                       prm_info: dict | None = None) -> List[Experience]:
        """``process``: rollout index -> ((T,) per-token PRM scores, (T,) segment ids); ``prm_info``:
        the step's PRM figures for logging. Both from ``make_experience_batch``, for PRM estimators."""
        self._length_penalty(experiences)
        if self.advantage_estimator not in PRM_ESTIMATORS:
            return super().compute_advantages_and_returns(experiences)
        if process is None:
            raise ValueError(f"--algo.advantage.estimator {self.advantage_estimator}: advantages need the PRM's scores")
        scores = process

        rows = {i: (exp, j) for exp in experiences for j, i in enumerate(exp.index)}
        ranked = sorted(rows)  # original rollout order: groups are contiguous blocks of n
        mask = pad_rows([rows[i][0].action_mask[rows[i][1]].float() for i in ranked])
        process = pad_rows([scores[i][0] for i in ranked])
        segment_ids = pad_rows([scores[i][1] for i in ranked], value=-1)
        rewards = torch.stack([rows[i][0].rewards[rows[i][1]].float() for i in ranked])
        adv = ESTIMATORS[self.advantage_estimator](
            process_scores=process, outcome_rewards=rewards, action_mask=mask, segment_ids=segment_ids,
            n_samples_per_prompt=self.args.rollout.n_samples_per_prompt, **self._estimator_options(),
        )
        position = {i: r for r, i in enumerate(ranked)}
        stats = self._signal_stats(process, rewards, mask, segment_ids)
        for exp in experiences:
            width = exp.action_mask.shape[1]
            exp.advantages = torch.stack([adv[position[i], :width] for i in exp.index]).to(exp.action_mask.device)
            exp.returns = exp.advantages.clone()
            exp.info["return"] = exp.rewards
            for key, value in stats.items():
                exp.info[key] = torch.stack([value[position[i]] for i in exp.index])
            for key, value in (prm_info or {}).items():
                exp.info[f"prm/{key}"] = torch.full((len(exp.index),), float(value))
            exp.kl = None
        return experiences

    def _signal_stats(self, process, rewards, mask, segment_ids) -> dict:
        """(N,) per-rollout logging: mean PRM score, mean process z, outcome shift beta."""
        n = self.args.rollout.n_samples_per_prompt
        z = process_z(process, mask, n, self.prpo.prior_mean, self.prpo.prior_std, self.prpo.normalization,
                      segment_ids=segment_ids)
        tokens = mask.sum(1).clamp(min=1)
        return {"prm_score_mean": (process * mask).sum(1) / tokens, "prpo/z_mean": z.sum(1) / tokens,
                "prpo/beta": outcome_shift(rewards, n)}

    def _estimator_options(self) -> dict:
        return dict(prior_mean=self.prpo.prior_mean, prior_std=self.prpo.prior_std,
                    normalization=self.prpo.normalization, temperature=self.prpo.pure_temperature)
