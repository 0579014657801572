"""PRPOTrainer: OpenRLHF 0.11.2's PPOTrainer with the PRPO experience maker and PRM.

What changes: after upstream's constructor, the samples generator becomes the one that carries
per-token entropies from vLLM and hands each finished prompt group to the PRM, and the
experience maker becomes PRPOExperienceMaker wired to the PRM (a PRM actor group on its own
placement group, or a shared PRM service). ``fit`` and everything else are upstream's.
"""
from __future__ import annotations

import os

import ray
from openrlhf.trainer.ppo_trainer import PPOTrainer

from prpo_openrlhf.cli.prpo_flags import PRM_ESTIMATORS
from prpo_openrlhf.trainer.experience_maker import PRPOExperienceMaker


def make_prm(args):
    """The PRM the experience maker submits to, from ``--prm.*``; None when unused.

    Both kinds offer ``score_async(problems, segments)`` whose ``.result()`` gives
    ``(scores, stats)`` or raises at the call's deadline (``--prm.timeout_s`` from submission):
    a PRM actor group on its own placement group, or a shared service.
    """
    prm = args.prm
    if args.algo.advantage.estimator not in PRM_ESTIMATORS:
        return None
    if prm.remote_url:
        from prpo_openrlhf.prm import connect

        return connect(prm.remote_url, prm.remote_api, token=os.environ.get(prm.auth_token_env),
                       timeout_s=prm.timeout_s, tokenizer=prm.tokenizer, system_prompt=prm.system_prompt,
                       step_tag=prm.step_tag, max_length=prm.max_len, overlong_fill=args.prpo.prior_mean)
    from prpo_openrlhf.prm.ray_group import PRMActorGroup

    return PRMActorGroup(
        prm.model_name_or_path or prm.backend,  # --prm.backend exact reads no model
        num_actors=prm.num_nodes * prm.num_gpus_per_node,
        backend=prm.backend,
        max_failures=prm.max_failures,
        call_timeout_s=prm.timeout_s,
        coalesce=prm.coalesce,
        async_engine=prm.async_engine,
        node_resource=args.placement.prm,
        dtype=prm.dtype,
        max_length=prm.max_len,
        step_tag=prm.step_tag,
        system_prompt=prm.system_prompt,
        overlong_fill=args.prpo.prior_mean,
        **({"max_tokens_per_batch": prm.max_tokens_per_batch} if prm.backend == "hf" else {}),
    )


class _PRPOTrainer(PPOTrainer.__ray_actor_class__):
    def __init__(self, pretrain, strategy, actor_model_group, critic_model_group, reward_model_group,
                 reference_model_group, vllm_engines, **generate_kwargs):
        super().__init__(pretrain, strategy, actor_model_group, critic_model_group, reward_model_group,
                         reference_model_group, vllm_engines, **generate_kwargs)
        from prpo_openrlhf.rollout.samples_generator import PRPOSamplesGenerator

        generator = self.samples_generator
        self.samples_generator = PRPOSamplesGenerator(
            strategy=strategy, prompts_dataloader=generator.prompts_dataloader,
            eval_dataloader=generator.eval_dataloader, tokenizer=generator.tokenizer,
            vllm_engines=vllm_engines,
        )
        self.experience_maker = PRPOExperienceMaker(
            actor_model_group, critic_model_group, reward_model_group, reference_model_group,
            self.kl_ctl, strategy, self.tokenizer, prm=make_prm(strategy.args),
        )
        maker = self.experience_maker
        if maker.dispatcher is not None and not maker.entropy_from_actor and strategy.args.prpo.prm_dispatch == "group":
            # PRM scoring per prompt group while vLLM generates the others (prm_dispatch.py).
            self.samples_generator.group_sink = maker.dispatcher.submit


PRPOTrainer = ray.remote(_PRPOTrainer)
