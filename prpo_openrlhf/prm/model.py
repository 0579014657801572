"""HF model class for checkpoints in the ``Qwen2ForProcessRewardModel`` layout.

Qwen2.5-Math-PRM-7B/72B ship their own ``modeling_qwen2_rm.py`` (remote code) that no longer
runs on current transformers; transformers has no native class for the architecture. The
layout is simple, so this module rebuilds it on top of transformers' ``Qwen2Model``:

    model.*                      Qwen2 backbone (no lm_head)
    score.0  Linear(h, h)  ->  ReLU  ->  score.2  Linear(h, num_labels=2)

Loading goes through ``from_pretrained``, so single-file and sharded
(``model.safetensors.index.json``) checkpoints, dtype and device placement work as for any HF
model. The head is kept in fp32 whatever the backbone dtype, as vLLM's pooling runner does by
default, so that the two backends agree.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import Qwen2Config, Qwen2Model
from transformers.models.qwen2.modeling_qwen2 import Qwen2PreTrainedModel

ARCHITECTURE = "Qwen2ForProcessRewardModel"


class Qwen2ProcessRewardModel(Qwen2PreTrainedModel):
    """Qwen2 backbone + 2-layer MLP token-classification head (Qwen2.5-Math-PRM layout)."""

    config_class = Qwen2Config
    # Parameter names match the checkpoint one to one; nothing is renamed on load.
    _keep_in_fp32_modules_strict = ["score"]
    # Some exports of Qwen PRMs carry an unused lm_head; it is not part of the reward model.
    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]

    def __init__(self, config: Qwen2Config):
        super().__init__(config)
        num_labels = getattr(config, "num_labels", 2) or 2
        self.model = Qwen2Model(config)
        self.score = nn.Sequential(
            nn.Linear(config.hidden_size, config.hidden_size),
            nn.ReLU(),
            nn.Linear(config.hidden_size, num_labels),
        )
        self.post_init()

    def hidden_states(self, input_ids: torch.Tensor,
                      attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Last hidden states ``(B, T, h)`` of the backbone; no KV cache is kept."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.last_hidden_state

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Token-classification logits ``(..., num_labels)`` in fp32 from hidden states."""
        return self.score(hidden.to(self.score[0].weight.dtype))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **_unused) -> torch.Tensor:
        """Logits ``(B, T, num_labels)`` for every token, like the checkpoint's remote code."""
        return self.head(self.hidden_states(input_ids, attention_mask))

    @torch.no_grad()
    def step_probs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                   tag_mask: torch.Tensor) -> torch.Tensor:
        """``softmax(logits)`` ``(n_tags, num_labels)`` at the positions where ``tag_mask`` is set.

        ``input_ids``, ``attention_mask`` (None: causal only), ``tag_mask``: ``(B, T)``. Rows
        come in row-major order of ``tag_mask`` (sequence by sequence, left to right). Only the
        tag positions go through the head: it is an h x h MLP, cheap, but there is no reason to
        run it on every token of a long response.
        """
        hidden = self.hidden_states(input_ids, attention_mask)
        logits = self.head(hidden[tag_mask])
        return torch.softmax(logits.float(), dim=-1)


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    """``"auto"``/None -> bf16 on CUDA, fp32 elsewhere; strings like ``"bf16"`` are accepted."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if dtype not in names:
        raise ValueError(f"unknown PRM dtype {dtype!r}; use one of {sorted(names)} or 'auto'")
    return names[dtype]


def load_prm(path: str, *, dtype: str | torch.dtype | None = "auto", device: str = "cpu",
             attn_implementation: str = "sdpa") -> Qwen2ProcessRewardModel:
    """Load a ``Qwen2ForProcessRewardModel`` checkpoint (local dir or hub id) for inference.

    Refuses checkpoints whose head or backbone weights are missing: a randomly initialised head
    would produce plausible-looking but meaningless scores.
    """
    config = Qwen2Config.from_pretrained(path)
    archs = list(getattr(config, "architectures", None) or [])
    if archs and ARCHITECTURE not in archs:
        raise ValueError(f"{path}: config.json declares architectures={archs}, expected "
                         f"{ARCHITECTURE!r} (backbone model.*, head score.0/score.2)")
    torch_dtype = resolve_dtype(dtype, device)
    model, info = Qwen2ProcessRewardModel.from_pretrained(
        path, config=config, dtype=torch_dtype, attn_implementation=attn_implementation,
        device_map={"": str(device)}, output_loading_info=True)
    missing = sorted(info.get("missing_keys", []))
    if missing:
        shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise ValueError(f"{path}: checkpoint lacks {len(missing)} PRM weights ({shown}); "
                         f"it is not in the {ARCHITECTURE} layout")
    return model.eval()
