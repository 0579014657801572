"""The learned PRM's recipe: exact step labels, a deterministic build in the Qwen2ForProcessRewardModel
layout that PRMScorer loads, and the shipped PRM. Builds here use a tiny recipe (seconds); the
shipped PRM is only loaded and measured."""
import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import pytest

from prpo_openrlhf.local import prm_recipe as R
from prpo_openrlhf.local.prm_data import line_cuts, roc_auc, segment_texts, step_labels
from prpo_openrlhf.local.verifier import ExactProcessVerifier

TINY = R.PRMRecipeConfig(hidden_size=64, num_layers=1, intermediate_size=128, init="random", steps=3,
                         batch_size=8, warmup_steps=2, eval_problems=6, eval_samples=2)
PROBLEM = "Compute ((7+5)*3)-4."


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from prpo_openrlhf.local.warmup import WarmupConfig, shipped_policy

    return AutoTokenizer.from_pretrained(shipped_policy(WarmupConfig())[0])


@pytest.fixture(scope="module")
def tiny_builds(tmp_path_factory):
    """The tiny recipe built twice from scratch, into two caches."""
    out = []
    for i in range(2):
        root = tmp_path_factory.mktemp(f"prm_cache{i}")
        out.append(R.learned_prm(TINY, root=root, progress=False, log=lambda *_: None, use_shipped=False))
    return out


def _line_labels(tok, solution: str) -> tuple[list[str], list[int]]:
    ids = tok.encode(solution, add_special_tokens=False) + [tok.eos_token_id]
    segs = segment_texts(tok, ids, line_cuts(ids, tok.encode("\n")[0], set(tok.all_special_ids)))
    return segs, step_labels(ExactProcessVerifier("strict"), PROBLEM, segs)


def test_labels_of_a_correct_solution_and_of_a_slip_in_step_2(tok):
    segs, labels = _line_labels(tok, "7+5=12\n12*3=36\n36-4=32\n\\boxed{32}")
    assert segs == ["7+5=12\n", "12*3=36\n", "36-4=32\n", "\\boxed{32}"] and labels == [1, 1, 1, 1]
    segs, labels = _line_labels(tok, "7+5=12\n12*3=35\n35-4=31\n\\boxed{31}")
    assert labels == [1, 0, 0, 0]  # the slip, and every step after it (carried on), is wrong
    segs, labels = _line_labels(tok, "7+5=12\n12*3=36\n36-4=32\n\\boxed{33}")
    assert labels == [1, 1, 1, 0]


def test_labels_at_cuts_inside_lines_judge_completed_lines_only(tok):
    verifier = ExactProcessVerifier("strict")
    assert step_labels(verifier, PROBLEM, ["7+5=1", "2\n12*3=3", "5\n35-4=31\n\\boxed{31}"]) == [1, 1, 0]
    assert step_labels(verifier, PROBLEM, ["7+5=13\n12", "*3=36\n36-4=32\n\\boxed{32}"]) == [0, 0]


def test_no_empty_step_and_no_eos_in_the_text(tok):
    ids = tok.encode("7+5=12\n12*3=36\n36-4=32\n\\boxed{32}\n", add_special_tokens=False) + [tok.eos_token_id]
    segs = segment_texts(tok, ids, line_cuts(ids, tok.encode("\n")[0], set(tok.all_special_ids)))
    assert segs[-1] == "\\boxed{32}\n" and len(segs) == 4 and not any(tok.eos_token in s for s in segs)


def test_roc_auc():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert roc_auc([0.5, 0.5], [0, 1]) == 0.5  # a tie counts one half
    assert roc_auc([0.2, 0.9], [1, 1]) is None  # one class: undefined


def test_key_changes_with_the_recipe():
    assert R.PRMRecipeConfig().key() == R.PRMRecipeConfig().key()
    assert dataclasses.replace(TINY, seed=1).key() != TINY.key() != R.PRMRecipeConfig().key()


