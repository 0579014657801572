"""token_entropy / logits_entropy against a float64 reference and OpenRLHF's compute_entropy."""
import pytest
import torch
from openrlhf.models.utils import compute_entropy

from prpo_openrlhf.rollout import entropy as ent
from prpo_openrlhf.rollout._vllm_worker_hooks import StepEntropies
from tests.rollout.reference import reference_entropy


def _logits(seed, rows=7, vocab=1000, scale=4.0, masked=0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=g) * scale
    logits[torch.rand(rows, vocab, generator=g) < masked] = float("-inf")
    return logits


def test_hand_worked_cases():
    uniform = torch.zeros(2, 4)
    torch.testing.assert_close(ent.token_entropy(uniform), torch.full((2,), torch.log(torch.tensor(4.0)).item()))
    one_hot = torch.tensor([[0.0, float("-inf"), float("-inf")]])  # only one token allowed
    assert ent.token_entropy(one_hot).item() == pytest.approx(0.0, abs=1e-7)
    two = torch.tensor([[0.0, 0.0, float("-inf")]])  # two allowed tokens: log 2
    assert ent.token_entropy(two).item() == pytest.approx(0.6931472, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("compiled", ["0", "1"])
def test_matches_float64_reference_with_masks_and_temperature(seed, compiled, monkeypatch):
    monkeypatch.setenv(ent.COMPILE_ENV, compiled)
    logits = _logits(seed)
    temperature = torch.linspace(0.3, 1.5, logits.shape[0])
    got = ent.token_entropy(logits, temperature)
    ref = reference_entropy(logits / temperature[:, None])
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), ref, atol=2e-5, rtol=0)
    torch.testing.assert_close(ent.token_entropy(logits).double(), reference_entropy(logits), atol=2e-5, rtol=0)


def test_low_precision_logits_are_computed_in_fp32():
    logits = _logits(3, masked=0.0)
    got = ent.token_entropy(logits.bfloat16())
    torch.testing.assert_close(got.double(), reference_entropy(logits.bfloat16().float()), atol=2e-5, rtol=0)


def test_empty_batch():
    assert ent.token_entropy(torch.empty(0, 50)).shape == (0,)


@pytest.mark.parametrize("seed", [0, 1])
def test_logits_entropy_is_openrlhf_compute_entropy(seed):
    logits = _logits(seed, masked=0.0).reshape(1, 7, 1000)
    for temperature in (1.0, 0.6):
        ours = ent.logits_entropy(logits, temperature)
        theirs = compute_entropy(logits / temperature)
        assert ours.shape == (1, 7)
        torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=0)


def test_step_entropies_map_rows_to_requests():
    step = StepEntropies([0, 2], torch.tensor([1.5, 2.5]))
    assert step.by_request(["a", "b", "c"]) == {"a": [1.5], "c": [2.5]}
    named = StepEntropies([1], torch.tensor([0.25]), req_ids=["x"])
    assert named.by_request(["ignored", "also"]) == {"x": [0.25]}


def test_a_failed_compile_falls_back_to_eager(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setenv(ent.COMPILE_ENV, "1")
    monkeypatch.setattr(ent, "_compiled", None)
    monkeypatch.setattr(ent, "_compile_failed", False)
    monkeypatch.setattr(torch, "compile", broken)
    logits = _logits(4)
    torch.testing.assert_close(ent.token_entropy(logits).double(), reference_entropy(logits), atol=2e-5, rtol=0)
    assert ent._compile_failed
