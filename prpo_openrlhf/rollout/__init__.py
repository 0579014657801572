"""Rollout: the vLLM entropy plugin and the OpenRLHF samples generator that carries entropies.

- ``vllm_entropy``: the vLLM general plugin (``register``; hooks in ``_vllm_engine_hooks`` and
  ``_vllm_worker_hooks``); ``entropy``: the computation.
- ``agent_executor`` / ``entropy_agent``: OpenRLHF executors whose responses carry entropies.
- ``samples_generator``: ``PRPOSamplesGenerator``, ``PRPOExperience``, the actor fallback.

Nothing is imported here: vLLM imports ``vllm_entropy`` in every process it starts, and that
must not pull in OpenRLHF. See docs/entropy.md.
"""
