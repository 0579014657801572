"""Runs the parts of scripts/gpu_check.sh, each in its own process with its own time cap, and
writes ``report.json`` and ``summary.txt`` into the output folder. Exit 0 only if all passed.

    python scripts/gpu_check/driver.py --mode gpu|smoke --out DIR [--parts 1,2,3,4,5]

Called by scripts/gpu_check.sh, which has set up PYTHONPATH (repository, carried wheels,
import blocker) first. A part that fails, crashes or runs out of time does not stop the others.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# name, title, time cap in seconds (gpu, smoke). The gpu caps add up to 510 s, so the whole
# check ends inside the device tool's 600 s per command even if every part hangs.
PARTS = {
    "1": ("tests", "GPU-marked tests that need no vLLM/Ray (pytest -m gpu)", 60, 45),
    "2": ("policy", "the shipped policy's PRPO step on the device vs CPU (HF generate, 20 updates)", 210, 120),
    "3": ("prm", "PRM scorer bf16 vs fp32 + 7B-shaped bf16 throughput", 120, 45),
    "4": ("advantages", "segmentation + PRPO advantages (1024 x 2048 batch)", 60, 30),
    "5": ("entropy", "actor-side logits_entropy, bf16 vs fp32 (151,936-token vocabulary)", 60, 30),
}


def run_capped(cmd: list[str], log: Path, cap: float, env=None) -> tuple[int | None, float]:
    """(exit code or None on timeout, seconds); the whole process group is killed at the cap."""
    t0 = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=cap)
        except subprocess.TimeoutExpired:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue
            rc = None
    return rc, time.monotonic() - t0


def gpu_test_files() -> list[str]:
    """Test modules that carry the gpu mark (collecting the whole tree would import vLLM/Ray)."""
    out = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        if re.search(r"pytest\.mark\.gpu\b", path.read_text(errors="replace")):
            out.append(str(path.relative_to(ROOT)))
    return out


def part_tests(mode: str, out: Path, cap: float) -> dict:
    files = gpu_test_files()
    junit = out / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
           f"--junitxml={junit}", *files]
    rc, seconds = run_capped(cmd, out / "log.txt", cap)
    counts = {"tests": 0, "passed": 0, "skipped": 0, "failed": 0, "errors": 0}
    reasons = set()
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            counts["tests"] += 1
            kinds = {child.tag for child in case}
            if "failure" in kinds:
                counts["failed"] += 1
            elif "error" in kinds:
                counts["errors"] += 1
            elif "skipped" in kinds:
                counts["skipped"] += 1
                reasons |= {c.get("message", "") for c in case if c.tag == "skipped"}
            else:
                counts["passed"] += 1
    checks = [{"name": "pytest exited 0", "ok": rc == 0, "detail": f"exit {rc}"},
              {"name": "no failures or errors", "ok": counts["failed"] + counts["errors"] == 0 and junit.exists(),
               "detail": f"{counts}"}]
    figures = {**counts, "files": files, "skip_reasons": sorted(reasons), "seconds": round(seconds, 1)}
    return {"rc": rc, "seconds": seconds, "figures": figures, "checks": checks}


def part_script(name: str, mode: str, out: Path, cap: float) -> dict:
    cmd = [sys.executable, str(HERE / f"part_{name}.py"), "--mode", mode, "--out", str(out)]
    rc, seconds = run_capped(cmd, out / "log.txt", cap)
    result = out / "result.json"
    got = json.loads(result.read_text()) if result.exists() else {"figures": {}, "checks": []}
    return {"rc": rc, "seconds": seconds, "figures": got["figures"], "checks": got["checks"]}


def tail(path: Path, n: int = 15) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def environment() -> dict:
    code = ("import json, sys, torch; d = {'python': sys.version.split()[0], 'torch': torch.__version__, "
            "'cuda_available': torch.cuda.is_available()}\n"
            "if torch.cuda.is_available(): d.update(device=torch.cuda.get_device_name(), "
            "cuda=torch.version.cuda, memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))\n"
            "print(json.dumps(d))")
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        env = json.loads(res.stdout.strip().splitlines()[-1])
    except Exception as exc:  # noqa: BLE001
        env = {"error": f"{type(exc).__name__}: {exc}"}
    env["host"] = platform.node()
    env["cpus"] = os.cpu_count()
    for key in ("GPU_CHECK_WHEELS", "GPU_CHECK_BLOCKED", "GPU_CHECK_FORCE_DEVICE"):
        if os.environ.get(key):
            env[key.lower()] = os.environ[key]
    return env


def key_figures(name: str, fig: dict) -> str:
    pick = {
        "tests": ["passed", "skipped", "failed", "errors", "skip_reasons"],
        "policy": ["device_heldout_greedy", "cpu_heldout_greedy", "experience_accuracy",
                   "same_inputs_first_loss_device_fp32", "same_inputs_first_loss_device_bf16",
                   "same_inputs_first_loss_cpu_fp32", "device_update_seconds_median", "device_max_weight_change"],
        "prm": ["tiny_prm_max_abs_diff_bf16_device_vs_fp32_cpu", "prm_tokens", "prm_tokens_per_s",
                "prm_tflops", "prm_share_of_790_tflops_peak", "prm_share_of_bench_prm_table_peak"],
        "advantages": ["batch", "ms_per_batch_device_median", "segment_ids_equal", "advantages_bitwise_equal",
                       "advantages_max_abs_diff"],
        "entropy": ["shape", "max_abs_diff_bf16_vs_fp32", "max_diff_over_bound", "ms_per_call_bf16_median"],
    }[name]
    out = []
    for k in pick:
        if k in fig:
            v = fig[k]
            out.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("gpu", "smoke"), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--parts", default="1,2,3,4,5")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    report = {"mode": args.mode, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "environment": environment(),
              "parts": {}}
    for key in [k.strip() for k in args.parts.split(",") if k.strip()]:
        name, title, cap_gpu, cap_smoke = PARTS[key]
        cap = cap_gpu if args.mode == "gpu" else cap_smoke
        pdir = out / f"part{key}_{name}"
        pdir.mkdir(parents=True, exist_ok=True)
        print(f"[gpu-check] part {key} ({name}): {title}; cap {cap} s", flush=True)
        res = part_tests(args.mode, pdir, cap) if name == "tests" else part_script(name, args.mode, pdir, cap)
        if res["rc"] is None:
            status = "timeout"
        elif res["rc"] == 0 and res["checks"] and all(c["ok"] for c in res["checks"]):
            status = "passed"
        else:
            status = "failed"
        entry = {"name": name, "title": title, "status": status, "exit_code": res["rc"],
                 "seconds": round(res["seconds"], 1), "cap_seconds": cap, "figures": res["figures"],
                 "checks": res["checks"], "log": str((pdir / "log.txt").relative_to(out))}
        if status != "passed":
            entry["log_tail"] = tail(pdir / "log.txt")
        report["parts"][key] = entry
        print(f"[gpu-check] part {key} ({name}): {status} in {entry['seconds']} s", flush=True)
        (out / "report.json").write_text(json.dumps(report, indent=2))  # partial report survives a kill
    report["seconds"] = round(time.monotonic() - t0, 1)
    report["passed"] = bool(report["parts"]) and all(p["status"] == "passed" for p in report["parts"].values())
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "summary.txt").write_text(summary(report))
    print((out / "summary.txt").read_text())
    return 0 if report["passed"] else 1


def summary(report: dict) -> str:
    env = report["environment"]
    lines = [f"GPU check ({report['mode']} mode): {'PASSED' if report['passed'] else 'FAILED'} "
             f"in {report['seconds']} s, started {report['started']}",
             f"machine: {env.get('device', 'no CUDA device')}, torch {env.get('torch')}, CUDA {env.get('cuda', '-')}, "
             f"Python {env.get('python')}, {env.get('cpus')} CPUs"]
    if env.get("gpu_check_force_device"):
        lines.append(f"GPU_CHECK_FORCE_DEVICE={env['gpu_check_force_device']}: gpu sizes on another device, "
                     "for timing only; not a GPU check")
    if env.get("gpu_check_wheels"):
        lines.append(f"carried wheels: {env['gpu_check_wheels']}")
    lines.append("")
    for key, p in report["parts"].items():
        lines.append(f"{key}. {p['title']}: {p['status'].upper()} ({p['seconds']} s of {p['cap_seconds']} s)")
        figs = key_figures(p["name"], p["figures"])
        if figs:
            lines.append(f"   {figs}")
        for c in p["checks"]:
            if not c["ok"]:
                lines.append(f"   FAILED: {c['name']}" + (f" ({c['detail']})" if c.get("detail") else ""))
        for line in p.get("log_tail", [])[-5:]:
            lines.append(f"   | {line[:150]}")
    lines += ["", "Figures and checks in full: report.json; logs: part*/log.txt"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
