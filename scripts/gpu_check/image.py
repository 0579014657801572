"""What the lent GPU machine's image holds, and the block lists that make this Python look like it.

The image (issue #17): PyTorch 2.11 (CUDA 13), transformers, accelerate, peft, safetensors,
matplotlib, tensorboard and pytest, with their dependencies, plus pip; no vLLM, Ray, DeepSpeed,
OpenRLHF or flash-attn. ``block_lists()`` returns every top-level module and distribution of
this Python that lies outside that set: with them blocked (``blocker/sitecustomize.py``), what
imports here imports there, and what fails there fails here.

    python scripts/gpu_check/image.py     # prints GPU_CHECK_BLOCK=... and GPU_CHECK_BLOCK_DISTS=...
"""
from __future__ import annotations

import importlib.metadata as md
import re

IMAGE_ROOTS = ("torch", "triton", "transformers", "accelerate", "peft", "safetensors", "matplotlib",
               "tensorboard", "pytest", "pip", "setuptools", "wheel")  # triton: CUDA torch's dependency
# Never blocked: this repository's top-level names (it is on PYTHONPATH there; some wheel in this
# environment ships a stray top-level ``tests``) and setuptools' hooks.
KEEP_MODULES = {"prpo_openrlhf", "tests", "benchmarks", "scripts", "examples", "_distutils_hack",
                "pkg_resources", "setuptools", "__editable__"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(dist: md.Distribution) -> list[str]:
    out = []
    for req in dist.requires or []:
        if "extra ==" in req.replace('"', "'").replace("extra==", "extra =="):
            continue  # optional extras are not part of the image
        out.append(norm(re.split(r"[\s;<>=!~\[(]", req.strip(), maxsplit=1)[0]))
    return out


def image_closure(dists: dict[str, md.Distribution]) -> set[str]:
    todo, seen = [norm(r) for r in IMAGE_ROOTS], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in dists:
            todo += _requirements(dists[name])
    return seen


def top_level_modules(dist: md.Distribution) -> set[str]:
    text = dist.read_text("top_level.txt")
    if text:
        return {line.strip() for line in text.splitlines() if line.strip()}
    mods = set()
    for f in dist.files or []:
        parts = f.parts
        if not parts or parts[0].endswith((".dist-info", ".egg-info", ".data")) or parts[0] in ("..", "bin"):
            continue
        head = parts[0]
        if len(parts) == 1:
            if head.endswith(".py"):
                mods.add(head[:-3])
            elif head.endswith(".so"):
                mods.add(head.split(".")[0])
        elif "." not in head:
            mods.add(head)
    return mods


def block_lists() -> tuple[list[str], list[str]]:
    dists = {}
    for d in md.distributions():
        name = d.metadata["Name"] if d.metadata else None
        if name:
            dists.setdefault(norm(name), d)
    keep = image_closure(dists)
    kept_modules = set().union(*(top_level_modules(dists[n]) for n in keep if n in dists))
    blocked_dists, blocked_modules = [], set()
    for name, dist in sorted(dists.items()):
        if name in keep or name == "prpo-openrlhf":
            continue
        blocked_dists.append(name)
        blocked_modules |= top_level_modules(dist)
    blocked_modules -= kept_modules | KEEP_MODULES
    return sorted(m for m in blocked_modules if m.isidentifier()), blocked_dists


if __name__ == "__main__":
    mods, dists = block_lists()
    print("GPU_CHECK_BLOCK=" + ",".join(mods))
    print("GPU_CHECK_BLOCK_DISTS=" + ",".join(dists))
