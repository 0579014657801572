"""The file to pass as OpenRLHF's ``--agent_func_path`` for rollouts with vLLM entropies.

OpenRLHF's ``RolloutRayActor`` loads ``AgentExecutor`` from this file and builds it without
arguments, so the remote reward endpoints that ``--remote_rm_url`` would give the default
executor are read from ``PRPO_REMOTE_RM_URL`` (comma-separated; the trainer sets it).
"""
import os

from prpo_openrlhf.rollout.agent_executor import EntropySingleTurnAgentExecutor

REMOTE_RM_ENV = "PRPO_REMOTE_RM_URL"


class AgentExecutor(EntropySingleTurnAgentExecutor):
    def __init__(self):
        urls = [u for u in os.environ.get(REMOTE_RM_ENV, "").split(",") if u]
        super().__init__(urls or None)
