"""Rollout: the vLLM entropy plugin and the OpenRLHF samples generator that carries entropies."""
