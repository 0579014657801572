"""PRPOExperienceMaker: OpenRLHF 0.11.2's RemoteExperienceMaker with process rewards.

What changes, and nothing else:
- ``make_experience_batch``: before the actor / reference log-prob passes are dispatched, every
  rollout is cut into segments (entropy spikes by default) and sent to the PRM; the PRM works
  on its own GPUs while the log-prob passes run, and its scores are collected afterwards. The
  time spent waiting for them is logged (``prm/wait_s``).
- ``compute_advantages_and_returns``: the outcome length penalty (for every estimator, so all
  methods see the same R), then PRPO-family advantages for the estimators PRPO adds; every
  upstream estimator is handed to ``super()`` unchanged.
"""
from __future__ import annotations

import time
from typing import List

import torch
from openrlhf.trainer.ppo_utils.experience import Experience
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
from openrlhf.utils.logging_utils import init_logger

from prpo_openrlhf.algorithms.advantages import ESTIMATORS, outcome_shift, process_z
from prpo_openrlhf.algorithms.rewards import length_penalty
from prpo_openrlhf.algorithms.segmentation import scores_to_tokens, segment_batch
from prpo_openrlhf.cli.prpo_flags import PRM_ESTIMATORS
from prpo_openrlhf.trainer.problem_text import ProblemExtractor

logger = init_logger(__name__)


def _pad_rows(rows: List[torch.Tensor], value=0.0) -> torch.Tensor:
    """Stack 1-D tensors of different lengths into (N, T_max), right-padded."""
    width = max((r.numel() for r in rows), default=0)
    out = torch.full((len(rows), width), value, dtype=rows[0].dtype if rows else torch.float32)
    for i, r in enumerate(rows):
        out[i, : r.numel()] = r
    return out


class PRPOExperienceMaker(RemoteExperienceMaker):
    """RemoteExperienceMaker whose advantages can fuse PRM scores with group-relative outcomes.

    ``prm`` is any object with ``score_async(problems, segments)`` whose ``.result(timeout)``
    returns ``(scores, stats)``: one list of floats in [0, 1] per response (one per segment) and
    a PRMStats. PRMActorGroup and PRMClient provide it.
    """

    def __init__(self, *args, prm=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.prm = prm
        self.prpo = self.args.prpo
        self.problem_of = ProblemExtractor(self.tokenizer)
        if self.advantage_estimator in PRM_ESTIMATORS and prm is None:
            raise ValueError(f"--algo.advantage.estimator {self.advantage_estimator} needs a PRM (--prm.*)")

    # ── rollouts -> segments -> PRM (dispatched before the log-prob passes) ──

    def segment_rollouts(self, rollout_samples: List[Experience]):
        """Per rollout: action mask (A,), segment ids (A,) (-1 off the response), segment texts."""
        masks = [s.action_mask[0].float() for s in rollout_samples]
        mask = _pad_rows(masks)
        entropies = None
        if self.prpo.split == "entropy":
            entropies = _pad_rows([self._entropies(s) for s in rollout_samples])
        newline = None
        if self.prpo.split == "newline":
            newline = _pad_rows([self._blank_line_tokens(s).float() for s in rollout_samples]).bool()
        ids = segment_batch(entropies if entropies is not None else torch.zeros_like(mask), mask.bool(),
                            method=self.prpo.split, k=self.prpo.k, min_gap=self.prpo.min_gap,
                            seed=self.prpo.seed, newline_mask=newline)
        texts = []
        for row, sample in enumerate(rollout_samples):
            # action_mask[j] marks token j + 1 of the sequence (OpenRLHF's convention).
            actions = sample.sequences[0, 1: 1 + ids.shape[1]]
            row_ids = ids[row, : actions.numel()]
            texts.append([self.tokenizer.decode(actions[row_ids == s]) for s in range(int(row_ids.max()) + 1)])
        return mask, ids, texts

    def _entropies(self, sample: Experience) -> torch.Tensor:
        ent = getattr(sample, "entropies", None)
        if ent is None:
            raise RuntimeError(
                "rollout has no per-token entropies: the vLLM entropy plugin is not active in the "
                "engines (see docs/entropy.md), or use --prpo.entropy_source actor"
            )
        return ent[0].float()

    def _blank_line_tokens(self, sample: Experience) -> torch.Tensor:
        actions = sample.sequences[0, 1:][: sample.action_mask.shape[1]]
        return torch.tensor(["\n\n" in self.tokenizer.decode([t]) for t in actions.tolist()])

    @torch.no_grad()
    def make_experience_batch(self, rollout_samples) -> List[Experience]:
        if self.advantage_estimator not in PRM_ESTIMATORS:
            return super().make_experience_batch(rollout_samples)
        mask, ids, texts = self.segment_rollouts(rollout_samples)
        problems = [self.problem_of(s.prompts[0]) for s in rollout_samples]
        pending = self.prm.score_async(problems, texts)  # runs on the PRM's GPUs from here on

        samples_list = self.split_rollout_samples(rollout_samples)
        experiences = self.make_experience(samples_list)

        t0 = time.time()
        scores, stats = pending.result(timeout=self.args.prm.timeout_s)
        waited = time.time() - t0
        self._process = self._scores_to_tokens(scores, ids, rollout_samples)
        self._prm_info = {
            "wait_s": waited, "score_s": stats.seconds, "segments_per_response": stats.segments / len(texts),
            "filled_segments": stats.filled_segments, "truncated_responses": stats.truncated_responses,
        }
        logger.info(f"PRM: waited {waited:.2f}s after the log-prob passes; {stats.as_dict()}")
        return self.compute_advantages_and_returns(experiences)

    @staticmethod
    def _scores_to_tokens(scores, ids: torch.Tensor, rollout_samples) -> dict:
        """rollout index -> ((A,) PRM score of each token's segment, (A,) segment ids)."""
        per_token = scores_to_tokens(scores, ids)
        return {s.index[0]: (per_token[row, : s.action_mask.shape[1]], ids[row, : s.action_mask.shape[1]])
                for row, s in enumerate(rollout_samples)}

    # ── advantages ──

    def _length_penalty(self, experiences: List[Experience]) -> None:
        """R -= L / scale when L > threshold (PRPO_SPEC §4), for every estimator alike."""
        for exp in experiences:
            penalty = length_penalty(exp.response_length, self.prpo.length_penalty_threshold,
                                     self.prpo.length_penalty_scale)
            exp.rewards = exp.rewards.float() - penalty
            exp.info["length_penalty"] = penalty

    @torch.no_grad()
    def compute_advantages_and_returns(self, experiences: List[Experience]) -> List[Experience]:
        self._length_penalty(experiences)
        if self.advantage_estimator not in PRM_ESTIMATORS:
            return super().compute_advantages_and_returns(experiences)

        rows = {i: (exp, j) for exp in experiences for j, i in enumerate(exp.index)}
        ranked = sorted(rows)  # original rollout order: groups are contiguous blocks of n
        mask = _pad_rows([rows[i][0].action_mask[rows[i][1]].float() for i in ranked])
        process = _pad_rows([self._process[i][0] for i in ranked])
        segment_ids = _pad_rows([self._process[i][1] for i in ranked], value=-1)
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
            for key, value in self._prm_info.items():
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
