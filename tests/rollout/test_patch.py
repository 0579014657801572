"""patches/: the diff applies to the installed vLLM 0.29.0 and works without the plugin."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import vllm

from tests.rollout.reference import hf_entropies

PATCH = Path(__file__).resolve().parents[2] / "patches" / "vllm-0.29.0-token-entropies.patch"
SITE = Path(vllm.__file__).resolve().parents[1]


def _patched_files():
    return [line[len("+++ b/"):].strip() for line in PATCH.read_text().splitlines()
            if line.startswith("+++ b/")]


def _apply(root: Path, *extra) -> subprocess.CompletedProcess:
    if shutil.which("patch"):
        cmd = ["patch", "-p1", "-d", str(root), *extra]
    elif shutil.which("git"):
        cmd = ["git", "apply", "-p1", f"--directory={root}", *(["--check"] if extra else [])]
    else:
        pytest.skip("neither `patch` nor `git` is installed")
    return subprocess.run(cmd, stdin=PATCH.open(), capture_output=True, text=True)


def test_patch_applies_to_the_installed_vllm_source(tmp_path):
    for rel in _patched_files():
        if (SITE / rel).exists():
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(SITE / rel, tmp_path / rel)
    out = _apply(tmp_path, "--dry-run")
    assert out.returncode == 0, out.stdout + out.stderr


_SCRIPT = """
import json, sys
if __name__ == "__main__":
    import vllm
    from vllm import LLM, SamplingParams
    llm = LLM(model=sys.argv[1], dtype="float32", max_model_len=256, seed=0, enforce_eager=True,
              distributed_executor_backend="mp", kv_cache_memory_bytes=64 << 20)
    asked = SamplingParams(max_tokens=10, temperature=0.7, top_p=0.9, n=2, seed=7,
                           extra_args={"return_entropy": True})
    outs = llm.generate(["Compute 12*7.", "Hi"], [asked, SamplingParams(max_tokens=4)], use_tqdm=False)
    print("RESULT " + json.dumps({"vllm": vllm.__file__, "prompt": list(outs[0].prompt_token_ids),
          "samples": [[list(c.token_ids), c.token_entropies] for c in outs[0].outputs],
          "plain": outs[1].outputs[0].token_entropies}), flush=True)
"""


@pytest.mark.slow
def test_patched_vllm_returns_entropies_without_the_plugin(tmp_path, peaked_lm_path, hf_model):
    """A copy of vLLM (symlinks, patched files copied) with the plugin switched off."""
    root = tmp_path / "site"
    shutil.copytree(SITE / "vllm", root / "vllm", symlinks=True, copy_function=os.symlink,
                    ignore=shutil.ignore_patterns("__pycache__"))
    for rel in _patched_files():
        if (root / rel).is_symlink():
            (root / rel).unlink()
            shutil.copy(SITE / rel, root / rel)
    out = _apply(root)
    assert out.returncode == 0, out.stdout + out.stderr
    env = dict(os.environ, PYTHONPATH=str(root), VLLM_PLUGINS="", PYTHONDONTWRITEBYTECODE="1")
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    run = subprocess.run([sys.executable, "-c", _SCRIPT, peaked_lm_path], capture_output=True,
                         text=True, timeout=400, env=env)
    line = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, (run.stdout + run.stderr)[-4000:]
    result = json.loads(line[-1][7:])
    assert result["vllm"].startswith(str(root)) and result["plain"] is None
    for token_ids, entropies in result["samples"]:
        ref = hf_entropies(hf_model, result["prompt"], token_ids, 0.7)
        torch.testing.assert_close(torch.tensor(entropies, dtype=torch.float64), ref, atol=1e-4, rtol=0)
