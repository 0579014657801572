"""Shared inputs and an independent reference for the PRM tests."""
import torch

# Problems and segments of mixed lengths (the byte-level tokenizer: one token per byte).
PROBLEMS = [
    "What is 2+3?",
    "Let x satisfy 3x + 4 = 19. Find x.",
    "Compute the sum of the first 10 positive integers.",
    "A",
]
SEGMENTS = [
    ["2+3=5", "So the answer is \\boxed{5}."],
    ["Subtract 4 from both sides: 3x = 15.", "Divide by 3: x = 5.", "\\boxed{5}"],
    ["The sum is n(n+1)/2 with n = 10. " * 3, "That is 55.", "", "\\boxed{55}"],
    ["ok"],
]


def model_card_ids(tokenizer, problem, segments, system, tag="<extra_0>"):
    """Input ids exactly as the Qwen2.5-Math-PRM model card builds them."""
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": problem},
        {"role": "assistant", "content": tag.join(segments) + tag},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    return tokenizer.encode(text, add_special_tokens=False)


def reference_step_scores(path, ids, tag_id):
    """Hand-written forward: Qwen2 backbone from the raw safetensors + the head as matmuls,
    one unpadded sequence; softmax(logits)[1] at every tag."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, Qwen2Model

    sd = load_file(f"{path}/model.safetensors")
    backbone = Qwen2Model(AutoConfig.from_pretrained(path)).eval()
    backbone.load_state_dict({k[len("model."):]: v for k, v in sd.items()
                              if k.startswith("model.")})
    with torch.no_grad():
        h = backbone(torch.tensor([ids])).last_hidden_state[0]
    hidden = torch.relu(h @ sd["score.0.weight"].T + sd["score.0.bias"])
    logits = hidden @ sd["score.2.weight"].T + sd["score.2.bias"]
    pos = [i for i, t in enumerate(ids) if t == tag_id]
    return torch.softmax(logits[pos], dim=-1)[:, 1]
