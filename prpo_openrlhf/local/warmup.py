"""The embedded default policy: a tiny byte-level Qwen2 warmed up by a short SFT on noisy solutions.

The SFT data are solutions of the synthetic task with an arithmetic slip per step with
probability ``p_err`` (``task.noisy_solution``), so the policy starts with both capacity errors
and learned slips: somewhere between 20% and 60% held-out accuracy, leaving RL room to show.
The result is cached under ``$PRPO_CACHE_DIR`` (default ``~/.cache/prpo_openrlhf``) in
``warmup/<hash of the config>/`` as a plain HF checkpoint (vLLM loads it too) plus
``warmup.json`` with the config, the starting accuracy and the time it took.

The default recipe's result is shipped in the package (``local/shipped/<key>/``, with its
recipe, code version, weights hash and measured accuracies in ``warmup.json``): ``make run``
loads it in place and trains nothing; ``prpo-local warmup --rebuild`` trains it again from the
recipe and reports whether the result matches.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from prpo_openrlhf.local.task import ArithmeticTask, TaskConfig, max_solution_bytes, noisy_solution

WARMUP_FORMAT = 3  # bump when the SFT recipe or its report changes in a way the config does not capture


@dataclass(frozen=True)
class WarmupConfig:
    """The default is the shipped policy's recipe."""
    task: TaskConfig = field(default_factory=lambda: TaskConfig(n_ops=(3, 4)))
    task_seed: int = 0
    hidden_size: int = 128
    num_layers: int = 4
    max_position_embeddings: int = 256
    steps: int = 4000
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 30
    p_err: float = 0.1
    seed: int = 0
    eval_problems: int = 128

    def key(self) -> str:
        blob = json.dumps({"format": WARMUP_FORMAT, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


SHIPPED_ROOT = Path(__file__).parent / "shipped"
WEIGHTS = "model.safetensors"


def cache_root() -> Path:
    return Path(os.environ.get("PRPO_CACHE_DIR") or Path.home() / ".cache" / "prpo_openrlhf")


def _cached_path(cfg: WarmupConfig, root: Path | None) -> Path:
    """Where ``cfg``'s build lives in the cache (``root`` or ``cache_root()``)."""
    return (root or cache_root()) / "warmup" / cfg.key()


def build_into_cache(target: Path, report_name: str, build) -> dict:
    """Run ``build(tmp)`` (it writes a checkpoint into the folder ``tmp`` and returns its report)
    in a temporary folder beside ``target``, write the report there as ``report_name`` and move
    the folder to ``target``; returns the report as stored. The move is atomic: a concurrent
    builder of the same recipe that finished first wins, and no half-built folder is ever seen."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        (tmp / report_name).write_text(json.dumps(build(tmp), indent=2))
        try:
            tmp.rename(target)
        except OSError:
            if not (target / report_name).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return json.loads((target / report_name).read_text())


def copy_package_data(src: Path, dest: Path, skip: tuple[str, ...] = ()) -> None:
    """Replace ``dest`` with the files of ``src`` (but ``skip``), readable by all: package data
    (a cache build folder is private to its user)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and f.name not in skip:
            shutil.copyfile(f, dest / f.name)
            (dest / f.name).chmod(0o644)


def _sft_batch(tok, task: ArithmeticTask, cfg: WarmupConfig, step: int, rng: random.Random):
    """Chat-formatted (input_ids, attention_mask, labels); loss on the response + EOS only."""
    from prpo_openrlhf.local.sampling import chat_prompt_ids

    problems = task.train_batch(cfg.batch_size, f"sft-{step}")
    prompts = chat_prompt_ids(tok, [p.text for p in problems], None)
    seqs, labels = [], []
    for p, prompt in zip(problems, prompts):
        resp = tok(noisy_solution(p, rng, cfg.p_err), add_special_tokens=False)["input_ids"]
        resp.append(tok.eos_token_id)
        seqs.append(prompt + resp)
        labels.append([-100] * len(prompt) + resp)
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tok.pad_token_id, dtype=torch.long)
    lab = torch.full((len(seqs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, lb) in enumerate(zip(seqs, labels)):
        ids[i, : len(s)], lab[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), torch.tensor(lb), 1
    return ids, mask, lab


def sft(model, tok, task: ArithmeticTask, cfg: WarmupConfig, progress: bool = True) -> list[float]:
    """Supervised warm-up; linear warm-up then cosine decay of the learning rate. Returns losses."""
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    rng = random.Random(f"sft-noise-{cfg.seed}")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    model.train()
    losses = []
    bar = tqdm(range(cfg.steps), desc="warm-up SFT", disable=not progress, dynamic_ncols=True)
    for step in bar:
        ids, mask, lab = _sft_batch(tok, task, cfg, step, rng)
        scale = min(1.0, (step + 1) / cfg.warmup_steps) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for g in opt.param_groups:
            g["lr"] = cfg.lr * scale
        loss = model(input_ids=ids, attention_mask=mask, labels=lab).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return losses


def heldout_accuracy(sampler, tok, task: ArithmeticTask, n_problems: int, *, greedy: bool,
                     temperature: float = 1.0, max_new_tokens: int = 64, seed: int = 0,
                     system_prompt: str | None = None, n_samples: int = 1) -> dict:
    """Accuracy (math-verify grader) and mean response length on the first held-out problems.

    Greedy: pass@1. Sampled: mean@n_samples at ``temperature`` (the AMC/AIME protocol).
    """
    from prpo_openrlhf.algorithms.rewards import grade_batch
    from prpo_openrlhf.local.sampling import chat_prompt_ids

    problems = task.heldout[:n_problems]
    prompts = chat_prompt_ids(tok, [p.text for p in problems], system_prompt)
    n = 1 if greedy else n_samples
    samples = sampler.generate(prompts, n, temperature, max_new_tokens, seed, greedy=greedy)
    ok = grade_batch([s.text for s in samples], [str(p.answer) for p in problems for _ in range(n)])
    return {"accuracy": sum(ok) / len(ok), "response_length": sum(len(s.response_ids) for s in samples) / len(samples)}


@contextlib.contextmanager
def _one_thread():
    # The tiny policy's matrices are too small to split (two threads run ~10x slower as soon as another process holds one core).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _build(cfg: WarmupConfig, out: Path, progress: bool) -> dict:
    t0 = time.monotonic()
    with _one_thread():
        return _sft_and_report(cfg, out, progress, t0)


def _sft_and_report(cfg: WarmupConfig, out: Path, progress: bool, t0: float) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prpo_openrlhf.local.sampling import HFSampler
    from prpo_openrlhf.testing.tiny_models import write_tiny_lm

    write_tiny_lm(out, seed=cfg.seed, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                  max_position_embeddings=cfg.max_position_embeddings)
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    task = ArithmeticTask(cfg.task, seed=cfg.task_seed)
    losses = sft(model, tok, task, cfg, progress)
    model.save_pretrained(out)
    sft_seconds = time.monotonic() - t0
    greedy, sampled = _accuracies(HFSampler(model, tok), tok, task, cfg.eval_problems)
    return {"config": dataclasses.asdict(cfg), "key": cfg.key(), "code_version": _code_version(),
            "warmup_format": WARMUP_FORMAT, "final_loss": sum(losses[-20:]) / 20,
            "sft_seconds": round(sft_seconds, 1), "heldout_greedy": greedy, "heldout_sampled": sampled}


def _accuracies(sampler, tok, task: ArithmeticTask, n_problems: int) -> tuple[dict, dict]:
    """Held-out greedy pass@1 and sampled mean@4, as every warm-up report measures them."""
    # 64 tokens fit up to 6 operations; longer tasks get their longest solution plus EOS.
    kw = dict(max_new_tokens=max(64, max_solution_bytes(task.cfg) + 1))
    return (heldout_accuracy(sampler, tok, task, n_problems, greedy=True, **kw),
            heldout_accuracy(sampler, tok, task, n_problems, greedy=False, n_samples=4, **kw))


def weights_sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(Path(path) / WEIGHTS, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def shipped_policy(cfg: WarmupConfig, shipped_root: Path | None = None) -> tuple[str, dict] | None:
    """The policy shipped in the package for ``cfg``'s recipe (path used in place, read only) and
    its info, or None when none was shipped for this recipe (any other WarmupConfig)."""
    target = (shipped_root or SHIPPED_ROOT) / cfg.key()
    info_file = target / "warmup.json"
    if not info_file.exists():
        return None
    return str(target), json.loads(info_file.read_text())


def warmed_up_policy(cfg: WarmupConfig = WarmupConfig(), *, root: Path | None = None,
                     progress: bool = True, log=print, use_shipped: bool = True) -> tuple[str, dict]:
    """Path of the warmed-up checkpoint for ``cfg`` and its info: the shipped one when the recipe
    is the shipped one's, else built and cached on first use."""
    shipped = shipped_policy(cfg) if use_shipped else None
    if shipped is not None:
        path, info = shipped
        log(f"warm-up policy: shipped with the package, {path} (held-out accuracy greedy "
            f"{info['heldout_greedy']['accuracy']:.1%}, sampled {info['heldout_sampled']['accuracy']:.1%}; "
            f"rebuild with `prpo-local warmup --rebuild`)")
        return path, info
    target = _cached_path(cfg, root)
    info_file = target / "warmup.json"
    if info_file.exists():
        info = json.loads(info_file.read_text())
        log(f"warm-up policy: cached at {target} (held-out accuracy greedy "
            f"{info['heldout_greedy']['accuracy']:.1%}, sampled {info['heldout_sampled']['accuracy']:.1%})")
        return str(target), info
    log(f"warm-up policy: building {target} ({cfg.steps} SFT steps, noise p_err={cfg.p_err}, "
        f"{'/'.join(map(str, cfg.task.n_ops))} operations)")
    info = build_into_cache(target, "warmup.json", lambda tmp: _build(cfg, tmp, progress))
    log(f"warm-up policy: done in {info['sft_seconds']:.0f} s; held-out accuracy greedy "
        f"{info['heldout_greedy']['accuracy']:.1%}, sampled {info['heldout_sampled']['accuracy']:.1%}")
    return str(target), info


def _code_version() -> str:
    """``git rev-parse HEAD`` of the checkout (with ``+dirty`` when it has changes), else unknown."""
    import subprocess

    here = Path(__file__).parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=here, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def measure(path: Path | str, cfg: WarmupConfig, n_problems: int) -> dict:
    """Held-out greedy pass@1 and sampled mean@4 of a warm-up checkpoint, as ``_build`` measures them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prpo_openrlhf.local.sampling import HFSampler

    with _one_thread():
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        greedy, sampled = _accuracies(HFSampler(model, tok), tok, ArithmeticTask(cfg.task, seed=cfg.task_seed),
                                      n_problems)
    return {"problems": n_problems, "greedy": greedy, "sampled": sampled}


def ship(src: Path | str, cfg: WarmupConfig, shipped_root: Path | None = None, *, full_eval: int | None = None,
         log=print) -> Path:
    """Copy the warm-up checkpoint ``src`` (built for ``cfg``) into the package's shipped folder with
    its recipe, task seed, code version, weights hash and accuracies on ``full_eval`` held-out problems."""
    from prpo_openrlhf.local.task import HELDOUT_SIZE

    src = Path(src)
    info = json.loads((src / "warmup.json").read_text())
    if info.get("key") != cfg.key():
        raise ValueError(f"{src} was built for recipe {info.get('key')}, not {cfg.key()}")
    dest = (shipped_root or SHIPPED_ROOT) / cfg.key()
    copy_package_data(src, dest, skip=("warmup.json",))
    full = measure(dest, cfg, full_eval or HELDOUT_SIZE)
    info.update({"recipe": "prpo-local warmup with the WarmupConfig in 'config' (docs/local.md)",
                 "task_seed": cfg.task_seed, "warmup_format": WARMUP_FORMAT,
                 "code_version": info.get("code_version") or _code_version(),  # at build time
                 "weights_sha256": weights_sha256(dest), "heldout_full": full})
    (dest / "warmup.json").write_text(json.dumps(info, indent=2))
    log(f"shipped {dest}: sha256 {info['weights_sha256'][:16]}..., held-out ({full['problems']} problems) greedy "
        f"{full['greedy']['accuracy']:.1%}, sampled {full['sampled']['accuracy']:.1%}")
    return dest


def rebuild(cfg: WarmupConfig, *, root: Path | None = None, shipped_root: Path | None = None,
            progress: bool = True, log=print) -> dict:
    """Train ``cfg``'s recipe from scratch (into the cache, replacing a cached build) and compare the
    result with the shipped policy of the same recipe: bit for bit (weights hash), else by accuracy."""
    target = _cached_path(cfg, root)
    if target.exists():
        shutil.rmtree(target)
    path, info = warmed_up_policy(cfg, root=root, progress=progress, log=log, use_shipped=False)
    sha = weights_sha256(path)
    report = {"path": path, "key": cfg.key(), "weights_sha256": sha, "shipped": None, "bitwise": None,
              "greedy_diff": None, "sampled_diff": None}
    shipped = shipped_policy(cfg, shipped_root)
    if shipped is None:
        log(f"rebuilt {path} (sha256 {sha[:16]}...); no policy is shipped for this recipe to compare with")
        return report
    spath, sinfo = shipped
    report.update(shipped=spath, bitwise=sha == sinfo["weights_sha256"],
                  greedy_diff=info["heldout_greedy"]["accuracy"] - sinfo["heldout_greedy"]["accuracy"],
                  sampled_diff=info["heldout_sampled"]["accuracy"] - sinfo["heldout_sampled"]["accuracy"])
    if report["bitwise"]:
        log(f"rebuilt {path}: matches the shipped policy bit for bit (sha256 {sha[:16]}...)")
    else:
        log(f"rebuilt {path}: differs from the shipped policy {spath} (sha256 {sha[:16]}... vs "
            f"{sinfo['weights_sha256'][:16]}...); held-out ({cfg.eval_problems} problems) greedy "
            f"{info['heldout_greedy']['accuracy']:.1%} vs {sinfo['heldout_greedy']['accuracy']:.1%} "
            f"({report['greedy_diff']:+.1%}), sampled {info['heldout_sampled']['accuracy']:.1%} vs "
            f"{sinfo['heldout_sampled']['accuracy']:.1%} ({report['sampled_diff']:+.1%})")
    return report
