"""PRM submission per prompt group, as soon as the group's rollouts exist.

OpenRLHF 0.11.2's ``SamplesGenerator._generate_vllm`` sends each prompt to a vLLM engine as one
Ray call that returns that prompt's n responses, and turns the calls into Experiences in the
order they finish (``ray.wait``). PRPOSamplesGenerator hands every completed group to
:meth:`PRMDispatcher.submit` right there, so the PRM scores the first groups while vLLM is
still generating the others, and goes on through the actor and reference log-prob passes
(groups upstream's dynamic filter drops never reach it; see PRPOSamplesGenerator).
Groups that reach the experience maker without a submission (entropies from the actor pass,
samples made elsewhere) are submitted by :meth:`submit_missing`, group by group, before the
log-prob passes are dispatched. :meth:`collect` then waits for every submission of the batch.

Each rollout carries its submission as ``sample.prm_job`` (a :class:`PRMJob`).
"""
from __future__ import annotations

import collections
import zlib
from dataclasses import dataclass
from typing import List

import torch

from prpo_openrlhf.algorithms.segmentation import segment_batch
from prpo_openrlhf.prm.scorer import PRMStats
from prpo_openrlhf.trainer.problem_text import ProblemExtractor

JOB_ATTR = "prm_job"


@dataclass
class PRMJob:
    """One rollout's share of a PRM submission: ``pending.result()[0][row]`` are its scores."""

    pending: object  # has .result() -> (scores per response, PRMStats), by the call's deadline
    row: int
    segment_ids: torch.Tensor  # (A,) segment of each action token, -1 off the response


def pad_rows(rows: List[torch.Tensor], value=0.0) -> torch.Tensor:
    """Stack 1-D tensors of different lengths into (N, T_max), right-padded."""
    width = max((r.numel() for r in rows), default=0)
    out = torch.full((len(rows), width), value, dtype=rows[0].dtype if rows else torch.float32)
    for i, r in enumerate(rows):
        out[i, : r.numel()] = r
    return out


class PRMDispatcher:
    """Segments groups of rollouts, submits them to the PRM, and collects the scores."""

    def __init__(self, prm, tokenizer, prpo_args, n_samples_per_prompt: int):
        self.prm, self.tokenizer, self.prpo, self.n = prm, tokenizer, prpo_args, n_samples_per_prompt
        self.problem_of = ProblemExtractor(tokenizer)
        self._splits_of_prompt = collections.Counter()  # prompt key -> times split so far

    def segment(self, samples) -> tuple[torch.Tensor, list[list[str]]]:
        """(N, A_max) segment ids (-1 off the response) and each rollout's segment texts."""
        mask = pad_rows([s.action_mask[0].float() for s in samples]).bool()
        entropies = torch.zeros(mask.shape)
        if self.prpo.split == "entropy":
            entropies = pad_rows([self._entropies(s) for s in samples])
        newline = None
        if self.prpo.split == "newline":
            newline = pad_rows([self._blank_line_tokens(s).float() for s in samples]).bool()
        ids = segment_batch(entropies, mask, method=self.prpo.split, k=self.prpo.k, min_gap=self.prpo.min_gap,
                            seed=self._split_seed(samples), newline_mask=newline)
        texts = []
        for row, sample in enumerate(samples):
            # action_mask[j] marks token j + 1 of the sequence (OpenRLHF's convention).
            actions = sample.sequences[0, 1: 1 + ids.shape[1]]
            row_ids = ids[row, : actions.numel()]
            texts.append([self.segment_text(actions[row_ids == s]) for s in range(int(row_ids.max()) + 1)])
        return ids, texts

    def segment_text(self, token_ids: torch.Tensor) -> str:
        """A segment as the PRM reads it: special tokens dropped. A finished response's last
        token is EOS; kept, its text (``<|im_end|>``) would sit inside the PRM's assistant turn
        before the last step tag, and an exact verifier would judge that last line wrong."""
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def _split_seed(self, samples) -> int:
        """Seed of the random split for this group: from ``--prpo.seed``, the group's prompt and how
        often that prompt was split before. It differs from group to group and epoch to epoch, yet
        not with the order in which vLLM happens to finish the groups, so a rerun cuts the same."""
        key = zlib.crc32(samples[0].prompts[0].encode("utf-8"))
        rounds = self._splits_of_prompt[key]
        self._splits_of_prompt[key] += 1
        return (self.prpo.seed * 1_000_003 + key * 1009 + rounds) % 2**62

    @staticmethod
    def _entropies(sample) -> torch.Tensor:
        ent = getattr(sample, "entropies", None)
        if ent is None:
            raise RuntimeError(
                "rollout has no per-token entropies: the vLLM entropy plugin is not active in the "
                "engines (see docs/entropy.md); use --prpo.entropy_source actor, or a --prpo.split "
                "that needs none (uniform, random, newline)")
        return ent[0].float()

    def _blank_line_tokens(self, sample) -> torch.Tensor:
        actions = sample.sequences[0, 1:][: sample.action_mask.shape[1]]
        return torch.tensor(["\n\n" in self.segment_text([t]) for t in actions.tolist()])

    def submit(self, samples) -> None:
        """Segment one group of rollouts and send it to the PRM (returns at once)."""
        ids, texts = self.segment(samples)
        pending = self.prm.score_async([self.problem_of(s.prompts[0]) for s in samples], texts)
        for row, sample in enumerate(samples):
            setattr(sample, JOB_ATTR, PRMJob(pending, row, ids[row, : sample.action_mask.shape[1]]))

    def submit_missing(self, samples) -> int:
        """Submit, per block of n consecutive rollouts, those without a submission; how many."""
        todo = [s for s in samples if getattr(s, JOB_ATTR, None) is None]
        for start in range(0, len(todo), self.n):
            self.submit(todo[start:start + self.n])
        return len(todo)

    def collect(self, samples):
        """Per rollout: (its segment scores, its segment ids); and the merged PRMStats.

        Each submission carries its own deadline (``--prm.timeout_s`` from submission), so a
        batch waits at most that long after its last submission. Raises whatever the PRM
        raises (after its own retries, or at the deadline): a step never goes on with
        made-up scores.
        """
        results, order = {}, []
        for s in samples:
            job = getattr(s, JOB_ATTR)
            if id(job.pending) not in results:
                results[id(job.pending)] = job.pending.result()
                order.append(results[id(job.pending)])
        offsets = [0]
        for scores, _ in order[:-1]:
            offsets.append(offsets[-1] + len(scores))
        stats = PRMStats.merge([st for _, st in order], offsets)
        per_sample = []
        for s in samples:
            job = getattr(s, JOB_ATTR)
            per_sample.append((results[id(job.pending)][0][job.row], job.segment_ids))
        return per_sample, stats