def test_the_grown_backbone_computes_the_policys_hidden_states(tok):
    """grow_from_policy: the PRM (twice as wide, as deep) starts as the policy in its leading
    dimensions, so fine-tuning starts from what the policy computes."""
    import torch
    from transformers import AutoModelForCausalLM

    from prpo_openrlhf.local.warmup import shipped_policy
    from prpo_openrlhf.prm.model import Qwen2ProcessRewardModel

    policy_path = shipped_policy(R.PRMRecipeConfig().policy)[0]
    policy = AutoModelForCausalLM.from_pretrained(policy_path, dtype=torch.float32).eval()
    cfg = R.PRMRecipeConfig()
    prm = Qwen2ProcessRewardModel(R.prm_config(cfg, tok)).float().eval()
    R.grow_from_policy(prm, policy)
    ids = torch.tensor([tok.encode("Compute (3*4)+5.\n3*4=12\n12+5=17\n", add_special_tokens=False)])
    with torch.no_grad():
        want = policy.model(input_ids=ids).last_hidden_state
        got = prm.model(input_ids=ids).last_hidden_state
    h0 = policy.config.hidden_size
    assert cfg.hidden_size == 2 * h0 and 3.5 < R.n_params(prm) / R.n_params(policy) < 4.5
    torch.testing.assert_close(got[..., :h0], want, atol=1e-4, rtol=1e-4)
    assert got[..., h0:].abs().max() < 1e-6
    with pytest.raises(ValueError, match="cannot grow"):
        R.grow_from_policy(Qwen2ProcessRewardModel(R.prm_config(TINY, tok)), policy)


def test_tiny_build_is_deterministic_and_reported(tiny_builds):
    (p1, i1), (p2, i2) = tiny_builds
    assert i1["weights_sha256"] == i2["weights_sha256"] == R.weights_sha256(p2)
    assert i1["key"] == TINY.key() and i1["config"]["steps"] == TINY.steps and i1["code_version"]
    assert i1["train_seconds"] > 0 and i1["parameters"] > 0
    for name in ("line", f"entropy_k{TINY.eval_k}_gap{TINY.eval_min_gap}", "uniform_k5_gap10", "random_k5_gap10"):
        assert i1["heldout"][name]["segments"] > 0
    assert json.loads((Path(p1) / "prm.json").read_text())["weights_sha256"] == i1["weights_sha256"]


def test_checkpoint_layout_and_hf_scores(tiny_builds):
    from safetensors import safe_open

    from prpo_openrlhf.prm import PRMScorer

    path = Path(tiny_builds[0][0])
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForProcessRewardModel"] and len(config["id2label"]) == 2
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert {"score.0.weight", "score.0.bias", "score.2.weight", "model.embed_tokens.weight"} <= keys
    assert all(k.startswith(("model.", "score.")) for k in keys)
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} <= {p.name for p in path.iterdir()}
    scorer = PRMScorer(str(path), "hf", device="cpu")
    segments = [["7+5=12\n", "12*3=36\n", "36-4=32\n", "\\boxed{32}"], ["7+5=1", "3\n"]]
    scores = scorer.score([PROBLEM, PROBLEM], segments)
    assert [len(s) for s in scores] == [4, 2]
    assert all(0.0 <= x <= 1.0 for row in scores for x in row)


def test_training_loss_reads_the_scores_the_scorer_gives(tok, tiny_builds):
    """The prefix-shared training forward computes what PRMScorer's hf backend reads."""
    import torch

    from prpo_openrlhf.local.prm_data import encode
    from prpo_openrlhf.prm import PRMScorer
    from prpo_openrlhf.prm.inputs import PRMInputBuilder
    from prpo_openrlhf.prm.model import load_prm

    path = tiny_builds[0][0]
    builder = PRMInputBuilder(tok, max_length=TINY.max_position_embeddings)
    segs = [["7+5=12\n", "12*3=36\n", "36-4=32\n", "\\boxed{32}"], ["7+5=1", "3\n12*3=39\n"]]
    labels = [[1, 1, 1, 1], [1, 0]]
    examples = [encode(builder, PROBLEM, s, lb) for s, lb in zip(segs, labels)]
    model = load_prm(path, dtype="fp32")
    with torch.no_grad():
        loss = R.batch_loss(model, examples, tok.pad_token_id, builder.tag_id).item()
    scores = PRMScorer(path, "hf", device="cpu").score([PROBLEM] * 2, segs)
    p = [s if v else 1 - s for row, lab in zip(scores, labels) for s, v in zip(row, lab)]
    assert loss == pytest.approx(-sum(math.log(x) for x in p) / len(p), abs=1e-5)


