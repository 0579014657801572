"""PRM inputs (model-card ids, tag policy, position limit) and the batching helpers."""
import random

import pytest

from prpo_openrlhf.prm.backends import fixed_size_batches, pack_by_token_budget
from prpo_openrlhf.prm.inputs import (DEFAULT_SYSTEM_PROMPT, PRMInputBuilder, step_tag_id,
                                      strip_tag)
from prpo_openrlhf.prm.ray_group import split_shards

from .reference import PROBLEMS, SEGMENTS, model_card_ids


@pytest.fixture(scope="module")
def tokenizer(tiny_prm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_prm_path)


def test_ids_are_the_model_cards_up_to_the_last_tag(tokenizer):
    builder = PRMInputBuilder(tokenizer, max_length=2048)
    for problem, segs in zip(PROBLEMS, SEGMENTS):
        ref = model_card_ids(tokenizer, problem, segs, DEFAULT_SYSTEM_PROMPT)
        enc = builder.encode(problem, segs)
        last_tag = max(i for i, t in enumerate(ref) if t == builder.tag_id)
        assert enc.ids == ref[: last_tag + 1]
        assert (enc.n_segments, enc.n_scored, enc.full_length) == (len(segs), len(segs), len(ref))
    # The chat template really is in there: system prompt, user turn, assistant turn.
    text = tokenizer.decode(builder.encode("Q?", ["a", "b"]).ids)
    assert text == ("<|im_start|>system\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\n"
                    "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\na<extra_0>b<extra_0>")


def test_tags_inside_text_are_stripped_and_counted(tokenizer):
    builder = PRMInputBuilder(tokenizer, max_length=2048)
    enc = builder.encode("x<extra_0>y", ["a<extra_0>b", "c<extra<extra_0>_0>d"])
    # One tag per segment survives; the nested one cannot reassemble into a tag.
    assert sum(t == builder.tag_id for t in enc.ids) == 2
    assert enc.stripped_tags == 4
    assert strip_tag("<extra<extra_0>_0>", "<extra_0>") == ("", 2)
    assert tokenizer.decode(enc.ids).endswith("assistant\nab<extra_0>cd<extra_0>")


def test_position_limit_keeps_the_segments_whose_tag_fits(tokenizer):
    builder = PRMInputBuilder(tokenizer, max_length=4096)
    full = builder.encode("p", ["a" * 50, "b" * 50, "c" * 50])
    tags = [i for i, t in enumerate(full.ids) if t == builder.tag_id]
    cut = PRMInputBuilder(tokenizer, max_length=tags[1] + 1).encode(
        "p", ["a" * 50, "b" * 50, "c" * 50])
    assert (cut.n_scored, cut.truncated) == (2, True)
    assert cut.ids == full.ids[: tags[1] + 1]
    none = PRMInputBuilder(tokenizer, max_length=10).encode("p", ["a"])
    assert (none.ids, none.n_scored, none.n_segments) == ([], 0, 1)


def test_missing_step_tag_and_template_are_clear_errors(tokenizer):
    with pytest.raises(ValueError, match="no single token for the step tag '<extra_9>'"):
        step_tag_id(tokenizer, "<extra_9>")
    with pytest.raises(ValueError, match="system prompt contains the step tag"):
        PRMInputBuilder(tokenizer, max_length=64, system_prompt="a <extra_0> b")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_token_budget_batches_respect_the_budget(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 700) for _ in range(60)]
    batches = pack_by_token_budget(lengths, max_tokens=2048, max_batch_size=8)
    assert sorted(i for b in batches for i in b) == list(range(60))
    for b in batches:
        width = max(lengths[i] for i in b)
        assert len(b) <= 8 and (len(b) * width <= 2048 or len(b) == 1)
        assert lengths[b[0]] == width  # longest first: it sets the padded width
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    naive = sum(len(b) * max(lengths[i] for i in b) for b in fixed_size_batches(60, 8))
    assert padded < naive
    assert pack_by_token_budget([5000, 3], 100, 4) == [[0], [1]]  # over-budget: its own batch


def test_split_shards_is_contiguous_and_balanced():
    assert split_shards([], 3) == []
    assert split_shards([1, 1, 1, 1], 2) == [(0, 2), (2, 4)]
    assert split_shards([5], 4) == [(0, 1)]
    shards = split_shards([10, 1, 1, 1, 1, 10, 1, 1], 3)
    assert [a for a, _ in shards][0] == 0 and shards[-1][1] == 8
    assert all(b == c for (_, b), (c, _) in zip(shards, shards[1:]))
