"""The policy actor for ``--prpo.entropy_source actor`` (vLLM versions the plugin does not support).

OpenRLHF 0.11.2's ``PolicyModelActor`` plus one method, ``forward_with_entropy``: the same
log-prob pass as its ``forward``, which also returns each action token's entropy
(``openrlhf.models.Actor(..., return_entropy=True)``: the Actor divides its logits by the
rollout temperature first, so this is the entropy of the distribution the rollout sampled
from, before top-k / top-p). The experience maker runs it first, segments with its entropies,
submits to the PRM, and hands its log probs to upstream's ``make_experience`` instead of a
second actor pass; the PRM then overlaps the reference pass only.
"""
from __future__ import annotations

import ray
import torch

from prpo_openrlhf.rollout.samples_generator import entropies_from_actor_output


class EntropyForwardMixin:
    """``forward_with_entropy`` for any OpenRLHF model actor holding ``self.actor`` (an Actor)."""

    def forward_with_entropy(self, sequences, action_mask, attention_mask, packed_seq_lens=None,
                             mm_train_inputs_list=None):
        """(action log probs (B, A), entropies (B, A)) on the CPU; the first as ``forward`` gives it.

        Same inputs as upstream's ``PolicyModelActor.forward``, including its VLM inputs.
        """
        from openrlhf.utils.vlm_utils import merge_mm_train_inputs

        device = torch.cuda.current_device() if torch.cuda.is_available() else "cpu"
        mm_inputs = {}
        if mm_train_inputs_list and getattr(self.actor, "is_vlm", False):
            mm_inputs = merge_mm_train_inputs(mm_train_inputs_list, device)
        mask = action_mask.to(device)
        self.actor.eval()
        with torch.no_grad():
            log_probs, output = self.actor(sequences.to(device), mask, attention_mask.to(device),
                                           return_output=True, return_entropy=True,
                                           ring_attn_group=self.strategy.ring_attn_group,
                                           **mm_inputs)
        self.actor.train()
        return log_probs.to("cpu"), entropies_from_actor_output(output, mask).to("cpu")


def policy_actor_class():
    """OpenRLHF's PolicyModelActor (a Ray actor class on one GPU) with ``forward_with_entropy``."""
    from openrlhf.trainer.ray.ppo_actor import PolicyModelActor

    cls = type("PRPOPolicyModelActor", (EntropyForwardMixin, PolicyModelActor.__ray_actor_class__), {})
    return ray.remote(num_gpus=1)(cls)
