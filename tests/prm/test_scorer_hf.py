"""PRMScorer, hf backend, on the tiny PRM: exact agreement with a hand-written forward."""
import json
import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from prpo_openrlhf.prm import DEFAULT_SYSTEM_PROMPT, PRMScoreError, PRMScorer

from .reference import PROBLEMS, SEGMENTS, model_card_ids, reference_step_scores


def _close(a, b, atol=1e-5):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(torch.tensor(x, dtype=torch.float64),
                                   torch.tensor(y, dtype=torch.float64), atol=atol, rtol=0)


def test_scores_equal_a_hand_written_forward(hf_scorer, tiny_prm_path):
    tok = hf_scorer.inputs.tokenizer
    got = hf_scorer.score(PROBLEMS, SEGMENTS)
    for problem, segs, scores in zip(PROBLEMS, SEGMENTS, got):
        ids = model_card_ids(tok, problem, segs, DEFAULT_SYSTEM_PROMPT)
        ref = reference_step_scores(tiny_prm_path, ids, hf_scorer.tag_id)
        assert len(scores) == len(segs)
        _close(scores, ref.tolist())
        assert all(0.0 <= s <= 1.0 for s in scores)


def test_one_pass_equals_scoring_every_prefix_on_its_own(hf_scorer):
    one_pass = hf_scorer.score(PROBLEMS, SEGMENTS)
    probs, prefixes, where = [], [], []
    for i, (p, segs) in enumerate(zip(PROBLEMS, SEGMENTS)):
        for j in range(len(segs)):
            probs.append(p)
            prefixes.append(segs[: j + 1])
            where.append((i, j))
    separate = hf_scorer.score(probs, prefixes)
    for (i, j), scores in zip(where, separate):
        assert scores[:-1] == pytest.approx(one_pass[i][:j], abs=1e-5)
        assert scores[-1] == pytest.approx(one_pass[i][j], abs=1e-5)


def test_responses_of_different_lengths_in_one_batch(hf_scorer, monkeypatch):
    together, stats = hf_scorer.score_with_stats(PROBLEMS, SEGMENTS)
    assert stats.batches == 1 and stats.padded_tokens > stats.tokens
    alone = [hf_scorer.score([p], [s])[0] for p, s in zip(PROBLEMS, SEGMENTS)]
    # A small budget splits the same batch into several forwards of similar lengths.
    monkeypatch.setattr(hf_scorer.backend, "max_tokens_per_batch", 200)
    split, split_stats = hf_scorer.score_with_stats(PROBLEMS, SEGMENTS)
    assert split_stats.batches > 1
    assert split_stats.padded_tokens - split_stats.tokens < stats.padded_tokens - stats.tokens
    for a, b, c in zip(together, alone, split):
        _close(a, b)
        _close(a, c)
    assert (stats.responses, stats.segments, stats.scored_segments) == (4, 10, 10)


def test_empty_inputs_and_bad_shapes(hf_scorer):
    assert hf_scorer.score([], []) == []
    assert hf_scorer.score(["q", "r"], [[], ["a"]])[0] == []
    with pytest.raises(ValueError, match="2 problems but 1 segment lists"):
        hf_scorer.score(["a", "b"], [["x"]])
    with pytest.raises(TypeError, match=r"segments\[0\]\[1\] is int"):
        hf_scorer.score(["a"], [["x", 3]])


