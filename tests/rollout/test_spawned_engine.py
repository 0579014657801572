"""The plugin is active in the processes vLLM spawns: frontend, EngineCore and worker.

vLLM's default V1 multiprocessing plus the ``mp`` executor put the scheduler in a spawned
EngineCore process and the model runner / sampler in a spawned worker process; none of them
imports this project unless vLLM's plugin loader calls ``register()`` there.
"""
import json
import subprocess
import sys
import textwrap

import torch

from tests.rollout.reference import hf_entropies

_SCRIPT = textwrap.dedent("""
    import json, os, sys

    if __name__ == "__main__":
        os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        from vllm import LLM, SamplingParams

        llm = LLM(model=sys.argv[1], dtype="float32", max_model_len=256, seed=0, enforce_eager=True,
                  distributed_executor_backend="mp", kv_cache_memory_bytes=64 << 20)
        params = SamplingParams(max_tokens=10, temperature=0.7, top_p=0.9, n=2, seed=7,
                                extra_args={"return_entropy": True})
        out = llm.generate(["Compute 12*7."], params, use_tqdm=False)[0]
        engine = llm.llm_engine.engine_core
        print("RESULT " + json.dumps({
            "client": type(engine).__name__,
            "prompt": list(out.prompt_token_ids),
            "samples": [[list(c.token_ids), getattr(c, "token_entropies", None)] for c in out.outputs],
        }), flush=True)
""")


def test_entropies_come_back_from_spawned_engine_core_and_worker(peaked_lm_path, hf_model):
    out = subprocess.run([sys.executable, "-c", _SCRIPT, peaked_lm_path], capture_output=True,
                         text=True, timeout=400)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, (out.stdout + out.stderr)[-4000:]
    result = json.loads(line[-1][7:])
    assert result["client"] == "SyncMPClient"  # the engine core ran in its own process
    assert "(Worker pid=" in out.stdout + out.stderr  # and the model runner in another one
    assert len(result["samples"]) == 2
    for token_ids, entropies in result["samples"]:
        assert entropies is not None and len(entropies) == len(token_ids) == 10
        ref = hf_entropies(hf_model, result["prompt"], token_ids, 0.7)
        torch.testing.assert_close(torch.tensor(entropies, dtype=torch.float64), ref, atol=1e-4, rtol=0)
