"""A run's groups on named nodes: ``--placement.actor / .vllm / .prm NAME``.

On a cluster whose nodes were started with a custom resource naming them
(``ray start --address HEAD:PORT --num-gpus 8 --resources '{"trainer_node": 1}'``), each flag
puts one group on the node(s) holding that resource: the DeepSpeed actors (policy, reference,
and any critic or reward model), the vLLM engines, the PRM's actors. Every bundle of a group's
placement group asks for BUNDLE_SHARE of the resource and every actor for ACTOR_SHARE of it, so a
node with 1 of it takes up to 100 bundles; GPUs decide how many fit.

Upstream places its groups itself; three names are swapped for the run (see launch.py):
``placement_group`` in openrlhf.cli.train_ppo_ray (the colocated groups' bundles) and in
openrlhf.trainer.ray.vllm_engine (the engines' bundles), and the actor groups' class, which asks
upstream's own ``resources`` argument for the actor resource.
"""
from __future__ import annotations

import functools

ACTOR_SHARE = 0.001  # what one actor asks for
BUNDLE_SHARE = 0.01  # what one bundle holds: room for the actors colocated in it


def _with_resource(create_pg, name: str):
    @functools.wraps(create_pg)
    def placement_group(bundles, *args, **kwargs):
        return create_pg([{**bundle, name: BUNDLE_SHARE} for bundle in bundles], *args, **kwargs)

    return placement_group


def check_placement(args, cluster_resources: dict) -> None:
    """Refuse, before anything is placed, a node resource the cluster does not have (its groups
    would wait for ever) and a vLLM placement apart from the actors it shares GPUs with."""
    p = args.placement
    missing = [f"--placement.{role} {name}" for role, name in (("actor", p.actor), ("vllm", p.vllm), ("prm", p.prm))
               if name and cluster_resources.get(name, 0) <= 0]
    if missing:
        have = sorted(k for k in cluster_resources if k not in {"CPU", "GPU", "memory", "object_store_memory"}
                      and not k.startswith("node:"))
        raise SystemExit(f"{', '.join(missing)}: no node of this cluster has that resource (custom resources here: "
                         f"{have or 'none'}); start the node with ray start ... --resources '{{\"NAME\": 1}}'")
    if args.train.colocate_all and p.vllm and p.vllm != p.actor:
        raise SystemExit(f"--placement.vllm {p.vllm} with --train.colocate_all: the engines share the actors' GPUs, "
                         f"so they go where --placement.actor ({p.actor}) puts the actors")


def placement_swaps(args, upstream_cli, actor_group_cls) -> list:
    """(module, name, value) swaps that put the run's groups where ``args.placement`` says."""
    import openrlhf.trainer.ray.vllm_engine as vllm_engine

    p, swaps = args.placement, []
    if p.actor:
        swaps += [(upstream_cli, "placement_group", _with_resource(upstream_cli.placement_group, p.actor)),
                  (actor_group_cls, "node_resource", p.actor)]
    if p.vllm and not args.train.colocate_all:
        swaps.append((vllm_engine, "placement_group", _with_resource(vllm_engine.placement_group, p.vllm)))
    return swaps
