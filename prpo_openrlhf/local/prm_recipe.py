"""A learned PRM for the embedded arithmetic task, in Qwen2.5-Math-PRM's checkpoint format.

The recipe (``PRMRecipeConfig``) trains a byte-level Qwen2 with the Qwen2ForProcessRewardModel
head (``model.*`` backbone, ``score.0`` Linear(h, h) -> ReLU -> ``score.2`` Linear(h, 2)), its
backbone grown from the shipped policy's (``init="policy"``) or random, on step labels of the
exact verifier (``local/prm_data.py``): responses of the
shipped policy and noisy solutions of training problems, cross-entropy on the two logits at every
``<extra_0>``. One torch thread and fixed seeds make the build deterministic, as the policy's
warm-up is. The result is a plain checkpoint directory (config, ``model.safetensors``, the
policy's tokenizer and chat template) that ``PRMScorer(path, "hf")`` and ``PRMScorer(path,
"vllm")`` load unchanged, plus ``prm.json`` with the recipe, key, code version, weights hash,
training time and the step-level ROC-AUC against the exact verifier on held-out problems.

Builds are cached under ``$PRPO_CACHE_DIR/prm/<key>/``; the default recipe's PRM is shipped in
the package (``local/shipped/prm-<key>/``): ``learned_prm()`` returns it without training, and
``prpo-local prm --rebuild`` trains it again and reports whether the weights match bit for bit.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from prpo_openrlhf.local.warmup import (SHIPPED_ROOT, WarmupConfig, _code_version, _one_thread, build_into_cache,
                                        cache_root, copy_package_data, warmed_up_policy, weights_sha256)

PRM_FORMAT = 1  # bump when the recipe or its report changes in a way the config does not capture
ARCHITECTURE = "Qwen2ForProcessRewardModel"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


@dataclass(frozen=True)
class PRMRecipeConfig:
    """The default is the shipped PRM's recipe."""
    policy: WarmupConfig = field(default_factory=WarmupConfig)  # its task, and the policy that samples
    hidden_size: int = 256
    num_layers: int = 4
    intermediate_size: int = 512
    head_dim: int = 64                # vLLM's CPU attention rejects 16
    max_position_embeddings: int = 512
    steps: int = 400
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 30
    weight_decay: float = 0.0
    policy_samples: int = 2           # per training problem, at `temperature`
    noisy_samples: int = 2            # per training problem, noisy_solution with p_err
    p_err: float = 0.3
    temperature: float = 1.0
    max_new_tokens: int = 48          # the policy's solutions take 25-45 tokens
    mid_cut_share: float = 0.5        # share of solutions also cut at random tokens inside lines
    max_mid_cuts: int = 5
    init: str = "policy"              # "policy": backbone grown from the policy's weights; "random"
    seed: int = 0
    eval_problems: int = 256
    eval_samples: int = 4
    eval_k: int = 5                   # --prpo.k / --prpo.min_gap defaults
    eval_min_gap: int = 10
    eval_split_seed: int = 42         # --prpo.split_seed default

    def key(self) -> str:
        blob = json.dumps({"format": PRM_FORMAT, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _cached_path(cfg: PRMRecipeConfig, root: Path | None) -> Path:
    return (root or cache_root()) / "prm" / cfg.key()


def _policy_path(cfg: PRMRecipeConfig, progress: bool, log) -> str:
    return warmed_up_policy(cfg.policy, progress=progress, log=log)[0]


def prm_config(cfg: PRMRecipeConfig, tok):
    from transformers import Qwen2Config

    if cfg.hidden_size % cfg.head_dim:
        raise ValueError(f"hidden_size {cfg.hidden_size} is not a multiple of head_dim {cfg.head_dim}")
    heads = cfg.hidden_size // cfg.head_dim
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=cfg.max_position_embeddings, tie_word_embeddings=False,
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, architectures=[ARCHITECTURE], torch_dtype="float32")
    if cfg.init == "policy":  # the RMS over the zero-padded residual is sqrt(h_policy / h) times the policy's
        config.rms_norm_eps = 1e-6 * cfg.policy.hidden_size / cfg.hidden_size
    config.num_labels = 2
    return config


@torch.no_grad()
def grow_from_policy(prm, policy) -> None:
    """Start the PRM's backbone from the policy's, as real PRMs start from an instruct model of
    their family: the policy's weights fill the leading block of every matrix of the wider PRM;
    the embedding's new columns and every ``o_proj`` / ``down_proj`` entry outside the block start
    at zero (the new heads and units write nothing yet); norm weights are scaled by
    sqrt(h_policy / h) for the RMS over the zero-padded residual (``rms_norm_eps`` alike,
    ``prm_config``). The leading dimensions of the grown backbone's hidden states are then the
    policy's (test_prm_recipe)."""
    old = {k: v for k, v in policy.state_dict().items() if k.startswith("model.")}
    h0, h = policy.config.hidden_size, prm.config.hidden_size
    if h0 > h or policy.config.num_hidden_layers > prm.config.num_hidden_layers:
        raise ValueError(f"cannot grow a policy of width {h0} and depth {policy.config.num_hidden_layers} "
                         f"into a PRM of width {h} and depth {prm.config.num_hidden_layers}")
    for name, new in prm.model.state_dict(keep_vars=True).items():
        if name.endswith(("o_proj.weight", "down_proj.weight")) or name == "embed_tokens.weight":
            new.zero_()
        src = old.get(f"model.{name}")
        if src is None:
            continue
        if name.endswith("norm.weight"):
            src = src * math.sqrt(h0 / h)
        new[tuple(slice(0, n) for n in src.shape)] = src


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- training -------------------------------------------------------------------------------

def _common_prefix(examples) -> int:
    """Length of the ids every example shares, up to the first response token."""
    seqs = [e.ids for e in examples]
    n = min(e.start for e in examples)
    for i in range(n):
        t = seqs[0][i]
        if any(s[i] != t for s in seqs):
            return i
    return n


def batch_loss(model, examples, pad_id: int, tag_id: int) -> torch.Tensor:
    """Mean cross-entropy of the 2-logit head at every step tag of ``examples``.

    The tokens every input shares (chat header, system prompt, ``Compute ``) go through the
    backbone once and their keys/values are repeated over the batch: the same function as a full
    forward per row (causal attention, right padding), at about half the cost.
    """
    p = _common_prefix(examples)
    width = max(len(e.ids) for e in examples) - p
    rest = torch.full((len(examples), width), pad_id, dtype=torch.long)
    real = torch.zeros_like(rest, dtype=torch.bool)
    for i, e in enumerate(examples):
        rest[i, : len(e.ids) - p] = torch.tensor(e.ids[p:])
        real[i, : len(e.ids) - p] = True
    cache = None
    if p:
        cache = model.model(input_ids=torch.tensor([examples[0].ids[:p]]), use_cache=True).past_key_values
        cache.batch_repeat_interleave(len(examples))
    hidden = model.model(input_ids=rest, past_key_values=cache, use_cache=cache is not None).last_hidden_state
    tags = (rest == tag_id) & real
    labels = torch.tensor([v for e in examples for v in e.labels])
    if int(tags.sum()) != len(labels):
        raise ValueError(f"{int(tags.sum())} step tags for {len(labels)} labels")
    return torch.nn.functional.cross_entropy(model.head(hidden[tags]), labels)


def train(model, examples, cfg: PRMRecipeConfig, pad_id: int, tag_id: int, progress: bool = True) -> list[float]:
    """AdamW with linear warm-up then cosine decay, batches in the data's (shuffled) order.
    Returns the losses."""
    from tqdm import tqdm

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    losses = []
    bar = tqdm(range(cfg.steps), desc="PRM training", disable=not progress, dynamic_ncols=True)
    for step in bar:
        batch = examples[step * cfg.batch_size: (step + 1) * cfg.batch_size]
        scale = min(1.0, (step + 1) / cfg.warmup_steps) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for g in opt.param_groups:
            g["lr"] = cfg.lr * scale
        loss = batch_loss(model, batch, pad_id, tag_id)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
    model.eval()
    return losses


def save_prm(model, tok_src: Path | str, out: Path) -> None:
    """``model.safetensors`` (``model.*`` + ``score.*``), config.json and the policy's tokenizer."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config["architectures"] = [ARCHITECTURE]
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    for name in TOKENIZER_FILES:
        shutil.copyfile(Path(tok_src) / name, out / name)


def _build(cfg: PRMRecipeConfig, out: Path, progress: bool, log) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prpo_openrlhf.local.prm_data import evaluate, training_examples
    from prpo_openrlhf.prm.inputs import PRMInputBuilder
    from prpo_openrlhf.prm.model import Qwen2ProcessRewardModel

    policy_path = _policy_path(cfg, progress, log)
    with _one_thread():
        t0 = time.monotonic()
        tok = AutoTokenizer.from_pretrained(policy_path)
        policy = AutoModelForCausalLM.from_pretrained(policy_path, dtype=torch.float32).eval()
        builder = PRMInputBuilder(tok, max_length=cfg.max_position_embeddings)
        examples = training_examples(cfg, policy, tok, builder, progress)
        data_seconds = time.monotonic() - t0
        torch.manual_seed(cfg.seed)
        model = Qwen2ProcessRewardModel(prm_config(cfg, tok)).float()
        if cfg.init == "policy":
            grow_from_policy(model, policy)
        elif cfg.init != "random":
            raise ValueError(f"PRM init must be 'policy' or 'random', got {cfg.init!r}")
        losses = train(model, examples, cfg, tok.pad_token_id, builder.tag_id, progress)
        train_seconds = time.monotonic() - t0
        save_prm(model, policy_path, out)
        labels = [v for e in examples[: cfg.steps * cfg.batch_size] for v in e.labels]
        log(f"PRM: {n_params(model):,} parameters, {len(examples)} solutions, {len(labels)} labelled steps "
            f"({sum(labels) / len(labels):.1%} positive); data {data_seconds:.0f} s, data + training "
            f"{train_seconds:.0f} s; held-out evaluation:")
        evaluation = evaluate(str(out), cfg, policy_path, log=log)
    return {"config": dataclasses.asdict(cfg), "key": cfg.key(), "prm_format": PRM_FORMAT,
            "code_version": _code_version(), "policy": policy_path, "policy_key": cfg.policy.key(),
            "parameters": n_params(model), "training_solutions": len(examples), "training_steps_labelled":
            len(labels), "training_positive_rate": round(sum(labels) / len(labels), 4),
            "final_loss": sum(losses[-20:]) / len(losses[-20:]),
            "loss_curve": [round(sum(losses[i: i + 50]) / len(losses[i: i + 50]), 4) for i in range(0, len(losses), 50)], "data_seconds": round(data_seconds, 1),
            "train_seconds": round(train_seconds, 1), "weights_sha256": weights_sha256(out),
            "heldout": evaluation}


# ---- cache, shipping, rebuild ---------------------------------------------------------------

def shipped_prm(cfg: PRMRecipeConfig = PRMRecipeConfig(), shipped_root: Path | None = None
                ) -> tuple[str, dict] | None:
    """The PRM shipped in the package for ``cfg``'s recipe (path, read only) and its report, or None."""
    target = (shipped_root or SHIPPED_ROOT) / f"prm-{cfg.key()}"
    info_file = target / "prm.json"
    if not info_file.exists():
        return None
    return str(target), json.loads(info_file.read_text())


def _auc_line(info: dict) -> str:
    ev = info["heldout"]
    parts = [f"{name.split('_')[0]} {ev[name]['auc']}" for name in ev if isinstance(ev[name], dict)]
    return f"step-level AUC on {ev['responses']} held-out responses: " + ", ".join(parts)


def learned_prm(cfg: PRMRecipeConfig = PRMRecipeConfig(), *, root: Path | None = None, progress: bool = True,
                log=print, use_shipped: bool = True) -> tuple[str, dict]:
    """Path of the learned PRM for ``cfg`` and its report: shipped if the recipe is the shipped
    one's, else cached, else built now (and cached)."""
    shipped = shipped_prm(cfg) if use_shipped else None
    if shipped is not None:
        log(f"learned PRM: shipped with the package, {shipped[0]} ({_auc_line(shipped[1])})")
        return shipped
    target = _cached_path(cfg, root)
    info_file = target / "prm.json"
    if info_file.exists():
        info = json.loads(info_file.read_text())
        log(f"learned PRM: cached at {target} ({_auc_line(info)})")
        return str(target), info
    log(f"learned PRM: building {target} ({cfg.steps} steps of {cfg.batch_size} solutions)")
    info = build_into_cache(target, "prm.json", lambda tmp: _build(cfg, tmp, progress, log))
    log(f"learned PRM: done in {info['train_seconds']:.0f} s; {_auc_line(info)}")
    return str(target), info


def ship_prm(src: Path | str, cfg: PRMRecipeConfig = PRMRecipeConfig(), shipped_root: Path | None = None,
             log=print) -> Path:
    """Copy the PRM built for ``cfg`` at ``src`` into the package's shipped folder with its report."""
    src = Path(src)
    info = json.loads((src / "prm.json").read_text())
    if info.get("key") != cfg.key():
        raise ValueError(f"{src} was built for recipe {info.get('key')}, not {cfg.key()}")
    if info["weights_sha256"] != weights_sha256(src):
        raise ValueError(f"{src}/model.safetensors is not the one its prm.json describes")
    dest = (shipped_root or SHIPPED_ROOT) / f"prm-{cfg.key()}"
    copy_package_data(src, dest, skip=("prm.json",))  # rewritten below
    info["recipe"] = "prpo-local prm with the PRMRecipeConfig in 'config' (docs/local.md)"
    info.pop("policy", None)  # a path on the build machine; policy_key names the policy
    (dest / "prm.json").write_text(json.dumps(info, indent=2))
    log(f"shipped {dest}: sha256 {info['weights_sha256'][:16]}..., {_auc_line(info)}")
    return dest


def rebuild_prm(cfg: PRMRecipeConfig = PRMRecipeConfig(), *, root: Path | None = None,
                shipped_root: Path | None = None, progress: bool = True, log=print) -> dict:
    """Train ``cfg``'s recipe from scratch (replacing a cached build) and compare the weights with
    the shipped PRM of the same recipe: ``bitwise`` True / False, None when none is shipped."""
    target = _cached_path(cfg, root)
    if target.exists():
        shutil.rmtree(target)
    path, info = learned_prm(cfg, root=root, progress=progress, log=log, use_shipped=False)
    report = {"path": path, "key": cfg.key(), "weights_sha256": info["weights_sha256"], "shipped": None,
              "bitwise": None, "heldout": info["heldout"]}
    shipped = shipped_prm(cfg, shipped_root)
    if shipped is None:
        log(f"rebuilt {path} (sha256 {info['weights_sha256'][:16]}...); no PRM is shipped for this recipe")
        return report
    spath, sinfo = shipped
    report.update(shipped=spath, bitwise=info["weights_sha256"] == sinfo["weights_sha256"])
    if report["bitwise"]:
        log(f"rebuilt {path}: matches the shipped PRM bit for bit (sha256 {info['weights_sha256'][:16]}...)")
    else:
        log(f"rebuilt {path}: differs from the shipped PRM {spath} (sha256 {info['weights_sha256'][:16]}... vs "
            f"{sinfo['weights_sha256'][:16]}...); rebuilt {_auc_line(info)}; shipped {_auc_line(sinfo)}")
    return report
