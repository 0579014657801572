"""Install the carried wheels into a folder, offline: ``pip install --no-index --no-deps --target``.

    python scripts/gpu_check/install_wheels.py WHEELS_DIR TARGET

One requirement per distribution found in WHEELS_DIR, resolved by pip against that folder only
(pip's own config is ignored, so no index or constraint of this machine applies): where a
distribution has one wheel per CPython (msgpack), pip picks the one for this Python. Without pip,
the wheels are unpacked directly (a wheel is a zip; every carried one is purelib or platlib).
Adds the flash_attn_2_cuda stand-in (scripts/flash_attn_2_cuda.py) when flash_attn was carried:
flash-attn's Python part imports that CUDA extension at import time, as in the CPU environment.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import platform
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def wheels(folder: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for w in sorted(folder.glob("*.whl")):
        out.setdefault(w.name.split("-")[0].lower(), []).append(w)
    return out


def compatible(w: Path) -> bool:
    py, abi, plat = w.name[:-4].split("-")[-3:]
    if plat == "any":
        return True
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    return tag in py.split(".") and "linux" in plat and platform.machine() in plat


def unpack(w: Path, target: Path) -> None:
    with zipfile.ZipFile(w) as z:
        z.extractall(target)
    for data in target.glob("*.data"):
        for sub in ("purelib", "platlib"):
            if (data / sub).is_dir():
                shutil.copytree(data / sub, target, dirs_exist_ok=True)
        shutil.rmtree(data)


def main() -> int:
    src, target = Path(sys.argv[1]), Path(sys.argv[2])
    target.mkdir(parents=True, exist_ok=True)
    found = wheels(src)
    if not found:
        print(f"[gpu-check] no wheels in {src}", file=sys.stderr)
        return 1
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--find-links", str(src), "--target", str(target), *found]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True) if not os.environ.get(
        "GPU_CHECK_NO_PIP") else subprocess.CompletedProcess(cmd, 1, "", "GPU_CHECK_NO_PIP set")
    how = "pip"
    if res.returncode != 0:
        print(f"[gpu-check] pip could not install the wheels ({res.stderr.strip()[-500:]}); unpacking them",
              file=sys.stderr)
        how = "unpacked"
        for name, ws in found.items():
            ok = [w for w in ws if compatible(w)]
            if not ok:
                print(f"[gpu-check] no wheel of {name} fits this Python: {[w.name for w in ws]}", file=sys.stderr)
                continue
            unpack(ok[0], target)
    for stray in ("tests", "hopper"):  # flash-attn's wheel ships these top-level folders
        shutil.rmtree(target / stray, ignore_errors=True)
    if (target / "flash_attn").is_dir():
        shutil.copy(ROOT / "scripts" / "flash_attn_2_cuda.py", target / "flash_attn_2_cuda.py")
    print(f"[gpu-check] carried wheels {how} into {target}: {', '.join(found)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
