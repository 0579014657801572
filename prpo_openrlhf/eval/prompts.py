"""The prompt a policy sees for a math problem, shared by evaluation and training.

Defined once here so that `prpo-eval` scores a checkpoint on exactly the prompt it was trained
on. The default is the Qwen2.5-Math convention (the one PRPO_SPEC section 3 uses for the PRM):
the model's own chat template with a fixed system turn and the problem as the user turn.
"""
from __future__ import annotations

SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

# "plain" is for base checkpoints without a chat template: the problem, then the instruction.
PLAIN_SUFFIX = "\n" + SYSTEM_PROMPT + "\n"

TEMPLATES = ("qwen_math_chat", "plain")
DEFAULT_TEMPLATE = "qwen_math_chat"


class PromptError(ValueError):
    """A template that cannot be applied to this tokenizer."""


def build_messages(problem: str, system_prompt: str = SYSTEM_PROMPT) -> list[dict]:
    """Chat messages of the default template: system instruction, then the problem."""
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": problem}]


def build_prompt(tokenizer, problem: str, template: str = DEFAULT_TEMPLATE) -> str:
    """The prompt text for ``problem`` under ``template`` (one of ``TEMPLATES``)."""
    if template == "plain":
        return problem + PLAIN_SUFFIX
    if template != "qwen_math_chat":
        raise PromptError(f"unknown prompt template {template!r}; choose one of {TEMPLATES}")
    if not getattr(tokenizer, "chat_template", None):
        raise PromptError(
            "the tokenizer has no chat template; pass --prompt_template plain for a base model "
            "without one"
        )
    return tokenizer.apply_chat_template(
        build_messages(problem), tokenize=False, add_generation_prompt=True
    )


def prompt_token_ids(tokenizer, problem: str, template: str = DEFAULT_TEMPLATE) -> list[int]:
    """Token ids of the prompt; both generation backends consume exactly these ids.

    A chat template already writes every special token it needs (BOS included, where the
    model has one), so only the plain template lets the tokenizer add its own.
    """
    text = build_prompt(tokenizer, problem, template)
    ids = tokenizer(text, add_special_tokens=(template == "plain"))["input_ids"]
    return list(ids)
