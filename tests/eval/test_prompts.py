"""The evaluation prompt: the model's chat template with the Qwen2.5-Math system turn."""
import pytest
from transformers import AutoTokenizer

from prpo_openrlhf.eval.prompts import (SYSTEM_PROMPT, PromptError, build_prompt,
                                        prompt_token_ids)


def test_qwen_math_chat_prompt(tiny_lm_path):
    tok = AutoTokenizer.from_pretrained(tiny_lm_path)
    text = build_prompt(tok, "What is 2+3?")
    assert text == ("<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n"
                    "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")
    ids = prompt_token_ids(tok, "What is 2+3?")
    assert tok.decode(ids) == text
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 3


def test_plain_prompt_and_missing_chat_template(tiny_lm_path):
    tok = AutoTokenizer.from_pretrained(tiny_lm_path)
    assert build_prompt(tok, "Q?", "plain") == "Q?\n" + SYSTEM_PROMPT + "\n"
    tok.chat_template = None
    with pytest.raises(PromptError, match="--prompt_template plain"):
        build_prompt(tok, "Q?")
    with pytest.raises(PromptError, match="unknown prompt template"):
        build_prompt(tok, "Q?", "llama")
