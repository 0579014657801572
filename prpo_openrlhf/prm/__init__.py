"""Process reward model scoring: HF and vLLM backends, Ray actor group, HTTP service."""
