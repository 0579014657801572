"""Write tiny, randomly initialised Qwen2 checkpoints that HF and vLLM load like the real ones.

Two layouts: a causal LM (``Qwen2ForCausalLM``) and a process reward model in the
``Qwen2ForProcessRewardModel`` layout of Qwen2.5-Math-PRM (backbone ``model.*``, head
``score.0`` Linear(h, h) -> ReLU -> ``score.2`` Linear(h, 2)).

The tokenizer is a byte-level BPE over the 256-symbol ByteLevel alphabet with no merges:
vLLM and AutoTokenizer load a ``qwen2`` checkpoint's tokenizer as Qwen2Tokenizer, and this
vocabulary tokenizes identically there and in PreTrainedTokenizerFast (a char-level WordLevel
vocabulary silently loses spaces and newlines). Head size is 64: vLLM's CPU attention
rejects 16.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"]
STEP_TAG = "<extra_0>"

# Qwen-style chat template (system, user, assistant turns; generation prompt).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _byte_level_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {sym: i for i, sym in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[STEP_TAG],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _config(tokenizer, *, hidden_size, num_layers, max_position_embeddings, architectures):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=hidden_size // 64,
        num_key_value_heads=hidden_size // 64,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        architectures=architectures,
        torch_dtype="float32",
    )


def write_tiny_lm(path: str | os.PathLike, *, seed: int = 0, hidden_size: int = 128,
                  num_layers: int = 2, max_position_embeddings: int = 2048) -> Path:
    """Write a random ``Qwen2ForCausalLM`` + tokenizer to ``path``; returns the path."""
    from transformers import Qwen2ForCausalLM

    path = Path(path)
    tokenizer = _byte_level_tokenizer()
    cfg = _config(tokenizer, hidden_size=hidden_size, num_layers=num_layers,
                  max_position_embeddings=max_position_embeddings,
                  architectures=["Qwen2ForCausalLM"])
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_tiny_prm(path: str | os.PathLike, *, seed: int = 1, hidden_size: int = 128,
                   num_layers: int = 2, max_position_embeddings: int = 2048) -> Path:
    """Write a random checkpoint in the ``Qwen2ForProcessRewardModel`` layout to ``path``."""
    from safetensors.torch import save_file
    from transformers import Qwen2Model

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _byte_level_tokenizer()
    cfg = _config(tokenizer, hidden_size=hidden_size, num_layers=num_layers,
                  max_position_embeddings=max_position_embeddings,
                  architectures=["Qwen2ForProcessRewardModel"])
    cfg.num_labels = 2
    torch.manual_seed(seed)
    backbone = Qwen2Model(cfg)
    head = torch.nn.Sequential(torch.nn.Linear(hidden_size, hidden_size), torch.nn.ReLU(),
                               torch.nn.Linear(hidden_size, 2))
    state = {f"model.{k}": v.contiguous() for k, v in backbone.state_dict().items()}
    state.update({f"score.{k}": v.contiguous() for k, v in head.state_dict().items()})
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    cfg_dict = cfg.to_dict()
    cfg_dict["architectures"] = ["Qwen2ForProcessRewardModel"]
    (path / "config.json").write_text(json.dumps(cfg_dict, indent=2))
    tokenizer.save_pretrained(path)
    return path
