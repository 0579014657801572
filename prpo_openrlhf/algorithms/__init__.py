"""PRPO algorithms: pure torch and stdlib (no ray, vllm, deepspeed or openrlhf imports)."""