def test_over_long_segments_get_the_prior_mean_and_are_counted(
        hf_scorer, short_prm_path, caplog):
    short = PRMScorer(short_prm_path, "hf", device="cpu")
    assert short.max_length == 256  # read from max_position_embeddings
    segs = ["step one " * 8, "step two " * 8, "step three " * 12, "step four " * 10]
    problems = ["Long one?", "Short one?", "x" * 300]
    batch = [segs, ["fine"], ["never fits", "nor this"]]
    with caplog.at_level(logging.WARNING, logger="prpo_openrlhf.prm.scorer"):
        scores, stats = short.score_with_stats(problems, batch)
    full = hf_scorer.score(problems[:2], batch[:2])  # same weights, 2048-token limit
    kept = stats.scored_segments - len(batch[1])  # the short response is fully scored
    assert 0 < kept < len(segs)
    assert scores[0][:kept] == pytest.approx(full[0][:kept], abs=1e-5)
    assert scores[0][kept:] == [0.5] * (len(segs) - kept)
    assert scores[1] == pytest.approx(full[1], abs=1e-5)
    assert scores[2] == [0.5, 0.5]  # the problem alone is past the limit: nothing scored
    assert stats.truncated_responses == 2 and stats.truncated_indices == [0, 2]
    assert stats.filled_segments == len(segs) - kept + 2
    assert "2 of 3 responses exceed max_length=256" in caplog.text

    other = PRMScorer(short_prm_path, "hf", device="cpu", overlong_fill=0.25, max_length=200)
    assert other.score(problems[2:], batch[2:]) == [[0.25, 0.25]]
    with pytest.raises(ValueError, match="exceeds the PRM's position limit"):
        PRMScorer(short_prm_path, "hf", max_length=257)


def _copy_with(src, dst, edit):
    shutil.copytree(src, dst)
    sd = load_file(f"{src}/model.safetensors")
    edit(sd)
    save_file(sd, f"{dst}/model.safetensors", metadata={"format": "pt"})
    return str(dst)


def test_non_finite_scores_raise(tiny_prm_path, tmp_path):
    def poison(sd):
        sd["score.2.bias"] = torch.tensor([float("nan"), 0.0])

    path = _copy_with(tiny_prm_path, tmp_path / "nan_prm", poison)
    with pytest.raises(PRMScoreError, match="non-finite scores"):
        PRMScorer(path, "hf", device="cpu").score(["q"], [["a", "b"]])


def test_checkpoint_without_head_or_wrong_layout_is_refused(tiny_prm_path, tiny_lm_path,
                                                            tmp_path):
    def drop_head(sd):
        for k in [k for k in sd if k.startswith("score.")]:
            del sd[k]

    path = _copy_with(tiny_prm_path, tmp_path / "no_head", drop_head)
    with pytest.raises(ValueError, match="lacks 4 PRM weights"):
        PRMScorer(path, "hf", device="cpu")
    with pytest.raises(ValueError, match="Qwen2ForCausalLM"):
        PRMScorer(tiny_lm_path, "hf", device="cpu")


def test_config_pointing_at_remote_code_loads_without_it(hf_scorer, tiny_prm_path, tmp_path):
    """The released checkpoints name their own modeling code in auto_map; it is never run."""
    dst = tmp_path / "remote_code"
    shutil.copytree(tiny_prm_path, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "configuration_qwen2_rm.Qwen2RMConfig",
                       "AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel"}
    (dst / "config.json").write_text(json.dumps(cfg))  # the .py files do not exist
    scorer = PRMScorer(str(dst), "hf", device="cpu")
    assert scorer.score(PROBLEMS, SEGMENTS) == hf_scorer.score(PROBLEMS, SEGMENTS)


def test_sharded_checkpoint_loads_like_the_single_file(hf_scorer, tiny_prm_path, tmp_path):
    dst = tmp_path / "sharded"
    shutil.copytree(tiny_prm_path, dst)
    (dst / "model.safetensors").unlink()
    sd = load_file(f"{tiny_prm_path}/model.safetensors")
    names = sorted(sd)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    weight_map = {}
    for fname, keys in shards.items():
        save_file({k: sd[k] for k in keys}, str(dst / fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, fname))
    total = sum(t.numel() * t.element_size() for t in sd.values())
    (dst / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    sharded = PRMScorer(str(dst), "hf", device="cpu")
    assert sharded.score(PROBLEMS, SEGMENTS) == hf_scorer.score(PROBLEMS, SEGMENTS)


def test_bf16_backbone_with_fp32_head(hf_scorer, tiny_prm_path):
    bf16 = PRMScorer(tiny_prm_path, "hf", dtype="bf16", device="cpu")
    model = bf16.backend.model
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert model.score[0].weight.dtype == torch.float32
    for a, b in zip(bf16.score(PROBLEMS, SEGMENTS), hf_scorer.score(PROBLEMS, SEGMENTS)):
        _close(a, b, atol=3e-2)