def test_rebuild_reports_a_match_and_a_mismatch(tiny_builds, tmp_path):
    path, info = tiny_builds[0]
    shipped = tmp_path / "shipped"
    R.ship_prm(path, TINY, shipped, log=lambda *_: None)
    found = R.shipped_prm(TINY, shipped)
    assert found is not None and found[1]["weights_sha256"] == info["weights_sha256"]
    report = R.rebuild_prm(TINY, root=tmp_path / "cache", shipped_root=shipped, progress=False, log=lambda *_: None)
    assert report["bitwise"] is True and report["weights_sha256"] == info["weights_sha256"]
    other = json.loads((shipped / f"prm-{TINY.key()}" / "prm.json").read_text())
    other["weights_sha256"] = "0" * 64
    (shipped / f"prm-{TINY.key()}" / "prm.json").write_text(json.dumps(other))
    report = R.rebuild_prm(TINY, root=tmp_path / "cache", shipped_root=shipped, progress=False, log=lambda *_: None)
    assert report["bitwise"] is False
    with pytest.raises(ValueError):  # built for another recipe
        R.ship_prm(path, dataclasses.replace(TINY, seed=5), shipped, log=lambda *_: None)


def test_matching_recipe_uses_the_shipped_prm_without_training(tiny_builds, tmp_path, monkeypatch):
    path, _ = tiny_builds[0]
    R.ship_prm(path, TINY, tmp_path / "shipped", log=lambda *_: None)
    monkeypatch.setattr(R, "SHIPPED_ROOT", tmp_path / "shipped")
    monkeypatch.setattr(R, "_build", lambda *a, **k: pytest.fail("the PRM was trained"))
    got, info = R.learned_prm(TINY, root=tmp_path / "empty", log=lambda *_: None)
    assert Path(got) == tmp_path / "shipped" / f"prm-{TINY.key()}" and not (tmp_path / "empty").exists()


# ---- the shipped PRM ------------------------------------------------------------------------

def _shipped():
    found = R.shipped_prm(R.PRMRecipeConfig())
    if found is None:
        pytest.fail(f"no PRM shipped for the default recipe {R.PRMRecipeConfig().key()} in {R.SHIPPED_ROOT}")
    return found


def test_the_package_ships_the_default_prm():
    path, info = _shipped()
    assert info["key"] == R.PRMRecipeConfig().key() and info["weights_sha256"] == R.weights_sha256(path)
    assert info["heldout"]["line"]["auc"] >= 0.65  # measured 0.69-0.70 (docs/local.md)
    assert [p.name for p in R.SHIPPED_ROOT.iterdir() if p.name.startswith("prm-")] == [Path(path).name]


def test_shipped_prm_line_end_auc_on_32_heldout_problems():
    from prpo_openrlhf.local.prm_data import evaluate
    from prpo_openrlhf.local.warmup import shipped_policy

    path, _ = _shipped()
    cfg = dataclasses.replace(R.PRMRecipeConfig(), eval_problems=32)
    report = evaluate(path, cfg, shipped_policy(cfg.policy)[0], splits=[], log=lambda *_: None)
    assert report["line"]["auc"] >= 0.6 and report["line"]["segments"] > 100  # chance: 0.5


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM")
def test_shipped_prm_loads_in_vllm_pooling_and_agrees_with_hf():
    import torch

    from prpo_openrlhf.prm import PRMScorer
    from prpo_openrlhf.vllm_cpu import cpu_engine_kwargs, in_process_engine_env

    path, _ = _shipped()
    segments = [["7+5=12\n", "12*3=36\n", "36-4=32\n", "\\boxed{32}"], ["7+5=12\n", "12*3=35\n", "35-4=31\n"],
                ["7+5=1", "2\n12*3=3", "6\n36-4=32\n\\boxed{32}"]]
    problems = [PROBLEM] * len(segments)
    ref = PRMScorer(path, "hf", device="cpu").score(problems, segments)
    in_process_engine_env()
    scorer = PRMScorer(path, "vllm", engine_kwargs=cpu_engine_kwargs(max_model_len=512))
    try:
        got = scorer.score(problems, segments)
    finally:
        scorer.close()
    for a, b in zip(got, ref):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-3, rtol=0)
