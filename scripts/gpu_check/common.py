"""Shared by the parts of scripts/gpu_check.sh: mode, device, sizes, and the result file.

Every part is run as ``python scripts/gpu_check/part_<name>.py --mode gpu|smoke --out DIR`` in
its own process (the driver caps its time); it writes ``DIR/result.json`` = {"figures": {...},
"checks": [{"name", "ok", "detail"}]} and exits 0 only when every check holds. In ``smoke``
mode the sizes are tiny and "the device" is the CPU, so the same code paths run in CI.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# The issue's figure for the lent H200's dense bf16 peak (benchmarks/bench_prm.py's table has
# 989.4 for an H200 SXM; both shares are reported).
ISSUE_H200_BF16_PEAK_TFLOPS = 790.0


class Part:
    """Collects figures and checks; ``finish`` writes result.json and returns the exit code."""

    def __init__(self, name: str, description: str):
        ap = argparse.ArgumentParser(description=description)
        ap.add_argument("--mode", choices=("gpu", "smoke"), required=True)
        ap.add_argument("--out", required=True)
        self.args = ap.parse_args()
        self.name, self.mode = name, self.args.mode
        self.out = Path(self.args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.figures: dict = {}
        self.checks: list[dict] = []
        self.t0 = time.monotonic()

    @property
    def smoke(self) -> bool:
        return self.mode == "smoke"

    @property
    def device(self) -> str:
        """"cuda" in gpu mode (fails loudly without it), "cpu" in the smoke.

        ``GPU_CHECK_FORCE_DEVICE=cpu`` runs gpu mode's sizes on CPU: only to time a part when
        estimating the GPU run (docs/testing.md), never a pass.
        """
        if self.smoke:
            return "cpu"
        forced = os.environ.get("GPU_CHECK_FORCE_DEVICE")
        if forced:
            return forced
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("gpu mode but torch.cuda.is_available() is False "
                               "(use --cpu-smoke on a machine without CUDA)")
        return "cuda"

    def sync(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def figure(self, key: str, value) -> None:
        self.figures[key] = value
        print(f"[{self.name}] {key} = {value}", flush=True)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        ok = bool(ok)
        self.checks.append({"name": name, "ok": ok, "detail": detail})
        print(f"[{self.name}] {'PASS' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""), flush=True)
        return ok

    def run(self, body) -> int:
        """Run ``body(self)``; an exception becomes a failed check with its traceback."""
        try:
            body(self)
        except Exception as exc:  # noqa: BLE001 - reported, not hidden
            traceback.print_exc()
            self.check("completed without an exception", False, f"{type(exc).__name__}: {exc}"[:500])
        self.figures["seconds"] = round(time.monotonic() - self.t0, 1)
        ok = bool(self.checks) and all(c["ok"] for c in self.checks)
        (self.out / "result.json").write_text(json.dumps(
            {"part": self.name, "mode": self.mode, "ok": ok, "figures": self.figures,
             "checks": self.checks}, indent=2, default=_jsonable))
        return 0 if ok else 1


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module (the folder is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"gpu_check_{name}", ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def device_info() -> dict:
    import torch

    info = {"torch": torch.__version__, "python": sys.version.split()[0], "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info.update(device=torch.cuda.get_device_name(), cuda_version=torch.version.cuda,
                    memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    return info
