"""PRMScorer, vllm backend (vLLM CPU pooling runner): the same scores as the hf backend."""
import pytest
import torch

from prpo_openrlhf.prm import PRMScorer

from .reference import PROBLEMS, SEGMENTS

MAX_LEN = 512


@pytest.fixture(scope="module")
def vllm_scorer(tiny_prm_path):
    from prpo_openrlhf.vllm_cpu import cpu_engine_kwargs, in_process_engine_env

    in_process_engine_env()
    scorer = PRMScorer(tiny_prm_path, "vllm",
                       engine_kwargs=cpu_engine_kwargs(max_model_len=MAX_LEN))
    yield scorer
    scorer.close()


@pytest.fixture(scope="module")
def hf_512(tiny_prm_path):
    return PRMScorer(tiny_prm_path, "hf", device="cpu", max_length=MAX_LEN)


def _assert_close(a, b, atol=1e-4):
    assert [len(x) for x in a] == [len(x) for x in b]
    for x, y in zip(a, b):
        torch.testing.assert_close(torch.tensor(x), torch.tensor(y), atol=atol, rtol=0)


def test_vllm_equals_hf_on_a_mixed_batch(vllm_scorer, hf_512):
    assert vllm_scorer.max_length == MAX_LEN and vllm_scorer.tag_id == hf_512.tag_id
    got, stats = vllm_scorer.score_with_stats(PROBLEMS, SEGMENTS)
    _assert_close(got, hf_512.score(PROBLEMS, SEGMENTS))
    assert stats.tokens == stats.padded_tokens > 0  # no padding in vLLM


def test_vllm_over_long_policy_matches_hf(vllm_scorer, hf_512):
    problems = ["Long?", "Tag <extra_0> in the problem", "y" * 600]
    segments = [["a step. " * 20] * 5, ["x<extra_0>", "done"], ["s"]]
    got, stats = vllm_scorer.score_with_stats(problems, segments)
    ref, ref_stats = hf_512.score_with_stats(problems, segments)
    _assert_close(got, ref)
    assert got[0][-1] == 0.5 and got[2] == [0.5]
    for name in ("filled_segments", "truncated_indices", "stripped_tags", "tokens"):
        assert getattr(stats, name) == getattr(ref_stats, name)
    assert stats.stripped_tags == 2
