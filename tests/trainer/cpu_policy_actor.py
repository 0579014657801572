"""CPU stand-in for OpenRLHF's DeepSpeed policy/reference Ray actors (used by tests only).

OpenRLHF's PolicyModelActor and ReferenceModelActor run a DeepSpeed engine on CUDA, which
cannot exist on a CPU machine. This actor is OpenRLHF's own ``BaseModelActor`` (same
constructor, same ``execute_batch`` that RayActorGroup drives) with the two CUDA-only steps
replaced: the model is OpenRLHF's ``openrlhf.models.Actor`` on CPU without a DeepSpeed
engine, and ``empty_cache`` is a no-op. ``forward`` keeps PolicyModelActor's signature; the
project's ``forward_with_entropy`` (EntropyForwardMixin) is the real one. It announces itself
loudly on construction.
"""
import logging
import sys

import ray
import torch
from openrlhf.trainer.ray.launcher import BaseModelActor

from prpo_openrlhf.trainer.policy_actor import EntropyForwardMixin

logger = logging.getLogger(__name__)


@ray.remote(num_cpus=0)
class CPUPolicyActorStandIn(EntropyForwardMixin, BaseModelActor):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = {}  # method -> times run, so tests can tell which pass ran
        logger.warning("CPUPolicyActorStandIn: CPU stand-in for OpenRLHF's DeepSpeed policy actor "
                       "(DeepSpeed on CUDA cannot run here); forward uses openrlhf.models.Actor on CPU")

    def init_model_from_pretrained(self, strategy, pretrain):
        from openrlhf.models import Actor

        # flash-attn's Triton cross-entropy imports on CPU but needs CUDA when called; making its
        # import fail sends OpenRLHF's log_probs_from_logits down its own torch fallback.
        sys.modules["flash_attn.ops.triton.cross_entropy"] = None
        self.strategy = strategy  # not set up: no process group, so is_rank_0() is True
        # OpenRLHF loads in bf16 or fp16 only; fp32 keeps CPU log-probs exact for comparisons.
        self.actor = Actor(pretrain, attn_implementation="sdpa", param_dtype="bf16",
                           temperature=strategy.args.rollout.temperature)
        self.actor.model.float().eval()
        return True

    def forward(self, sequences, action_mask=None, attention_mask=None, packed_seq_lens=None,
                mm_train_inputs_list=None):
        self._count("forward")
        with torch.no_grad():
            return self.actor(sequences, action_mask, attention_mask).to("cpu")

    def forward_with_entropy(self, *args, **kwargs):
        self._count("forward_with_entropy")
        return super().forward_with_entropy(*args, **kwargs)  # the project's method, unchanged

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def forward_calls(self) -> dict:
        return dict(self.calls)

    def empty_cache(self):
        return None
