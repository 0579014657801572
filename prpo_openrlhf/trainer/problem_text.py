"""Recover the raw problem from a chat-templated prompt, for the PRM's user turn.

OpenRLHF's PromptDataset hands the rollout the prompt after the policy's chat template; the PRM
needs the problem alone (it applies its own template and system prompt). The policy's template
is rendered once around a sentinel to learn its prefix and suffix, so any chat template works.
"""
from __future__ import annotations

_SENTINEL = "\u2063PRPO-PROBLEM\u2063"


class ProblemExtractor:
    def __init__(self, tokenizer):
        self.prefix, self.suffix = "", ""
        if getattr(tokenizer, "chat_template", None):
            rendered = tokenizer.apply_chat_template(
                [{"role": "user", "content": _SENTINEL}], tokenize=False, add_generation_prompt=True
            )
            head, _, tail = rendered.partition(_SENTINEL)
            self.prefix, self.suffix = head, tail

    def __call__(self, prompt: str) -> str:
        """The problem inside ``prompt``; the prompt itself when the template does not match."""
        if prompt.startswith(self.prefix) and prompt.endswith(self.suffix) and (self.prefix or self.suffix):
            return prompt[len(self.prefix): len(prompt) - len(self.suffix)]
        return prompt
